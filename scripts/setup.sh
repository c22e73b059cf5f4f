#!/usr/bin/env bash
# Install what edgecelery needs on a fresh Debian machine: Debian packages when root
# (redis-server; rabbitmq-server, the other broker, which the tests start privately with TLS
# and client-certificate logins; postgresql, which the tests start privately to prove the
# multi-machine database; chromium and its driver, which the job-browser tests drive headless;
# sshd), then a virtualenv in .venv with the project. As another user it stops only when the
# demo's own needs (redis-server, setsid) are missing, and names what the tests would need
# besides.
# `--demo` (scripts/demo.sh): the demo's needs only, even as root.
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
demo_only=0
[ "${1:-}" = "--demo" ] && demo_only=1

# The demo and the service need only these two; the rest serve the tests.
need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v setsid >/dev/null 2>&1 || need_apt+=(util-linux)
for_tests=()
# Debian keeps the node's own scripts in /usr/lib/rabbitmq/bin (edgeceleryapp/rabbitmq_server.py).
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || for_tests+=(rabbitmq-server)
[ -x /usr/sbin/sshd ] || for_tests+=(openssh-server)
# initdb and pg_ctl are not on PATH: Debian keeps them in /usr/lib/postgresql/<version>/bin.
compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null || for_tests+=(postgresql)
command -v chromium >/dev/null 2>&1 || for_tests+=(chromium)
command -v chromedriver >/dev/null 2>&1 || for_tests+=(chromium-driver)
if [ "$demo_only" = 1 ]; then
  for_tests=()
fi
if [ "$(id -u)" = 0 ]; then
  missing=("${need_apt[@]}" "${for_tests[@]}")
  if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
else
  if [ ${#need_apt[@]} -gt 0 ]; then
    echo "missing: ${need_apt[*]}; install them (as root: apt-get install ${need_apt[*]})" >&2
    exit 1
  fi
  if [ ${#for_tests[@]} -gt 0 ]; then
    echo "note: the tests also need ${for_tests[*]} (as root: apt-get install" \
      "${for_tests[*]}); the demo and the service do not" >&2
  fi
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi

#!/usr/bin/env bash
# A real one-host Grid Engine (Son of Grid Engine 8.1.9, Debian 12's gridengine packages) for
# edgecelery's tests.
#
#   scripts/gridengine.sh start   install (only what is missing), start sge_qmaster and
#                                 sge_execd, configure one queue (all.q) on this host; the
#                                 last line of stdout is `export SGE_ROOT=... SGE_CELL=...`
#                                 (so: eval "$(scripts/gridengine.sh start)").
#                                 Idempotent: when everything already runs it only checks.
#   scripts/gridengine.sh stop    stop both daemons.
#   scripts/gridengine.sh status  exit 0 when the queue accepts work.
#
# The Debian packages create the cell (SGE_ROOT=/var/lib/gridengine, SGE_CELL=default) at
# installation; this script then makes it usable on one host:
# - host names: every name of 127.0.0.1 is an alias of this host (common/host_aliases), since
#   Grid Engine refuses a client whose address resolves to another name than it calls itself;
# - root may submit (min_uid/min_gid 0: the tests run as root);
# - the scheduler runs every second and accounting is flushed every second, so a job starts
#   and its qacct record appears at once (defaults: 15 s each);
# - all.q has no load thresholds: a busy test machine must not put the queue in alarm.
# The daemons use Grid Engine's ports (6444, 6445 from /etc/services); all traffic is loopback.
set -euo pipefail

export SGE_ROOT=/var/lib/gridengine
export SGE_CELL=default
COMMON=$SGE_ROOT/$SGE_CELL/common
TIMEOUT=${EDGECELERY_SGE_TIMEOUT:-60}
PACKAGES=(gridengine-master gridengine-exec gridengine-client)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

log() { printf 'gridengine.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = 'install ok installed' ]; }

install_packages() {
  local missing=() p created_policy=0 rc=0
  for p in "${PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  # The packages' debconf questions: let them create the cell, with this host as master.
  debconf-set-selections <<EOF
gridengine-common shared/gridengineconfig boolean true
gridengine-common shared/gridenginecell string $SGE_CELL
gridengine-common shared/gridenginesqmaster string $(hostname)
gridengine-client shared/gridengineconfig boolean true
gridengine-master shared/gridengineconfig boolean true
EOF
  # Keep the maintainer scripts from starting the daemons: this script starts them.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    created_policy=1
  fi
  {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq &&
      apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "${missing[@]}"
  } >"$WORK/apt.log" 2>&1 || rc=$?
  [ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  if [ "$rc" != 0 ]; then
    tail -n 30 "$WORK/apt.log" >&2
    die "apt-get install ${missing[*]} failed"
  fi
}

now() { date +%s; }

# Poll (every 0.2 s) until the command succeeds, failing after $TIMEOUT seconds.
wait_for() {
  local what=$1 end
  shift
  end=$(($(now) + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    [ "$(now)" -lt "$end" ] || die "timed out after ${TIMEOUT}s waiting for $what"
    sleep 0.2
  done
}

alive() { pgrep -x "$1" >/dev/null; }

# Names this host answers to on loopback, the host's own name first.
loopback_names() {
  local host=$1
  printf '%s' "$host"
  awk -v h="$host" '$1 ~ /^127\./ { for (i = 2; i <= NF; i++) if ($i != h) printf " %s", $i }' /etc/hosts
  echo
}

write_host_names() {
  local host=$1 changed=0
  if [ "$(cat "$COMMON/act_qmaster" 2>/dev/null)" != "$host" ]; then
    echo "$host" >"$COMMON/act_qmaster"
    changed=1
  fi
  if [ "$(cat "$COMMON/host_aliases" 2>/dev/null)" != "$(loopback_names "$host")" ]; then
    loopback_names "$host" >"$COMMON/host_aliases"
    changed=1
  fi
  if [ "$changed" = 1 ] && alive sge_qmaster; then
    log "host names changed; restarting the daemons"
    cmd_stop
  fi
}

# qconf_edit FLAG NAME SED...: change an object through qconf's editor interface, which is
# the only way Grid Engine offers to modify a configuration in place. qconf tells an edit by
# the file's modification time, in whole seconds, so the editor moves it a second on.
qconf_edit() {
  local flag=$1 name=$2 editor=$WORK/editor
  shift 2
  {
    echo '#!/bin/sh'
    printf 'sed -i'
    printf " -e '%s'" "$@"
    echo ' "$1"'
    echo 'touch -d "@$(($(date +%s) + 1))" "$1"'
  } >"$editor"
  chmod +x "$editor"
  EDITOR=$editor qconf "$flag" $name >/dev/null
}

configure() {
  local host=$1
  qconf -ss 2>/dev/null | grep -qx "$host" || qconf -as "$host" >/dev/null
  if ! qconf -se "$host" >/dev/null 2>&1; then
    printf '%s\n' "hostname $host" "load_scaling NONE" "complex_values NONE" \
      "user_lists NONE" "xuser_lists NONE" "projects NONE" "xprojects NONE" \
      "usage_scaling NONE" "report_variables NONE" >"$WORK/exechost"
    qconf -Ae "$WORK/exechost" >/dev/null
  fi
  if ! qconf -sconf global | grep -Eq '^min_uid +0$'; then
    qconf_edit -mconf global 's/^min_uid .*/min_uid 0/' 's/^min_gid .*/min_gid 0/'
  fi
  if ! qconf -sconf global | grep -q 'flush_time=00:00:01'; then
    qconf_edit -mconf global 's/flush_time=[0-9:]*/flush_time=00:00:01/'
  fi
  if ! qconf -ssconf | grep -Eq '^schedule_interval +0:0:1$'; then
    qconf_edit -msconf "" 's/^schedule_interval .*/schedule_interval 0:0:1/' \
      's/^flush_submit_sec .*/flush_submit_sec 1/' 's/^flush_finish_sec .*/flush_finish_sec 1/' \
      's/^job_load_adjustments .*/job_load_adjustments NONE/'
  fi
  if ! qconf -sq all.q >/dev/null 2>&1; then
    qconf_edit -aq all.q "s/^hostlist .*/hostlist $host/" "s/^slots .*/slots $(nproc)/" \
      's/^pe_list .*/pe_list NONE/' 's/^load_thresholds .*/load_thresholds NONE/'
  fi
  if ! qconf -sq all.q | grep -Eq '^load_thresholds +NONE$'; then
    qconf_edit -mq all.q 's/^load_thresholds .*/load_thresholds NONE/'
  fi
}

queue_ready() {
  local states
  states=$(qstat -f -q all.q 2>/dev/null | awk '/^all\.q@/ { print $6; found = 1 } END { exit !found }') ||
    return 1
  [ -z "$states" ]
}

cmd_start() {
  [ "$(id -u)" = 0 ] || die "start must run as root (it installs packages and starts daemons)"
  install_packages
  local host
  host=$(hostname)
  write_host_names "$host"
  if ! alive sge_qmaster; then
    log "starting sge_qmaster"
    /usr/sbin/sge_qmaster </dev/null >/dev/null 2>&1 || die "sge_qmaster failed to start"
  fi
  wait_for "sge_qmaster" qconf -sh
  configure "$host"
  if ! alive sge_execd; then
    log "starting sge_execd"
    /usr/sbin/sge_execd </dev/null >/dev/null 2>&1 || die "sge_execd failed to start"
  fi
  wait_for "the all.q queue on $host" queue_ready
  echo "export SGE_ROOT=$SGE_ROOT SGE_CELL=$SGE_CELL"
}

cmd_stop() {
  local name
  for name in sge_execd sge_qmaster; do
    alive "$name" || continue
    log "stopping $name"
    pkill -x "$name" || true
    wait_for "$name to stop" bash -c "! pgrep -x $name"
  done
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) queue_ready ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac

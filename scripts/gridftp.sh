#!/usr/bin/env bash
# A real GridFTP server on loopback for edgecelery's gsiftp:// and ftp:// tests and demos.
#
#   scripts/gridftp.sh start   install (only what is missing) Debian's globus-gridftp-server,
#                              globus-url-copy, grid-proxy-init and gfal2 (rename/checksum
#                              queries); make a throw-away CA, host and user certificates
#                              and a user proxy; start globus-gridftp-server on 127.0.0.1;
#                              wait until an authenticated listing works. The last line of
#                              stdout is `export X509_CERT_DIR=... X509_USER_PROXY=...`
#                              (so: eval "$(scripts/gridftp.sh start)"). Idempotent: when
#                              the server already runs with the same configuration it
#                              only checks it.
#   scripts/gridftp.sh stop    stop the server this script started (by its pid file).
#   scripts/gridftp.sh status  exit 0 when the server answers an authenticated listing.
#
# Authentication is GSI, the real thing: the CA made here (ca/) signs a host certificate
# (CN=localhost, subjectAltName localhost and 127.0.0.1) and a user certificate
# (/O=edgecelery/CN=edgecelery test user); grid-proxy-init makes a proxy from the latter,
# and the grid-mapfile maps that DN to root (the server runs as root with allow_root, so
# clients may name any absolute path). Clients trust only certificates/ (X509_CERT_DIR).
# Plain ftp:// is served by the same server as anonymous FTP mapped to an unprivileged
# account ($EDGECELERY_GRIDFTP_ANONYMOUS, default nobody; empty disables it): it reaches
# only what that account may read or write.
#
# Everything lives in $EDGECELERY_GRIDFTP_DIR (default /var/lib/edgecelery-gridftp):
# gridftp.conf (the only configuration the server reads; /etc/gridftp.conf is not used),
# ca/, certificates/, host and user credentials, proxy.pem, grid-mapfile, log/ (server
# log, transfer log with one line per transfer, apt log) and run/ (pid file).
#
# Settings (environment):
#   EDGECELERY_GRIDFTP_DIR         state directory (default /var/lib/edgecelery-gridftp)
#   EDGECELERY_GRIDFTP_PORT        control port on 127.0.0.1 (default 16811)
#   EDGECELERY_GRIDFTP_DATA_PORTS  the server's data-channel ports "lo,hi" (default P+89,P+588:
#                                  500 ports, as each passive data connection holds its port
#                                  in TIME_WAIT for a minute after it closes)
#   EDGECELERY_GRIDFTP_ANONYMOUS   account for anonymous ftp:// (default nobody; "" = off)
#   EDGECELERY_GRIDFTP_TIMEOUT     seconds to wait for the server (default 30)
set -euo pipefail

DIR=$(realpath -m "${EDGECELERY_GRIDFTP_DIR:-/var/lib/edgecelery-gridftp}")
PORT=${EDGECELERY_GRIDFTP_PORT:-16811}
case $PORT in '' | *[!0-9]*) echo "gridftp.sh: EDGECELERY_GRIDFTP_PORT must be a number" >&2; exit 2 ;; esac
DATA_PORTS=${EDGECELERY_GRIDFTP_DATA_PORTS:-$((PORT + 89)),$((PORT + 588))}
ANONYMOUS=${EDGECELERY_GRIDFTP_ANONYMOUS-nobody}
TIMEOUT=${EDGECELERY_GRIDFTP_TIMEOUT:-30}
CONF=$DIR/gridftp.conf
RUN=$DIR/run
LOG=$DIR/log
PIDFILE=$RUN/gridftp.pid
CERTS=$DIR/certificates
PROXY=$DIR/proxy.pem
USER_DN="/O=edgecelery/CN=edgecelery test user"
CA_DN="/O=edgecelery/CN=edgecelery test CA"
COMM=globus-gridftp- # the server's /proc/PID/comm (15 characters)

case $DATA_PORTS in [0-9]*,[0-9]*) ;; *) echo "gridftp.sh: EDGECELERY_GRIDFTP_DATA_PORTS must be lo,hi" >&2; exit 2 ;; esac

SCRIPT=gridftp.sh
# shellcheck source=scripts/daemon-lib.sh
. "$(dirname "$0")/daemon-lib.sh"

install_packages() {
  # The server; globus-url-copy; grid-proxy-init/-info; gfal2 for the plug-in's namespace
  # operations (rename, checksum, stat), which globus-url-copy cannot do.
  local pkgs=(globus-gridftp-server-progs globus-gass-copy-progs globus-proxy-utils
    python3-gfal2 gfal2-plugin-gridftp openssl) missing=() p created_policy=0 rc=0
  for p in "${pkgs[@]}"; do installed "$p" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  # Keep the package's init script from starting a system server on port 2811.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    created_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq &&
      apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "${missing[@]}"
  } >"$LOG/apt.log" 2>&1 || rc=$?
  if [ "$created_policy" = 1 ]; then
    rm -f /usr/sbin/policy-rc.d
    trap - EXIT
  fi
  if [ "$rc" != 0 ]; then
    tail -n 30 "$LOG/apt.log" >&2
    die "apt-get install ${missing[*]} failed (log: $LOG/apt.log)"
  fi
}

# issue NAME SUBJECT EXTENSIONS: a key and a certificate signed by the CA, valid a year.
issue() {
  local name=$1 subject=$2 ext=$3
  openssl req -new -newkey rsa:2048 -nodes -subj "$subject" \
    -keyout "$DIR/${name}key.pem" -out "$DIR/$name.csr" 2>/dev/null
  printf '%s\n' "$ext" >"$DIR/$name.ext"
  openssl x509 -req -in "$DIR/$name.csr" -CA "$DIR/ca/cacert.pem" -CAkey "$DIR/ca/cakey.pem" \
    -CAcreateserial -days 365 -sha256 -extfile "$DIR/$name.ext" \
    -out "$DIR/${name}cert.pem" 2>/dev/null
  chmod 0600 "$DIR/${name}key.pem"
  rm -f "$DIR/$name.csr" "$DIR/$name.ext"
}

valid_for_a_day() { openssl x509 -checkend 86400 -noout -in "$1" >/dev/null 2>&1; }

CREDS_CHANGED=0
ensure_credentials() {
  local hash
  if ! { valid_for_a_day "$DIR/ca/cacert.pem" && valid_for_a_day "$DIR/hostcert.pem" &&
    valid_for_a_day "$DIR/usercert.pem"; }; then
    log "making a throw-away CA, host and user certificates"
    rm -rf "$DIR/ca" "$CERTS" "$PROXY"
    install -d -m 0700 "$DIR/ca"
    install -d -m 0755 "$CERTS"
    openssl req -x509 -new -newkey rsa:2048 -nodes -days 730 -sha256 -subj "$CA_DN" \
      -addext 'basicConstraints=critical,CA:TRUE' \
      -addext 'keyUsage=critical,keyCertSign,cRLSign' \
      -keyout "$DIR/ca/cakey.pem" -out "$DIR/ca/cacert.pem" 2>/dev/null
    issue host /O=edgecelery/CN=localhost "subjectAltName=DNS:localhost,IP:127.0.0.1
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth"
    issue user "$USER_DN" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
    # X509_CERT_DIR: the CA under its subject hash, with the signing policy GSI checks.
    hash=$(openssl x509 -hash -noout -in "$DIR/ca/cacert.pem")
    cp "$DIR/ca/cacert.pem" "$CERTS/$hash.0"
    cat >"$CERTS/$hash.signing_policy" <<EOF
access_id_CA X509 '$CA_DN'
pos_rights globus CA:sign
cond_subjects globus '"/O=edgecelery/*"'
EOF
    CREDS_CHANGED=1
  fi
  printf '"%s" root\n' "$USER_DN" >"$DIR/grid-mapfile"
  # A proxy valid for 12 hours more at least (grid-proxy-init makes one for a week).
  if ! X509_CERT_DIR=$CERTS grid-proxy-info -file "$PROXY" -exists -valid 12:00 2>/dev/null; then
    log "making a user proxy"
    X509_CERT_DIR=$CERTS grid-proxy-init -q -cert "$DIR/usercert.pem" -key "$DIR/userkey.pem" \
      -out "$PROXY" -valid 168:00 </dev/null >/dev/null || die "grid-proxy-init failed"
  fi
}

CONF_CHANGED=0
write_config() {
  local anon=''
  if [ -n "$ANONYMOUS" ]; then
    id -u "$ANONYMOUS" >/dev/null 2>&1 || die "EDGECELERY_GRIDFTP_ANONYMOUS: no such user $ANONYMOUS"
    anon="allow_anonymous 1
anonymous_user $ANONYMOUS"
  fi
  # Lines starting with $ set the server's environment.
  if write_if_changed "$CONF" 0644 <<EOF; then CONF_CHANGED=1; fi
# Generated by edgecelery scripts/gridftp.sh; rewritten on every start.
port $PORT
control_interface 127.0.0.1
data_interface 127.0.0.1
ipc_interface 127.0.0.1
port_range $DATA_PORTS
allow_from 127.0.0.1
allow_root 1
$anon
detach 1
pidfile $PIDFILE
log_level ERROR,WARN,INFO
log_single $LOG/gridftp.log
log_transfer $LOG/transfer.log
\$GLOBUS_TCP_PORT_RANGE $DATA_PORTS
\$X509_CERT_DIR $CERTS
\$X509_USER_CERT $DIR/hostcert.pem
\$X509_USER_KEY $DIR/hostkey.pem
\$GRIDMAP $DIR/grid-mapfile
EOF
}


# An authenticated listing of the state directory: certificates, proxy, grid-mapfile and
# the server all work.
answers() {
  alive "$PIDFILE" "$COMM" || return 1
  env X509_CERT_DIR="$CERTS" X509_USER_PROXY="$PROXY" \
    timeout 10 globus-url-copy -list "gsiftp://127.0.0.1:$PORT$RUN/" >/dev/null 2>&1
}

stop_server() { stop_pidfile "$PIDFILE" "$COMM" globus-gridftp-server; }

cmd_start() {
  [ "$(id -u)" = 0 ] || die "start must run as root (it installs packages and starts a daemon)"
  install -d -m 0755 "$DIR" "$RUN" "$LOG"
  exec 9>"$RUN/start.lock"
  flock -w 600 9 || die "another gridftp.sh start holds $RUN/start.lock"
  install_packages
  ensure_credentials
  write_config
  if { [ "$CONF_CHANGED" = 1 ] || [ "$CREDS_CHANGED" = 1 ]; } && alive "$PIDFILE" "$COMM"; then
    log "configuration or credentials changed; restarting the server"
    stop_server
  fi
  if ! alive "$PIDFILE" "$COMM"; then
    port_in_use "$PORT" &&
      die "127.0.0.1:$PORT is already in use by another program; set EDGECELERY_GRIDFTP_PORT"
    log "starting globus-gridftp-server on 127.0.0.1:$PORT (data ports $DATA_PORTS)"
    rm -f "$PIDFILE"
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin globus-gridftp-server -c "$CONF" \
      </dev/null >>"$LOG/gridftp.out" 2>&1 9>&- || die "globus-gridftp-server failed to start"
  fi
  wait_for "globus-gridftp-server to answer" "$LOG/gridftp.log" answers
  exec 9>&-
  echo "export EDGECELERY_GRIDFTP_DIR=$DIR EDGECELERY_GRIDFTP_PORT=$PORT X509_CERT_DIR=$CERTS X509_USER_PROXY=$PROXY"
}

cmd_stop() {
  [ -d "$RUN" ] || return 0
  exec 9>"$RUN/start.lock"
  flock -w 600 9 || die "a gridftp.sh start holds $RUN/start.lock"
  stop_server
}

cmd_status() {
  [ -f "$CONF" ] || { log "not configured ($CONF missing)"; exit 1; }
  alive "$PIDFILE" "$COMM" || { log "globus-gridftp-server is not running"; exit 1; }
  if answers; then
    log "globus-gridftp-server answers on 127.0.0.1:$PORT"
    exit 0
  fi
  log "globus-gridftp-server does not answer on 127.0.0.1:$PORT (see $LOG/gridftp.log)"
  exit 1
}

dispatch "$@"

#!/usr/bin/env bash
# A real one-node Slurm cluster on loopback for edgecelery's tests and demos.
#
#   scripts/slurm.sh start   install (only what is missing) and start munged, MariaDB +
#                            slurmdbd (for sacct), slurmctld and slurmd; wait until the
#                            node is idle; the last line of stdout is
#                            `export SLURM_CONF=...` (so: eval "$(scripts/slurm.sh start)").
#                            Idempotent: when everything already runs it only checks.
#   scripts/slurm.sh stop    stop the daemons this script started (by their pid files).
#   scripts/slurm.sh status  exit 0 when the cluster answers sinfo.
#
# Everything lives in a project-owned directory, $EDGECELERY_SLURM_DIR
# (default /var/lib/edgecelery-slurm): slurm.conf, slurmdbd.conf, state, spool, the
# MariaDB data, logs (log/) and pid files (run/). /etc/slurm is not used; clients and
# daemons find the config through SLURM_CONF. Only munged is the system one
# (/etc/munge/munge.key, /run/munge), as every Slurm command talks to its socket.
#
# Settings (environment):
#   EDGECELERY_SLURM_DIR         state directory (default /var/lib/edgecelery-slurm)
#   EDGECELERY_SLURM_PORT        slurmctld port P (default 16817); slurmd uses P+1,
#                                slurmdbd P+2, MariaDB P+3, all on 127.0.0.1
#   EDGECELERY_SLURM_ACCOUNTING  slurmdbd (default): MariaDB + slurmdbd, `sacct` works;
#                                none: no database, finished jobs only through
#                                `sacct -c` (jobcomp/filetxt) and `scontrol show job`
#   EDGECELERY_SLURM_TIMEOUT     seconds to wait for each daemon (default 60)
#
# Finished jobs stay visible to squeue -t all / scontrol show job for an hour
# (MinJobAge=3600); every finished job is also appended to log/jobcomp.log, which
# `sacct -c` reads, whatever the accounting mode.
set -euo pipefail

DIR=$(realpath -m "${EDGECELERY_SLURM_DIR:-/var/lib/edgecelery-slurm}")
PORT=${EDGECELERY_SLURM_PORT:-16817}
ACCOUNTING=${EDGECELERY_SLURM_ACCOUNTING:-slurmdbd}
TIMEOUT=${EDGECELERY_SLURM_TIMEOUT:-60}
CONF=$DIR/slurm.conf
DBD_CONF=$DIR/slurmdbd.conf
RUN=$DIR/run
LOG=$DIR/log
CTLD_PORT=$PORT
SLURMD_PORT=$((PORT + 1))
DBD_PORT=$((PORT + 2))
DB_PORT=$((PORT + 3))
DB_SOCK=$RUN/mariadb.sock
MUNGE_KEY=/etc/munge/munge.key
export SLURM_CONF=$CONF

case $ACCOUNTING in
  slurmdbd | none) ;;
  *) echo "slurm.sh: EDGECELERY_SLURM_ACCOUNTING must be slurmdbd or none" >&2; exit 2 ;;
esac

SCRIPT=slurm.sh
# shellcheck source=scripts/daemon-lib.sh
. "$(dirname "$0")/daemon-lib.sh"

check_port_free() {
  if port_in_use "$1"; then
    die "127.0.0.1:$1 is already in use by another program (for $2); set EDGECELERY_SLURM_PORT"
  fi
}

# stop_daemon NAME: stop the daemon whose pid is in run/NAME.pid.
stop_daemon() { stop_pidfile "$RUN/$1.pid" "$1" "$1"; }

install_packages() {
  local pkgs=(slurm-wlm munge) missing=() p created_policy=0
  [ "$ACCOUNTING" = slurmdbd ] && pkgs+=(slurmdbd mariadb-server)
  for p in "${pkgs[@]}"; do installed "$p" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  # Keep the packages' maintainer scripts from starting the system services (a system
  # MariaDB on :3306, munged, ...): this script starts its own instances.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    created_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  local rc=0
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

munge_works() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }

ensure_munge() {
  if [ ! -s "$MUNGE_KEY" ]; then
    log "creating $MUNGE_KEY"
    install -d -o munge -g munge -m 0700 /etc/munge
    (umask 0277 && dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none)
    chown munge:munge "$MUNGE_KEY"
    chmod 0400 "$MUNGE_KEY"
  fi
  munge_works && return 0
  install -d -o munge -g munge -m 0755 /run/munge
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged </dev/null >>"$LOG/munged.out" 2>&1 9>&- ||
    die "munged failed to start (see /var/log/munge/munged.log)"
  wait_for "munged" /var/log/munge/munged.log munge_works
  # Remember that this script started it, so that stop only stops its own munged.
  cp /run/munge/munged.pid "$RUN/munged.pid" 2>/dev/null || true
}

node_hw() {
  # First line of `slurmd -C`, e.g. NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1
  # CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105
  slurmd -C 2>/dev/null | sed -n 1p
}

hw_field() { tr ' ' '\n' <<<"$HW" | sed -n "s/^$1=//p"; }

CONF_CHANGED=0
DBD_CONF_CHANGED=0
write_configs() {
  local node comm cpus boards sockets cores threads mem addr
  node=$NODE
  HW=$(node_hw)
  [ -n "$HW" ] || die "slurmd -C printed nothing"
  cpus=$(hw_field CPUs)
  boards=$(hw_field Boards)
  sockets=$(hw_field SocketsPerBoard)
  cores=$(hw_field CoresPerSocket)
  threads=$(hw_field ThreadsPerCore)
  mem=$(hw_field RealMemory)
  mem=$((mem * 95 / 100))
  [ "$mem" -ge 1 ] || mem=1
  # By default slurmctld and slurmd listen on every address. They can be bound instead to
  # what this machine's hostname resolves to, which is only loopback-safe when that is
  # 127.x (the usual /etc/hosts entry); otherwise they keep listening on all addresses
  # (the cluster still only talks over 127.0.0.1).
  addr=$(getent ahostsv4 "$(hostname)" 2>/dev/null | awk 'NR == 1 { print $1 }')
  case $addr in
    127.*) comm='CommunicationParameters=NoCtldInAddrAny,NoInAddrAny' ;;
    *)
      comm='# CommunicationParameters left default: hostname does not resolve to 127.x'
      log "warning: $(hostname) resolves to '${addr:-nothing}', so slurmctld/slurmd listen on all addresses"
      ;;
  esac
  local acct
  if [ "$ACCOUNTING" = slurmdbd ]; then
    acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT"
  else
    acct="AccountingStorageType=accounting_storage/none"
  fi
  if write_if_changed "$CONF" 0644 <<EOF; then CONF_CHANGED=1; fi
# Generated by edgecelery scripts/slurm.sh; rewritten on every start.
ClusterName=edgecelery
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
$comm
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
MailProg=/bin/true
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=3600
$acct
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG/jobcomp.log
NodeName=$node NodeAddr=127.0.0.1 NodeHostname=$node CPUs=$cpus Boards=$boards SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
  if [ "$ACCOUNTING" = slurmdbd ]; then
    if [ ! -s "$DIR/dbpass" ]; then
      (umask 0077 && head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$DIR/dbpass")
    fi
    if write_if_changed "$DBD_CONF" 0600 <<EOF; then DBD_CONF_CHANGED=1; fi
# Generated by edgecelery scripts/slurm.sh; rewritten on every start.
AuthType=auth/munge
DbdHost=$node
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(cat "$DIR/dbpass")
StorageLoc=slurm_acct_db
EOF
  fi
}

db_ping() { mariadb-admin --no-defaults -S "$DB_SOCK" -u root ping; }

ensure_mariadb() {
  if alive "$RUN/mariadbd.pid" mariadbd; then
    [ "$(cat "$RUN/mariadbd.port" 2>/dev/null)" = "$DB_PORT" ] && return 0
    stop_daemon mariadbd # it listens on another port than slurmdbd.conf now says
  fi
  check_port_free "$DB_PORT" MariaDB
  if [ ! -d "$DIR/mysql/mysql" ]; then
    log "creating the MariaDB data directory"
    rm -rf "$DIR/mysql"
    mariadb-install-db --no-defaults --user=root --datadir="$DIR/mysql" \
      --auth-root-authentication-method=socket --skip-test-db >"$LOG/mariadb-install.log" 2>&1 ||
      { tail -n 20 "$LOG/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
  fi
  log "starting MariaDB on 127.0.0.1:$DB_PORT"
  rm -f "$RUN/mariadbd.pid"
  setsid -f /usr/sbin/mariadbd --no-defaults --user=root --datadir="$DIR/mysql" \
    --socket="$DB_SOCK" --pid-file="$RUN/mariadbd.pid" --bind-address=127.0.0.1 \
    --port="$DB_PORT" --skip-name-resolve --log-error="$LOG/mariadb.log" \
    --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 --max-connections=100 \
    </dev/null >>"$LOG/mariadb.log" 2>&1 9>&-
  wait_for "MariaDB" "$LOG/mariadb.log" db_ping
  echo "$DB_PORT" >"$RUN/mariadbd.port"
  local pass
  pass=$(cat "$DIR/dbpass")
  mariadb --no-defaults -S "$DB_SOCK" -u root -e "
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
    ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" ||
    die "could not create the MariaDB user for slurmdbd"
}

dbd_answers() { sacctmgr -n -P show cluster format=cluster; }

ensure_slurmdbd() {
  if [ "$DBD_CONF_CHANGED" = 1 ]; then stop_daemon slurmdbd; fi
  alive "$RUN/slurmdbd.pid" slurmdbd && return 0
  check_port_free "$DBD_PORT" slurmdbd
  log "starting slurmdbd on 127.0.0.1:$DBD_PORT"
  rm -f "$RUN/slurmdbd.pid"
  # slurmdbd finds slurmdbd.conf next to $SLURM_CONF.
  slurmdbd </dev/null >>"$LOG/slurmdbd.out" 2>&1 9>&- || die "slurmdbd failed to start"
  wait_for "slurmdbd" "$LOG/slurmdbd.log" dbd_answers
}

ctld_answers() { alive "$RUN/slurmctld.pid" slurmctld && sinfo -h -o %P; }

ensure_slurmctld() {
  alive "$RUN/slurmctld.pid" slurmctld && return 0
  check_port_free "$CTLD_PORT" slurmctld
  log "starting slurmctld on 127.0.0.1:$CTLD_PORT"
  rm -f "$RUN/slurmctld.pid"
  slurmctld -f "$CONF" </dev/null >>"$LOG/slurmctld.out" 2>&1 9>&- || die "slurmctld failed to start"
  wait_for "slurmctld" "$LOG/slurmctld.log" ctld_answers
}

ensure_slurmd() {
  alive "$RUN/slurmd.pid" slurmd && return 0
  check_port_free "$SLURMD_PORT" slurmd
  log "starting slurmd on 127.0.0.1:$SLURMD_PORT"
  rm -f "$RUN/slurmd.pid"
  slurmd -f "$CONF" -N "$NODE" </dev/null >>"$LOG/slurmd.out" 2>&1 9>&- || die "slurmd failed to start"
}

# Wait until sinfo shows the node usable (idle, or running jobs recovered from the
# state directory); resume it when it comes up DOWN or DRAINED.
wait_node_ready() {
  local end state last_resume=-100
  end=$(deadline)
  while :; do
    state=$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null | sed -n 1p) || state=
    case $state in
      idle | mixed | allocated | completing) return 0 ;;
      down* | drain* | fail*)
        if [ $((SECONDS - last_resume)) -ge 5 ]; then
          log "node $NODE is $state; resuming it"
          scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
          last_resume=$SECONDS
        fi
        ;;
    esac
    if ! before "$end"; then
      tail -n 20 "$LOG/slurmd.log" >&2 2>/dev/null || true
      die "timed out after ${TIMEOUT}s waiting for node $NODE to become idle (state: ${state:-none})"
    fi
    sleep 0.2
  done
}

cmd_start() {
  [ "$(id -u)" = 0 ] || die "start must run as root (it installs packages and starts daemons)"
  install -d -m 0755 "$DIR" "$RUN" "$LOG" "$DIR/state" "$DIR/spool"
  exec 9>"$RUN/start.lock"
  flock -w 600 9 || die "another slurm.sh start holds $RUN/start.lock"
  install_packages
  NODE=$(hostname -s)
  ensure_munge
  write_configs
  if [ "$CONF_CHANGED" = 1 ] && { alive "$RUN/slurmctld.pid" slurmctld || alive "$RUN/slurmd.pid" slurmd; }; then
    log "slurm.conf changed; restarting slurmctld and slurmd"
    stop_daemon slurmd
    stop_daemon slurmctld
  fi
  if [ "$ACCOUNTING" = slurmdbd ]; then
    ensure_mariadb
    ensure_slurmdbd
  else
    stop_daemon slurmdbd
    stop_daemon mariadbd
  fi
  ensure_slurmctld
  ensure_slurmd
  wait_node_ready
  exec 9>&-
  echo "export SLURM_CONF=$CONF"
}

cmd_stop() {
  [ -d "$RUN" ] || return 0
  exec 9>"$RUN/start.lock"
  flock -w 600 9 || die "a slurm.sh start holds $RUN/start.lock"
  stop_daemon slurmd
  stop_daemon slurmctld
  stop_daemon slurmdbd
  stop_daemon mariadbd
  # munged only when this script started it (the same pid still runs it).
  if [ -s "$RUN/munged.pid" ] && alive "$RUN/munged.pid" munged &&
    cmp -s "$RUN/munged.pid" /run/munge/munged.pid; then
    stop_daemon munged
  fi
  rm -f "$RUN/munged.pid"
}

cmd_status() {
  [ -f "$CONF" ] || { log "not configured ($CONF missing)"; exit 1; }
  # Without a live slurmctld, sinfo would retry for about 10 s before giving up.
  alive "$RUN/slurmctld.pid" slurmctld || { log "slurmctld is not running"; exit 1; }
  if timeout 30 sinfo -h >/dev/null 2>&1; then
    sinfo -h -N -o '%N %T' >&2
    exit 0
  fi
  log "the cluster does not answer (SLURM_CONF=$CONF)"
  exit 1
}

dispatch "$@"

# Shell functions shared by the scripts that run a test server as daemons (slurm.sh,
# gridftp.sh): messages, pid-file checks, deadlines and waiting, ports, Debian packages,
# writing a file only when it changed. Sourced, not run: the caller sets SCRIPT (its name, for
# messages) and TIMEOUT (seconds to wait).

log() { printf '%s: %s\n' "$SCRIPT" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# True when the pid file $1 names a live (non-zombie) process called $2. The init process of
# some containers does not reap orphans quickly, so a dead daemon can linger as a zombie,
# which `kill -0` would report as alive.
alive() {
  local pid stat
  [ -s "$1" ] || return 1
  pid=$(tr -dc 0-9 <"$1")
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 1
  stat=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || return 1
  case ${stat%% *} in Z | X | x | '') return 1 ;; esac
}

now() { date +%s.%N; }
# before DEADLINE: true while the deadline (a `now` value) is in the future.
before() { awk -v d="$1" -v n="$(now)" 'BEGIN { exit !(n < d) }'; }
deadline() { awk -v n="$(now)" -v t="${1:-$TIMEOUT}" 'BEGIN { printf "%.3f", n + t }'; }

# wait_for WHAT LOGFILE COMMAND...: poll (every 0.2 s) until the command succeeds, failing
# after $TIMEOUT seconds with the log's tail.
wait_for() {
  local what=$1 logfile=$2 end
  shift 2
  end=$(deadline)
  until "$@" >/dev/null 2>&1; do
    if ! before "$end"; then
      [ -n "$logfile" ] && [ -f "$logfile" ] && tail -n 20 "$logfile" >&2
      die "timed out after ${TIMEOUT}s waiting for $what"
    fi
    sleep 0.2
  done
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = 'install ok installed' ]; }

# Write $1 (mode $2) from stdin when the content differs; return 0 when it changed.
write_if_changed() {
  local target=$1 mode=$2 tmp
  tmp=$(mktemp "$target.XXXXXX")
  cat >"$tmp"
  chmod "$mode" "$tmp"
  if [ -f "$target" ] && cmp -s "$tmp" "$target"; then
    rm -f "$tmp"
    return 1
  fi
  mv -f "$tmp" "$target"
  return 0
}

# stop_pidfile PIDFILE COMM LABEL: SIGTERM the process the pid file names (if it is alive and
# called COMM), wait up to 30 s for it to go, then SIGKILL; the pid file is removed.
stop_pidfile() {
  local pidfile=$1 comm=$2 label=$3 pid end
  if alive "$pidfile" "$comm"; then
    pid=$(tr -dc 0-9 <"$pidfile")
    log "stopping $label (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    end=$(deadline 30)
    while alive "$pidfile" "$comm" && before "$end"; do sleep 0.2; done
    if alive "$pidfile" "$comm"; then
      log "$label did not stop after 30s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
}

# dispatch COMMAND: the script's command line, start|stop|status, to cmd_start, cmd_stop or
# cmd_status.
dispatch() {
  case ${1:-} in
    start | stop | status) "cmd_$1" ;;
    *)
      echo "usage: $0 start|stop|status" >&2
      exit 2
      ;;
  esac
}

#!/usr/bin/env bash
# Throwaway single-node Slurm cluster on localhost, for tests.
#
#   bash tests/slurm/cluster.sh start    # install (if needed), configure, start, wait until usable
#   bash tests/slurm/cluster.sh status   # exit 0 if our daemons are running, 1 otherwise
#   bash tests/slurm/cluster.sh stop     # cancel jobs, stop our daemons, restore /etc/slurm
#
# Exit codes: 0 ok, 1 failure, 3 Slurm/munge cannot be provided here (not root,
# apt-get failed, ...): tests should skip (loudly) on 3.
#
# Environment:
#   UCIR_SLURM_DIR        state dir for spool, logs, pid files, munge socket/key
#                         and config backups (default /tmp/ucir-slurm)
#   UCIR_SLURM_PARTITION  name of the single partition (default "gpu", which is
#                         the default slurm_partition of workflow/profiles/slurm)
#   UCIR_SLURM_TIMEOUT    seconds to wait for the cluster to accept jobs (default 90)
#   UCIR_SLURM_NODE_CPUS, UCIR_SLURM_NODE_MEM_MB
#                         advertise a bigger node than the machine (slurmd runs with
#                         SlurmdParameters=config_overrides), so that the profile's
#                         real-cluster requests (mem_mb, cpus_per_gpu) still fit.
#                         Nothing is enforced (no cgroups). Default: real hardware.
#
# The config must live at the default path /etc/slurm/slurm.conf: the Snakemake
# slurm jobstep strips SLURM_* variables (SLURM_CONF included) before its inner
# `srun`, so a config elsewhere would not be found inside jobs.
set -euo pipefail

STATE_DIR="${UCIR_SLURM_DIR:-/tmp/ucir-slurm}"
PARTITION="${UCIR_SLURM_PARTITION:-gpu}"
TIMEOUT="${UCIR_SLURM_TIMEOUT:-90}"
NODE_CPUS="${UCIR_SLURM_NODE_CPUS:-}"
NODE_MEM_MB="${UCIR_SLURM_NODE_MEM_MB:-}"

ETC=/etc/slurm
CONF_FILES=(slurm.conf gres.conf)
MARKER="# Written by tests/slurm/cluster.sh"

MUNGE_DIR="$STATE_DIR/munge"          # owned by the munge user
MUNGE_SOCKET="$MUNGE_DIR/munge.socket"
LOG_DIR="$STATE_DIR/log"
PID_DIR="$STATE_DIR/pid"
BACKUP_DIR="$STATE_DIR/etc-backup"
# Daemons in start order; stop goes in reverse order.
DAEMONS=(munged slurmctld slurmd)

log() { echo "[cluster.sh] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
unavailable() { log "UNAVAILABLE: $*"; exit 3; }

# --- pid bookkeeping ------------------------------------------------------

# True if the process exists and is not a zombie. (Daemons are reparented to
# pid 1, which in containers may be slow to reap them.) Reads /proc rather
# than `ps`: minimal images lack procps, and slurm-wlm does not pull it in.
alive() {
    local stat state
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    state=${stat##*) }         # fields after "pid (comm) "
    state=${state%% *}
    [[ -n $state && $state != Z* ]]
}

# pid of a daemon we started, if it is still alive and still that program.
# (Checks /proc/<pid>/comm so a recycled pid is never mistaken for ours.)
live_pid() {
    local name=$1 pidfile="$PID_DIR/$1.pid" pid
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]] || return 1
    alive "$pid" || return 1
    echo "$pid"
}

# Daemons write their own pid files (they fork); wait for one and check it.
wait_for_pidfile() {
    local name=$1 i
    for ((i = 0; i < 50; i++)); do
        live_pid "$name" >/dev/null && return 0
        sleep 0.2
    done
    dump_logs
    die "$name did not start (no live pid in $PID_DIR/$name.pid)"
}

all_running() {
    local d
    for d in "${DAEMONS[@]}"; do live_pid "$d" >/dev/null || return 1; done
}

dump_logs() {
    local f
    for f in "$LOG_DIR"/*.log; do
        [[ -e $f ]] || continue
        echo "----- $f (last 40 lines) -----" >&2
        tail -n 40 "$f" >&2 || true
    done
}

# --- installation ---------------------------------------------------------

ensure_installed() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v munged >/dev/null && command -v srun >/dev/null; then
        return 0
    fi
    command -v apt-get >/dev/null || unavailable "slurmctld missing and no apt-get to install slurm-wlm"
    log "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    local pkgs=(slurm-wlm munge)
    if ! apt-get install -y -q "${pkgs[@]}" >"$LOG_DIR/apt.log" 2>&1; then
        log "apt-get install failed; retrying after apt-get update"
        if ! { apt-get update -q && apt-get install -y -q "${pkgs[@]}"; } >>"$LOG_DIR/apt.log" 2>&1; then
            tail -n 20 "$LOG_DIR/apt.log" >&2 || true
            unavailable "could not install slurm-wlm/munge (see $LOG_DIR/apt.log)"
        fi
    fi
    command -v slurmctld >/dev/null || unavailable "slurmctld still missing after installing slurm-wlm"
}

# --- configuration --------------------------------------------------------

# Move away pre-existing configs that are not ours; restore_configs undoes it.
backup_configs() {
    local f
    mkdir -p "$BACKUP_DIR" "$ETC"
    for f in "${CONF_FILES[@]}"; do
        if [[ -e $ETC/$f ]] && ! grep -qF "$MARKER" "$ETC/$f"; then
            cp -a "$ETC/$f" "$BACKUP_DIR/$f"
            log "backed up $ETC/$f to $BACKUP_DIR/$f"
        fi
    done
}

restore_configs() {
    local f
    for f in "${CONF_FILES[@]}"; do
        if [[ -e $BACKUP_DIR/$f ]]; then
            cp -a "$BACKUP_DIR/$f" "$ETC/$f"
            log "restored $ETC/$f"
        elif [[ -e $ETC/$f ]] && grep -qF "$MARKER" "$ETC/$f"; then
            rm -f "$ETC/$f"   # ours, and there was nothing before it
        fi
    done
}

write_configs() {
    # Hardware as slurmd itself sees it (slurmd drains a node whose config
    # claims more CPUs or memory than it has).
    local hw cpus sockets cores threads mem
    hw=$(slurmd -C | head -n 1)
    field() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$hw"; }
    cpus=$(field CPUs); sockets=$(field SocketsPerBoard)
    cores=$(field CoresPerSocket); threads=$(field ThreadsPerCore)
    mem=$(field RealMemory)
    [[ -n $cpus && -n $mem ]] || die "cannot parse 'slurmd -C' output: $hw"
    local node="CPUs=$cpus SocketsPerBoard=${sockets:-1} CoresPerSocket=${cores:-$cpus} ThreadsPerCore=${threads:-1} RealMemory=$mem"
    local overrides=""
    if [[ -n $NODE_CPUS || -n $NODE_MEM_MB ]]; then
        # Fake node size: slurmd must not drain the node for lacking hardware.
        node="CPUs=${NODE_CPUS:-$cpus} SocketsPerBoard=1 CoresPerSocket=${NODE_CPUS:-$cpus} ThreadsPerCore=1 RealMemory=${NODE_MEM_MB:-$mem}"
        overrides="SlurmdParameters=config_overrides"
    fi

    cat >"$ETC/slurm.conf" <<EOF
$MARKER (UCIR_SLURM_DIR=$STATE_DIR).
# Single-node test cluster; "stop" removes it and restores any previous file.
ClusterName=ucirtest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET

StateSaveLocation=$STATE_DIR/spool/ctld
SlurmdSpoolDir=$STATE_DIR/spool/d
SlurmctldPidFile=$PID_DIR/slurmctld.pid
SlurmdPidFile=$PID_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
$overrides

# No cgroups, no accounting daemon: squeue is the only job-status source.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none

SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
# Finished jobs stay visible to squeue for MinJobAge seconds. The Snakemake
# plugin falls back to sacct unless MinJobAge >= 3 * its initial status delay.
MinJobAge=300
SchedulerParameters=sched_interval=2
InactiveLimit=0
KillWait=5
# Jobs without --mem would otherwise get the whole node memory (blocking others).
DefMemPerCPU=1024

NodeName=localhost $node Gres=gpu:1 State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF

    # One fake GPU: the scheduler enforces the count, nothing touches a device.
    cat >"$ETC/gres.conf" <<EOF
$MARKER (UCIR_SLURM_DIR=$STATE_DIR).
AutoDetect=off
NodeName=localhost Name=gpu File=/dev/null
EOF
}

# --- munge ----------------------------------------------------------------

# Private munged (own key, socket, pid and log) so a system munged, if any, is
# neither needed nor disturbed. It runs as the munge user, as munged wants.
start_munged() {
    id munge >/dev/null 2>&1 || unavailable "no 'munge' user (munge package broken?)"
    install -d -m 0755 -o munge -g munge "$MUNGE_DIR"  # socket dir: munged wants o+x
    if [[ ! -s $MUNGE_DIR/munge.key ]]; then
        dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 status=none
    fi
    chown munge:munge "$MUNGE_DIR/munge.key"
    chmod 0400 "$MUNGE_DIR/munge.key"
    # munged forks and writes its pid file itself.
    runuser -u munge -- munged \
        --socket="$MUNGE_SOCKET" \
        --key-file="$MUNGE_DIR/munge.key" \
        --pid-file="$MUNGE_DIR/munged.pid" \
        --log-file="$MUNGE_DIR/munged.log" \
        --seed-file="$MUNGE_DIR/munged.seed" \
        || { cat "$MUNGE_DIR/munged.log" >&2 2>/dev/null || true; die "munged failed to start"; }
    # Keep all pid files in one place (munged's own lives in the munge-owned dir).
    local i
    for ((i = 0; i < 50; i++)); do
        [[ -s $MUNGE_DIR/munged.pid ]] && break
        sleep 0.1
    done
    cp "$MUNGE_DIR/munged.pid" "$PID_DIR/munged.pid" 2>/dev/null || true
    ln -sf "$MUNGE_DIR/munged.log" "$LOG_DIR/munged.log"
    wait_for_pidfile munged
    munge -n --socket="$MUNGE_SOCKET" | unmunge --socket="$MUNGE_SOCKET" >/dev/null \
        || die "munge credential round trip failed"
}

# --- commands -------------------------------------------------------------

cmd_status() {
    local d pid rc=0
    for d in "${DAEMONS[@]}"; do
        if pid=$(live_pid "$d"); then
            echo "$d: running (pid $pid)"
        else
            echo "$d: not running"
            rc=1
        fi
    done
    if [[ $rc -eq 0 ]]; then sinfo || true; fi
    return $rc
}

cmd_start() {
    [[ $(id -u) -eq 0 ]] || unavailable "must run as root (writes /etc/slurm, runs slurmd)"
    if all_running; then
        log "already running (state dir $STATE_DIR)"
        return 0
    fi
    # Leftovers of a crashed/partial run: stop what is left, restore configs.
    if [[ -d $STATE_DIR ]]; then
        log "cleaning up stale state in $STATE_DIR"
        cmd_stop
    fi
    mkdir -p "$LOG_DIR" "$PID_DIR" "$STATE_DIR/spool/ctld" "$STATE_DIR/spool/d"
    # Failed start (logs are already printed): stop what started, restore configs.
    trap 'rc=$?; trap - EXIT; if ((rc != 0)); then log "start failed (exit $rc); cleaning up"; cmd_stop; fi; exit $rc' EXIT
    ensure_installed
    backup_configs
    write_configs

    start_munged
    # -i: ignore state files (fresh cluster); both daemons fork and write pids.
    slurmctld -i || { dump_logs; die "slurmctld failed to start"; }
    wait_for_pidfile slurmctld
    slurmd -N localhost || { dump_logs; die "slurmd failed to start"; }
    wait_for_pidfile slurmd

    # "idle" in sinfo can precede slurmd's registration; a real job step is
    # the only reliable readiness test.
    local deadline=$((SECONDS + TIMEOUT))
    local d
    until timeout 20 srun -t 1 -N 1 true >/dev/null 2>&1; do
        for d in slurmctld slurmd; do
            live_pid "$d" >/dev/null || { dump_logs; die "$d exited during startup (see its log above)"; }
        done
        if ((SECONDS >= deadline)); then
            sinfo -N -l >&2 || true
            dump_logs
            die "cluster did not run 'srun true' within ${TIMEOUT}s"
        fi
        # A node that registered in a bad state would stay down: resume it.
        scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true
        sleep 1
    done
    trap - EXIT
    log "cluster up: partition '$PARTITION', node localhost ($(sinfo -h -N -o '%c CPUs, %m MB, %G'))"
}

# Stop one daemon by its recorded pid: TERM, wait, then KILL.
stop_daemon() {
    local name=$1 pid i
    pid=$(live_pid "$name") || { rm -f "$PID_DIR/$name.pid"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        log "$name (pid $pid) still running 10 s after SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
    fi
    alive "$pid" && die "$name (pid $pid) is still running"
    rm -f "$PID_DIR/$name.pid"
    log "stopped $name (pid $pid)"
}

cmd_stop() {
    [[ -d $STATE_DIR ]] || { log "not running (no $STATE_DIR)"; return 0; }
    # Cancel jobs while the controller is still up, so no job step survives it.
    if live_pid slurmctld >/dev/null && live_pid slurmd >/dev/null; then
        local ids i
        ids=$(squeue -h -o %i 2>/dev/null || true)
        # shellcheck disable=SC2086  # word splitting of the id list is intended
        [[ -z $ids ]] || scancel $ids >/dev/null 2>&1 || true
        for ((i = 0; i < 30; i++)); do
            [[ -z $(squeue -h -t RUNNING,COMPLETING,PENDING 2>/dev/null) ]] && break
            sleep 0.5
        done
    fi
    local idx
    for ((idx = ${#DAEMONS[@]} - 1; idx >= 0; idx--)); do
        stop_daemon "${DAEMONS[idx]}"
    done
    restore_configs
    rm -rf "$STATE_DIR"
    log "stopped; removed $STATE_DIR"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac

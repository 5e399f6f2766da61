#!/usr/bin/env bash
# A real Slurm (Debian 12's slurm-wlm 22.05 + munge) on localhost, for the tests, .ci/run and benchmarks.
#
#   tests/slurm/local-slurm.sh install   # apt-get the packages if missing (needs root)
#   tests/slurm/local-slurm.sh start     # start munged, slurmctld, slurmd; wait until the node is idle
#   tests/slurm/local-slurm.sh env       # print `export SLURM_CONF=...` for clients (sbatch, squeue, submitit)
#   tests/slurm/local-slurm.sh stop      # stop exactly the daemons this script started (their PIDs)
#
# No systemd: the daemons are started by hand; no cgroup.conf (22.05 has no CgroupPlugin=disabled), so
# proctrack/linuxproc and task/none; the node declares CPUS (default 8) with SlurmdParameters=config_overrides
# so 8 array tasks run at once on a 2-core machine. The hostname is not `localhost`, so slurmd runs with
# -N localhost. No slurmdbd: sacct is off (submitit warns and works). Everything lives in $STATE.
set -euo pipefail

STATE=${GAPSEEK_SLURM_STATE:-/tmp/gapseek-slurm-$(id -u)}
STATE=$(realpath -m "$STATE")  # absolute, no trailing slash: step daemons are recognised by paths under it
CPUS=${GAPSEEK_SLURM_CPUS:-8}
PORT=${GAPSEEK_SLURM_PORT:-6917}
MAX_ARRAY=${GAPSEEK_SLURM_MAX_ARRAY:-1001}
CONF=$STATE/slurm.conf

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
sbin() { if command -v "$1" >/dev/null 2>&1; then command -v "$1"; else echo "/usr/sbin/$1"; fi; }

install() {
    if have slurmctld && have slurmd && have sbatch && have munged; then return 0; fi
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "local-slurm: slurm/munge are not installed and this is not a root Debian system" >&2; return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null 2>&1 || {
        apt-get update -q >/dev/null && apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null; }
}

write_conf() {
    mkdir -p "$STATE/ctld" "$STATE/d"
    cat > "$CONF" <<CONF
ClusterName=gapseek-local
SlurmctldHost=localhost
SlurmUser=$(id -un)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE/munge.sock
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=pmi2
SlurmdParameters=config_overrides
ReturnToService=2
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MaxArraySize=$MAX_ARRAY
KillWait=5
InactiveLimit=0
NodeName=localhost CPUs=$CPUS RealMemory=64000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
}

start() {
    install
    if [ -f "$STATE/pids" ] && kill -0 $(cat "$STATE/pids") 2>/dev/null; then
        echo "local-slurm: already running ($STATE)"; return 0
    fi
    rm -rf "$STATE"; mkdir -p "$STATE"; chmod 700 "$STATE"
    write_conf
    head -c 1024 /dev/urandom > "$STATE/munge.key"; chmod 400 "$STATE/munge.key"
    "$(sbin munged)" --force --socket="$STATE/munge.sock" --key-file="$STATE/munge.key" \
        --pid-file="$STATE/munged.pid" --log-file="$STATE/munged.log" --seed-file="$STATE/munge.seed"
    for _ in $(seq 50); do [ -s "$STATE/munged.pid" ] && break; sleep 0.1; done
    cat "$STATE/munged.pid" > "$STATE/pids"
    export SLURM_CONF=$CONF
    "$(sbin slurmctld)" -f "$CONF"
    for _ in $(seq 100); do [ -s "$STATE/slurmctld.pid" ] && break; sleep 0.1; done
    echo " $(cat "$STATE/slurmctld.pid")" >> "$STATE/pids"
    "$(sbin slurmd)" -f "$CONF" -N localhost
    for _ in $(seq 100); do [ -s "$STATE/slurmd.pid" ] && break; sleep 0.1; done
    echo " $(cat "$STATE/slurmd.pid")" >> "$STATE/pids"
    for _ in $(seq 300); do
        if [ "$(sinfo -h -N -o %T 2>/dev/null | head -1)" = idle ]; then
            echo "local-slurm: up, node localhost idle with $CPUS cpus ($STATE; export SLURM_CONF=$CONF)"
            return 0
        fi
        sleep 0.2
    done
    echo "local-slurm: the node did not become idle; logs in $STATE" >&2
    tail -5 "$STATE"/*.log >&2 || true
    stop; return 1
}

# slurmstepd processes of this cluster: they daemonize (parent 1) but keep this cluster's slurmd.log open
our_stepds() {
    local d pid
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        [ "$(cat "$d/comm" 2>/dev/null)" = slurmstepd ] || continue
        # -print -quit, not a pipe: under pipefail a find that fails on a vanishing fd would hide the match
        if [ -n "$(find "$d/fd" -maxdepth 1 -lname "$STATE/*" -print -quit 2>/dev/null || true)" ]; then
            echo "$pid"
        fi
    done
}

stop() {
    [ -f "$STATE/pids" ] || { echo "local-slurm: nothing started here"; return 0; }
    read -r -a pids <<< "$(tr '\n' ' ' < "$STATE/pids")"
    local alive=0 jobs queue
    for pid in "${pids[@]}"; do if kill -0 "$pid" 2>/dev/null; then alive=1; fi; done
    if [ "$alive" = 1 ]; then
        # jobs still queued or running are cancelled, and their steps given time to finish and report
        jobs=$(SLURM_CONF=$CONF squeue -h -o %A 2>/dev/null | tr '\n' ' ' || true)
        if [ -n "${jobs// /}" ]; then
            # shellcheck disable=SC2086
            SLURM_CONF=$CONF scancel $jobs 2>/dev/null || true
        fi
        for _ in $(seq 100); do  # up to ~20 s
            queue=$(SLURM_CONF=$CONF timeout 5 squeue -h 2>/dev/null) || break
            [ -z "$queue" ] && break
            sleep 0.2
        done
        for _ in $(seq 25); do [ -z "$(our_stepds)" ] && break; sleep 0.2; done
    fi
    # slurmd, slurmctld, then munged; each only if it is still the process we started
    for ((k = ${#pids[@]} - 1; k >= 0; k--)); do
        pid=${pids[k]}
        if kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null || true; fi  # it may have just exited
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    done
    # a step daemon left without its slurmd would linger: ours are ended too
    local left
    left=$(our_stepds | tr '\n' ' ')
    if [ -n "${left// /}" ]; then
        # shellcheck disable=SC2086
        kill $left 2>/dev/null || true
        sleep 1
        # shellcheck disable=SC2086
        kill -9 $(our_stepds) 2>/dev/null || true
        echo "local-slurm: ended leftover step daemon(s) $left"
    fi
    rm -f "$STATE/pids"
    echo "local-slurm: stopped ${pids[*]}"
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 install|start|stop|env" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# A one-node SLURM on localhost, for the SLURM test (tests/integration/test_slurm.py) and
# for trying profiles/slurm on a workstation. Debian's slurm-wlm 22.05 and
# munge, daemons started by hand (no systemd), state under DIR.
#
#   bash scripts/local_slurm.sh install      # apt-get slurm-wlm + munge (root)
#   bash scripts/local_slurm.sh start DIR    # write DIR/slurm.conf, start munged, slurmctld, slurmd
#   export SLURM_CONF=DIR/slurm.conf         # then sbatch / squeue / snakemake --profile profiles/slurm
#   bash scripts/local_slurm.sh stop DIR
#
# The config is also written to /etc/slurm/slurm.conf (refused if another
# config is there): the executor plugin's job step clears SLURM_* variables,
# SLURM_CONF included, before its inner `srun`, which then reads the default
# path. `stop` removes it again.
#
# Settings a container without systemd/cgroups needs: proctrack/linuxproc,
# task/none, jobacct_gather/none. There is no slurmdbd, so `sacct` has no
# records: jobs are tracked with squeue, and MinJobAge keeps finished jobs
# visible to `squeue --states=all` for an hour.
set -euo pipefail

cmd=${1:?usage: local_slurm.sh install|start DIR|stop DIR}

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "local_slurm: slurm-wlm is missing and installing it needs root" >&2
        exit 2
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null; }
}

start() {
    dir=$(mkdir -p "$1" && cd "$1" && pwd)
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
    mkdir -p "$dir/spool" "$dir/state" "$dir/log"
    if [ -f /etc/slurm/slurm.conf ] && ! grep -q "^# shala local_slurm" /etc/slurm/slurm.conf; then
        echo "local_slurm: /etc/slurm/slurm.conf belongs to another SLURM; not touching it" >&2
        exit 2
    fi
    cat > "$dir/slurm.conf" <<EOF
# shala local_slurm ($dir)
ClusterName=shala-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=3600
SchedulerType=sched/backfill
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    mkdir -p /etc/slurm
    cp "$dir/slurm.conf" /etc/slurm/slurm.conf
    export SLURM_CONF="$dir/slurm.conf"
    if ! pgrep -x munged >/dev/null; then
        mkdir -p /run/munge /var/log/munge /var/lib/munge
        [ -f /etc/munge/munge.key ] || mungekey --create --keyfile /etc/munge/munge.key
        chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
        chmod 0400 /etc/munge/munge.key
        if id munge >/dev/null 2>&1; then
            runuser -u munge -- munged
        else
            munged --force
        fi
    fi
    slurmctld -f "$SLURM_CONF"
    slurmd -f "$SLURM_CONF"
    for _ in $(seq 60); do
        if sinfo -h -o %t 2>/dev/null | grep -qx idle; then
            echo "local_slurm: $host idle ($cpus CPUs, $mem MB); export SLURM_CONF=$SLURM_CONF"
            return 0
        fi
        sleep 1
    done
    echo "local_slurm: node did not come up; see $dir/log" >&2
    tail -20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
    exit 1
}

stop() {
    dir=$(cd "$1" && pwd)
    for pid in "$dir/slurmd.pid" "$dir/slurmctld.pid"; do
        [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
    done
    if grep -qs "^# shala local_slurm ($dir)" /etc/slurm/slurm.conf; then
        rm -f /etc/slurm/slurm.conf
    fi
}

case "$cmd" in
    install) install ;;
    start) install; start "${2:?start needs DIR}" ;;
    stop) stop "${2:?stop needs DIR}" ;;
    *) echo "local_slurm: unknown command $cmd" >&2; exit 2 ;;
esac

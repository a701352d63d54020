#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, with accounting (sacct), for the tests and
# for trying `ftstudy run --executor slurm` by hand. Debian, root, no systemd.
#   bash bench/slurm_cluster.sh start    # install if needed, write configs, start daemons
#   bash bench/slurm_cluster.sh stop
# Daemons: munged, mariadbd (accounting store), slurmdbd, slurmctld, slurmd. State, logs and
# the database live in $SLURM_LOCAL_DIR (default /tmp/ftstudy-slurm); configs in /etc/slurm.
set -euo pipefail
STATE=${SLURM_LOCAL_DIR:-/tmp/ftstudy-slurm}
HOST=$(hostname -s)
PKGS="slurmctld slurmd slurm-client slurmdbd munge mariadb-server"

# Every daemon this script starts writes its pid file under $STATE/run; `stop` ends exactly
# those processes, never others by name (a real Slurm installation's daemons are left alone).
running() {  # running PIDFILE NAME: the pid file names a live process called NAME
  local pid
  [ -f "$1" ] && pid=$(cat "$1") && [ -n "$pid" ] && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$2" ]
}

wait_for() {  # wait_for SECONDS DESCRIPTION CMD...
  local secs=$1 what=$2; shift 2
  for _ in $(seq $((secs * 4))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  echo "slurm_cluster: $what did not come up in ${secs}s" >&2; return 1
}

install() {
  command -v slurmctld >/dev/null && command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null \
    && command -v munged >/dev/null && return 0
  [ "$(id -u)" = 0 ] || { echo "slurm_cluster: installing needs root" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PKGS >/dev/null
}

configure() {
  mkdir -p "$STATE"/{state,spool,log,run} /etc/slurm
  chmod 755 "$STATE"
  local cpus mem
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) - 1024 ))
  cat > /etc/slurm/slurm.conf <<CONF
ClusterName=ftstudy
SlurmctldHost=$HOST(127.0.0.1)
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SlurmUser=root
SlurmdUser=root
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
MinJobAge=600
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
LogFile=$STATE/log/slurmdbd.log
PidFile=$STATE/run/slurmdbd.pid
CONF
  chmod 600 /etc/slurm/slurmdbd.conf
}

start_munge() {
  munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
  mkdir -p /run/munge "$STATE/run" && chown munge:munge /run/munge && chmod 1777 "$STATE/run"
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --pid-file="$STATE/run/munged.pid"
  wait_for 10 munged sh -c 'munge -n | unmunge'
}

start_mariadb() {
  local run="$STATE/mysql-run" data="$STATE/mysql"
  mkdir -p "$run" && chown mysql:mysql "$run"
  if [ ! -d "$data/mysql" ]; then
    mkdir -p "$data" && chown mysql:mysql "$data"
    mariadb-install-db --user=mysql --datadir="$data" --auth-root-authentication-method=socket >/dev/null
  fi
  if ! mariadb-admin --socket="$run/mysqld.sock" ping >/dev/null 2>&1; then
    setsid mariadbd --user=mysql --datadir="$data" --socket="$run/mysqld.sock" \
      --pid-file="$run/mysqld.pid" --log-error="$run/error.log" --bind-address=127.0.0.1 \
      --port=3306 </dev/null >/dev/null 2>&1 &
    wait_for 30 mariadbd mariadb-admin --socket="$run/mysqld.sock" ping
  fi
  mariadb --socket="$run/mysqld.sock" -uroot <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL
}

start() {
  install
  configure
  start_munge
  start_mariadb
  running "$STATE/run/slurmdbd.pid" slurmdbd || { setsid slurmdbd -D </dev/null >>"$STATE/log/slurmdbd.out" 2>&1 & }
  wait_for 30 slurmdbd sacctmgr -n -i show cluster
  running "$STATE/run/slurmctld.pid" slurmctld || { setsid slurmctld -D -i </dev/null >>"$STATE/log/slurmctld.out" 2>&1 & }
  wait_for 30 slurmctld scontrol ping
  running "$STATE/run/slurmd.pid" slurmd || { setsid slurmd -D </dev/null >>"$STATE/log/slurmd.out" 2>&1 & }
  wait_for 30 "slurmd (node idle)" sh -c 'sinfo -h -o %T | grep -qx idle'
  wait_for 30 "sacct" sacct -n -X
  echo "slurm_cluster: up ($(sinfo -h -o '%P %D %T %c CPUs'), accounting on)"
}

stop_one() {  # stop_one PIDFILE NAME: end that process if it is ours and alive, and wait for it
  running "$1" "$2" || return 0
  local pid
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
}

stop() {
  local name
  for name in slurmd slurmctld slurmdbd munged; do stop_one "$STATE/run/$name.pid" "$name"; done
  stop_one "$STATE/mysql-run/mysqld.pid" mariadbd
  echo "slurm_cluster: stopped the daemons started from $STATE"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac

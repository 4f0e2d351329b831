#!/usr/bin/env bash
# A real Slurm on this machine: munged, slurmctld and slurmd started from a
# generated one-node slurm.conf (ProctrackType=proctrack/linuxproc,
# TaskPlugin=task/none), the project's jobs/slurm/train.sbatch submitted with
# 2 tasks (srun --mpi=pmix), then a job requeued mid-run (scontrol requeue):
# it stops with its checkpoint, runs again, resumes and ends with the
# uninterrupted run's numbers. Every daemon started here is stopped by its pid
# file whatever happens. Skipped (never passed) without the Slurm packages or
# as a user who cannot run them.
. "$(dirname "$0")/lib.sh"
plan 7
skipall() { for i in $(seq 6); do skip "$1"; done; exit 0; }
for p in munged slurmctld slurmd sbatch srun scontrol sinfo; do
    command -v $p >/dev/null || skipall "no $p (Debian: slurm-wlm, munge)"
done
[ "$(id -u)" = 0 ] || skipall "the daemons of this harness run as root"
S="$TMP/slurm"
mkdir -p "$S/state" "$S/spool" "$S/log"
stop_daemons() {
    for f in slurmd slurmctld munged; do
        [ -f "$S/$f.pid" ] && kill "$(cat "$S/$f.pid")" 2>/dev/null
    done
    sleep 0.5
    for f in slurmd slurmctld munged; do
        [ -f "$S/$f.pid" ] && kill -9 "$(cat "$S/$f.pid")" 2>/dev/null
    done
    rm -rf "$TMP"
}
trap stop_daemons EXIT
host=$(hostname -s)
mem=$(awk '/MemTotal/ { print int($2 / 1024 / 2) }' /proc/meminfo)
# ports of this run (another harness or a real Slurm may hold the defaults)
port=$((20000 + RANDOM % 20000))
cat > "$S/slurm.conf" <<CONF
ClusterName=elastictest
SlurmctldHost=$host
AuthType=auth/munge
AuthInfo=socket=$S/munge.sock
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$port
SlurmdPort=$((port + 1))
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobRequeue=1
KillWait=60
NodeName=$host CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
export SLURM_CONF="$S/slurm.conf"
dd if=/dev/urandom of="$S/munge.key" bs=1024 count=1 status=none && chmod 400 "$S/munge.key"
munged --force --key-file="$S/munge.key" --socket="$S/munge.sock" --pid-file="$S/munged.pid" \
    --log-file="$S/log/munged.log" --seed-file="$S/munge.seed" || skipall "munged does not start here"
slurmctld && slurmd || skipall "slurmctld or slurmd does not start here"
for _ in $(seq 60); do sinfo -h -o %t 2>/dev/null | grep -q idle && break; sleep 0.5; done
sinfo -h -o %t | grep -q idle && ok "munged, slurmctld and slurmd up: one idle node" \
    || { notok "no idle node"; tail -3 "$S/log/slurmctld.log" "$S/log/slurmd.log" | sed 's/^/# /'; exit 1; }

$BIN/elastic_prep synth -o "$TMP/s.h5" --users 600 --items 300 --clusters 10 --min-len 5 \
    --max-len 60 --seed 3 >/dev/null || { notok "dataset"; exit 1; }
script=$(realpath jobs/slurm/train.sbatch) gscript=$(realpath jobs/slurm/train_gpu.sbatch)
export ELASTIC=$(realpath "$BIN") DATA="$TMP/s.h5"
args="--model elastic --chunk 8 --experts 3 --mem-slots 4096 --mem-topk 4 --L 20 --batch 32 --d 32 --dropout 0.2 --eval-every 0 --patience 0 --test false"
# the numbers of uninterrupted runs of 2 ranks (over hundreds of steps, 1 and 2
# ranks differ in the last digits: the gradients are summed in another order)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpi="timeout -k 5 120 mpirun --oversubscribe -np 2 $BIN/elastic_train --threads 1 --data $TMP/s.h5"
$mpi $args --steps 40 --log-every 10 > "$TMP/one.log" 2>&1
$mpi $args --steps 600 --log-every 100 > "$TMP/long.log" 2>&1
last() { grep -E '^step [0-9]+/' "$1" | tail -1 | sed -E 's/ \| [0-9.]+ tok\/s.*//; s/ \| epoch [^|]*//'; }
state() { scontrol show job "$1" | grep -oE 'JobState=[A-Z_]+' | cut -d= -f2; }

# a 2-task job to its end
cd "$TMP"
CKPT_DIR="$TMP/ck1" TRAIN_ARGS="$args --steps 40 --log-every 10 --metrics $TMP/m1.jsonl" \
    timeout 120 sbatch --wait -n 2 "$script" > "$TMP/sb1" 2>&1
rc=$?
j1=$(grep -oE '[0-9]+' "$TMP/sb1" | head -1)
out1="$TMP/elastic-$j1.out"
grep -q "2 rank(s)" "$out1" 2>/dev/null && grep -q '^done: 40 steps' "$out1" && [ $rc -eq 0 ] \
    && ok "sbatch -n 2 jobs/slurm/train.sbatch: 2 ranks through srun --mpi=pmix, done, exit 0" \
    || { notok "the 2-task job (exit $rc)"; tail -5 "$out1" 2>/dev/null | sed 's/^/# /'; }
[ "$(last "$out1")" = "$(last "$TMP/one.log")" ] && [ -n "$(last "$out1")" ] \
    && ok "its losses are mpirun -np 2's: $(last "$out1")" \
    || { notok "job losses differ"; echo "# $(last "$out1") / $(last "$TMP/one.log")"; }
grep -c '"type":"train"' "$TMP/m1.jsonl" 2>/dev/null | grep -q '^5$' \
    && ok "its metrics file: 5 training records (steps 1, 10, 20, 30, 40)" || notok "metrics of the job"

# the GPU script's launch on this GPU-less node: its GPU request overridden,
# its trainer sent to the CPU (TRAIN_ARGS come after its --device cuda)
CKPT_DIR="$TMP/ckg" TRAIN_ARGS="$args --steps 40 --log-every 10 --device cpu --threads 1" \
    timeout 120 sbatch --wait -n 2 --ntasks-per-node=2 --gpus-per-node=0 --cpus-per-task=1 \
    "$gscript" > "$TMP/sbg" 2>&1
rc=$?
jg=$(grep -oE '[0-9]+' "$TMP/sbg" | head -1)
outg="$TMP/elastic-$jg.out"
[ $rc -eq 0 ] && grep -q '^done: 40 steps' "$outg" 2>/dev/null && [ "$(last "$outg")" = "$(last "$TMP/one.log")" ] \
    && ok "jobs/slurm/train_gpu.sbatch launches 2 ranks (GPUs overridden to none, --device cpu): mpirun -np 2's losses" \
    || { notok "the GPU script's job (exit $rc)"; cat "$TMP/sbg" | head -3 | sed 's/^/# /'; tail -5 "$outg" 2>/dev/null | sed 's/^/# /'; }

# requeued mid-run: stops with its checkpoint, comes back, resumes, ends the same
CKPT_DIR="$TMP/ck2" TRAIN_ARGS="$args --steps 600 --log-every 100" \
    sbatch --parsable -n 2 "$script" > "$TMP/sb2" 2>&1
j2=$(cat "$TMP/sb2")
out2="$TMP/elastic-$j2.out"
for _ in $(seq 300); do grep -q '^step 100/' "$out2" 2>/dev/null && break; sleep 0.1; done
scontrol requeue "$j2"
# Slurm holds a requeued job 2 minutes; this harness lets it go at once
for _ in $(seq 100); do [ "$(state "$j2")" = PENDING ] && break; sleep 0.2; done
scontrol update jobid="$j2" StartTime=now
for _ in $(seq 300); do [ "$(state "$j2")" = COMPLETED ] && break; sleep 0.5; done
if grep -qE '^stopped by SIGTERM at step [0-9]+: checkpoint' "$out2" && grep -q 'restart 1' "$out2" &&
    grep -qE '^resumed from .*ck2/step_' "$out2"; then
    ok "scontrol requeue: stopped by SIGTERM with its checkpoint, restarted, resumed"
else notok "requeue"; grep -E 'elastic:|stopped|resumed|done|error' "$out2" | sed 's/^/# /'; fi
[ "$(state "$j2")" = COMPLETED ] && [ "$(last "$out2")" = "$(last "$TMP/long.log")" ] \
    && ok "the requeued job completes with the uninterrupted run's losses: $(last "$out2")" \
    || { notok "requeued job: $(state "$j2"), $(last "$out2") against $(last "$TMP/long.log")"; }

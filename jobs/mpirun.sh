#!/usr/bin/env bash
# mpirun with a graceful stop on every signal: use it in place of mpirun,
#   jobs/mpirun.sh -np 8 bin/elastic_train --ckpt-dir ck --resume auto ...
# Open MPI's mpirun forwards only SIGUSR1/SIGUSR2 to its ranks; on SIGINT
# (^C) or SIGTERM it aborts the job, giving the ranks one second before
# SIGKILL, so a checkpoint that takes longer is lost. This launcher runs
# mpirun in a session of its own (a ^C at the terminal reaches only this
# script) and turns SIGINT, SIGTERM and SIGHUP into the SIGUSR1 that mpirun
# forwards: every rank finishes its step, the checkpoint is written, and the
# exit status is elastic_train's (75 after a graceful stop). Further signals
# are forwarded the same way and change nothing (the stop is already agreed).
# A third ^C within the stop is taken as "now": mpirun gets SIGTERM.
set -u
if [ $# -eq 0 ] || [ "$1" = --help ] || [ "$1" = -h ]; then
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
command -v mpirun > /dev/null || { echo "mpirun.sh: mpirun not found on PATH" >&2; exit 127; }
if command -v setsid > /dev/null; then
    setsid mpirun "$@" &
else
    mpirun "$@" &
fi
pid=$!
count=0
forward() {
    count=$((count + 1))
    if [ $count -ge 3 ]; then
        echo "mpirun.sh: third signal: stopping now (SIGTERM to mpirun)" >&2
        kill -TERM $pid 2> /dev/null
    else
        echo "mpirun.sh: $1: asking every rank to stop after its step and checkpoint (SIGUSR1)" >&2
        kill -USR1 $pid 2> /dev/null
    fi
}
trap 'forward SIGINT' INT
trap 'forward SIGTERM' TERM
trap 'forward SIGHUP' HUP
trap 'kill -USR1 $pid 2> /dev/null' USR1
trap 'kill -USR2 $pid 2> /dev/null' USR2
# wait returns early (status > 128) when a trapped signal arrives: wait again
# until mpirun itself has exited; bash keeps its status for the last wait
while kill -0 $pid 2> /dev/null; do wait $pid; done
wait $pid

#!/usr/bin/env bash
# tests/mpi/fault_check.sh SCENARIO MPIRUN PROGRAM — runs tests/mpi/faults.cpp
# as 2 nodes of 2 ranks and checks that the job ended within 10 s of the
# fault, with a non-zero exit (a program that does not catch the error) or
# with 0 (mismatch_caught: the program caught it and closed; heal: every
# node healed, trained on and closed), with the
# message the scenario must give, and that no process of the job is left.
set -u
scenario=$1 mpirun=$2 prog=$3
out=$(mktemp)
start=$(date +%s%3N)
timeout 90 "$mpirun" --allow-run-as-root --oversubscribe --bind-to none -np 2 "$prog" "$scenario" >"$out" 2>&1
rc=$?
end=$(date +%s%3N)
cat "$out"
fail() { echo "FAIL ($scenario): $*"; rm -f "$out"; exit 1; }
[[ $rc -ne 124 ]] || fail "the job hung (killed by timeout after 90 s)"
if [[ $scenario == mismatch_caught || $scenario == heal ]]; then
  [[ $rc -eq 0 ]] || fail "the job exited $rc, though every node caught the error and closed"
else
  [[ $rc -ne 0 ]] || fail "the job exited 0"
fi
fault=$(grep -o 'FAULT_AT [0-9]*' "$out" | head -1 | cut -d' ' -f2)
[[ -n "$fault" ]] || fail "no FAULT_AT line"
ms=$((end - fault))
echo "job ended ${ms} ms after the fault (rc $rc)"
((ms <= 10000)) || fail "the job took ${ms} ms after the fault to end (limit 10000)"
case $scenario in
  kill_worker) grep -q 'node 1 .*global rank 3.*killed by signal 9' "$out" || fail "no message naming node 1 and rank 3" ;;
  kill_node) grep -qi 'signal 9\|killed' "$out" || fail "no message about the killed node process" ;;
  mismatch) grep -q 'different calls' "$out" || fail "no message about different calls" ;;
  mismatch_caught)
    for k in 0 1; do
      grep -q "^node $k: caught: .*different calls.*cannot be forked again" "$out" ||
        fail "node $k: no caught error about different calls saying the runtime cannot be forked again"
      grep -q "^node $k: next call: .*refused.*end the job and start it again from the checkpoint" "$out" ||
        fail "node $k: the next call's refusal does not say to end the job and restart from a checkpoint"
      grep -q "^node $k: closed" "$out" || fail "node $k did not close"
    done
    # Advice that does not work across nodes.
    ! grep -q 'fork() again' "$out" || fail "a message advises fork() again across nodes" ;;
  heal)
    for k in 0 1; do
      grep -q "^node $k: caught: .*signal 9" "$out" || fail "node $k: no caught error naming the killed worker"
      grep -q "^node $k: healed" "$out" || fail "node $k did not heal"
      grep -q "^node $k: closed" "$out" || fail "node $k did not close after training on"
    done ;;
  heal_missing)
    grep -q "^node 0: .*heal.*timed out.*every node to catch the failure and call heal()" "$out" ||
      fail "node 0's heal() did not time out saying every node must call heal()"
    ! grep -q "^node 0: healed" "$out" || fail "node 0 healed without node 1" ;;
esac
# Live processes of the program (zombies, already dead and waiting for
# their new parent to reap them, hold nothing).
name=$(basename "$prog" | cut -c1-15)  # the kernel's process name (comm) is 15 characters
left() { ps -eo stat=,pid=,comm= | awk -v n="$name" '$3 == n && $1 !~ /^Z/'; }
for _ in 1 2 3 4 5 6 7 8 9 10; do [[ -z "$(left)" ]] && break; sleep 0.2; done
if [[ -n "$(left)" ]]; then
  left
  fail "processes of the job are left"
fi
rm -f "$out"
echo "PASS ($scenario)"

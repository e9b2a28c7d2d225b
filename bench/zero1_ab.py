#!/usr/bin/env python3
"""bench/zero1_ab.py: the sharded optimizer (ZeRO-1) against the unsharded step, A/B.

    python3 bench/zero1_ab.py [--bin build/bin] [--reps 7] [--epochs 1] [--model mlp]
                              [--optimizer adam] [--workers 2] [--train-limit N] [--json out.json]

Issue 29's measure, in one run on one machine. Each rep runs, one after the
other (never at once, so they do not share the cores):

  cap       = the sgemm cap of bench/scaling_cap.py (what the BLAS alone
              allows two processes against one);
  w1        = samples/s of synk-mnist --model M --optimizer O --workers 1;
  A, B      = samples/s of the same with --workers W, unsharded (A) and
              --shard-optimizer (B), in alternating order (A first in odd
              reps, B first in even ones), so a drift of the machine
              favours neither;
  B / A     = the sharded step's speed against the unsharded one;
  figure    = (w / w1) / cap for each: the share of the BLAS limit kept.

Prints one markdown row per rep and the medians, and each side's
optimizer_state_bytes_per_rank. Needs python3 alone; Release binaries.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scaling_cap import gemm_ms_per_250, run_json  # noqa: E402


def mnist(binary, a, workers, shard, path):
    cmd = [binary, "--model", a.model, "--optimizer", a.optimizer, "--workers", str(workers), "--epochs",
           str(a.epochs)]
    if a.train_limit:
        cmd += ["--train-limit", str(a.train_limit)]
    if shard:
        cmd.append("--shard-optimizer")
    return run_json(cmd, path)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", default="build/bin", help="folder with synk-gemm and synk-mnist")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--model", default="mlp", choices=["mlp", "cnn", "resnet", "vit"])
    p.add_argument("--optimizer", default="adam", choices=["sgd", "momentum", "nesterov", "adam", "rmsprop", "adamw"])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--train-limit", type=int, default=0, help="synk-mnist --train-limit (0: every image)")
    p.add_argument("--json", help="also write every rep and the medians here")
    a = p.parse_args()
    if a.reps < 1 or a.epochs < 1 or a.workers < 2:
        sys.exit("zero1_ab.py: --reps and --epochs must be at least 1, --workers at least 2")
    gemm = os.path.join(a.bin, "synk-gemm")
    binary = os.path.join(a.bin, "synk-mnist")
    for b in (gemm, binary):
        if not os.access(b, os.X_OK):
            sys.exit(f"zero1_ab.py: {b} not found (build first, or pass --bin)")
    reps, state = [], {}
    print("| rep | cap | w1 samples/s | A unsharded | B sharded | B / A | A figure | B figure |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "out.json")
        for r in range(1, a.reps + 1):
            cap = 2 * gemm_ms_per_250(gemm, 500, 1, path) / gemm_ms_per_250(gemm, 250, 2, path)
            w1 = mnist(binary, a, 1, False, path)["samples_per_sec"]
            got = {}
            for shard in ((False, True) if r % 2 else (True, False)):
                j = mnist(binary, a, a.workers, shard, path)
                got[shard] = j["samples_per_sec"]
                state["sharded" if shard else "unsharded"] = j["optimizer_state_bytes_per_rank"]
            A, B = got[False], got[True]
            rep = {"cap": cap, "w1": w1, "A": A, "B": B, "B_over_A": B / A, "A_figure": A / w1 / cap,
                   "B_figure": B / w1 / cap}
            reps.append(rep)
            print(f"| {r} | {cap:.3f} | {w1:.0f} | {A:.0f} | {B:.0f} | {B / A:.3f} | {rep['A_figure']:.3f} "
                  f"| {rep['B_figure']:.3f} |", flush=True)
    med = {k: statistics.median(x[k] for x in reps) for k in reps[0]}
    print(f"| median | {med['cap']:.3f} | {med['w1']:.0f} | {med['A']:.0f} | {med['B']:.0f} "
          f"| **{med['B_over_A']:.3f}** | **{med['A_figure']:.3f}** | **{med['B_figure']:.3f}** |")
    print(f"optimizer_state_bytes_per_rank: unsharded {state['unsharded']}, sharded {state['sharded']} "
          f"({state['sharded'] / state['unsharded']:.4f} of it)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "reps": reps, "median": med, "optimizer_state_bytes_per_rank": state}, f,
                      indent=1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""bench/scaling_cap.py: 2-worker scaling of synk-mnist against the sgemm cap.

    python3 bench/scaling_cap.py [--bin build/bin] [--reps 6] [--epochs 1] [--model mlp]
                                 [--train-limit N] [--json out.json]

The measure of issue 13 point 4, in one run on one machine. Each rep runs,
one after the other (never at once, so they do not share the cores):

  cap     = 2 x (synk-gemm --rows 500 --copies 1: ms per 250 rows)
              / (synk-gemm --rows 250 --copies 2: ms per 250 rows)
            what the BLAS alone allows two processes against one;
  w1, w2  = samples/s of synk-mnist --model mlp --workers 1 and 2 (or
            --model M: the cap stays the MLP's sgemm, the machine's BLAS
            limit for two processes, as a yardstick for any model);
  figure  = (w2 / w1) / cap: the share of that BLAS limit the runtime keeps.

Prints one markdown row per rep and the medians. Needs python3 alone
(no numpy); the binaries are those of a Release build.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile


def run_json(cmd, path):
    subprocess.run(cmd + ["--json", path], check=True, stdout=subprocess.DEVNULL)
    with open(path) as f:
        return json.load(f)


def gemm_ms_per_250(binary, rows, copies, path):
    j = run_json([binary, "--rows", str(rows), "--copies", str(copies)], path)
    return j["rows"][0]["ms_per_250_rows"]


def mnist_samples_per_sec(binary, model, workers, epochs, train_limit, path):
    extra = ["--train-limit", str(train_limit)] if train_limit else []
    j = run_json([binary, "--model", model, "--workers", str(workers), "--epochs", str(epochs)] + extra, path)
    return j["samples_per_sec"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", default="build/bin", help="folder with synk-gemm and synk-mnist")
    p.add_argument("--reps", type=int, default=6)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--model", default="mlp", choices=["mlp", "cnn", "resnet", "vit"])
    p.add_argument("--train-limit", type=int, default=0, help="synk-mnist --train-limit (0: every image)")
    p.add_argument("--json", help="also write every rep and the medians here")
    a = p.parse_args()
    if a.reps < 1 or a.epochs < 1:
        sys.exit("scaling_cap.py: --reps and --epochs must be at least 1")
    gemm = os.path.join(a.bin, "synk-gemm")
    mnist = os.path.join(a.bin, "synk-mnist")
    for b in (gemm, mnist):
        if not os.access(b, os.X_OK):
            sys.exit(f"scaling_cap.py: {b} not found (build first, or pass --bin)")
    reps = []
    print("| rep | cap | w1 samples/s | w2 samples/s | w2 / w1 | (w2 / w1) / cap |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "out.json")
        for r in range(1, a.reps + 1):
            one = gemm_ms_per_250(gemm, 500, 1, path)
            two = gemm_ms_per_250(gemm, 250, 2, path)
            cap = 2 * one / two
            w1 = mnist_samples_per_sec(mnist, a.model, 1, a.epochs, a.train_limit, path)
            w2 = mnist_samples_per_sec(mnist, a.model, 2, a.epochs, a.train_limit, path)
            rep = {"cap": cap, "w1": w1, "w2": w2, "scaling": w2 / w1, "figure": w2 / w1 / cap}
            reps.append(rep)
            print(f"| {r} | {cap:.3f} | {w1:.0f} | {w2:.0f} | {w2 / w1:.3f} | {rep['figure']:.3f} |", flush=True)
    med = {k: statistics.median(x[k] for x in reps) for k in reps[0]}
    print(f"| median | {med['cap']:.3f} | {med['w1']:.0f} | {med['w2']:.0f} | {med['scaling']:.3f} "
          f"| **{med['figure']:.3f}** |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"reps": reps, "median": med}, f, indent=1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""PyTorch on the GPU as the peer of `synk-mnist --device cuda` (bench/mnist).

Trains the same Lasagne MNIST example models (mlp, cnn: layers, Glorot-uniform
init, zero biases, mean cross entropy, SGD lr 0.01 with Nesterov momentum 0.9,
batch 500, reshuffled every epoch; helpers imported from torch_mnist.py) on
one CUDA device, twice:

  eager   the ordinary training loop;
  graphs  the whole training step (forward, backward, optimizer step) captured
          once as a CUDA graph with static input tensors and replayed for
          every batch (torch.cuda.CUDAGraph; the documented whole-network
          capture recipe: warm-up on a side stream, then capture).

With --synk PATH it also runs `synk-mnist --device cuda --workers 1` with the
same flags and prints the three throughputs side by side (issue 4's targets:
synk >= 2x eager and >= 1x graphs for the mlp, >= 1.2x eager for the cnn).

Fairness notes. The data set is copied to the GPU once and batches are
gathered there (PyTorch's best case; synk-mnist copies each batch from host
memory). Shuffling and batch gathering count as training time, loading and
evaluation do not; each epoch ends with torch.cuda.synchronize() before the
clock is read. FP32 everywhere by default: PyTorch's cuDNN TF32 default is
turned off unless --tf32, which is then passed to synk-mnist too. The
graphs mode's warm-up steps (needed before capture) train on real batches;
parameters and momentum buffers are then restored in place, so both modes
start from the same initial state.

Accuracies (test_accuracy) are fractions in [0, 1].
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_mnist as tm  # noqa: E402  (same folder: data loading, models, evaluation)


def train_one(name: str, data, args, mode: str) -> dict:
    """Trains model `name` on the GPU; mode is 'eager' or 'graphs'."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    dev = torch.device("cuda", args.device)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x_train, y_train, x_test, y_test = (torch.from_numpy(np.ascontiguousarray(a)).to(dev) for a in data)

    model = tm.build_model(name).to(dev)
    n = x_train.shape[0]
    batches = n // args.batch  # last partial batch dropped, as synk-mnist
    if batches == 0:
        raise ValueError(f"batch {args.batch} is larger than the training set ({n})")
    opt, sched = tm.make_optimizer(name, model, batches, args.epochs)
    if mode == "graphs" and sched is not None:
        # A captured step replays the learning rate it was captured with.
        raise ValueError(f"{name}: its learning-rate schedule changes every step; run it with --mode eager")

    step = None
    if mode == "graphs":
        static_x = torch.empty((args.batch,) + tuple(x_train.shape[1:]), dtype=x_train.dtype, device=dev)
        static_y = torch.empty((args.batch,), dtype=y_train.dtype, device=dev)
        params0 = [p.detach().clone() for p in model.parameters()]
        # Warm-up on a side stream (lets cuBLAS/cuDNN pick algorithms and the
        # optimizer create its momentum buffers before capture).
        model.train()
        side = torch.cuda.Stream(device=dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            for i in range(3):
                static_x.copy_(x_train[i * args.batch:(i + 1) * args.batch])
                static_y.copy_(y_train[i * args.batch:(i + 1) * args.batch])
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(static_x), static_y).backward()
                opt.step()
        torch.cuda.current_stream(dev).wait_stream(side)
        # Back to the initial state, in place (the graph will capture these tensors).
        with torch.no_grad():
            for p, p0 in zip(model.parameters(), params0):
                p.copy_(p0)
            for p in model.parameters():
                buf = opt.state[p].get("momentum_buffer")
                if buf is not None:
                    buf.zero_()  # first step: buf = 0.9 * 0 + g = g, as with no buffer
            for m in model.modules():  # batch norm's running statistics, as before the warm-up
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.reset_running_stats()
        graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)  # gradients are allocated from the graph's pool
        with torch.cuda.graph(graph):
            static_loss = F.cross_entropy(model(static_x), static_y)
            static_loss.backward()
            opt.step()

        def step(xb, yb):
            static_x.copy_(xb)
            static_y.copy_(yb)
            graph.replay()
            return static_loss
    else:
        def step(xb, yb):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            return loss

    epoch_seconds, train_loss = [], []
    te_loss = te_acc = float("nan")
    print(f"[torch {name} {mode}] {torch.cuda.get_device_name(dev)} batch={args.batch} "
          f"epochs={args.epochs} batches/epoch={batches}", flush=True)
    for epoch in range(args.epochs):
        model.train()
        torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        perm = torch.from_numpy(rng.permutation(n)).to(dev)
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        for b in range(batches):
            idx = perm[b * args.batch:(b + 1) * args.batch]
            loss_sum += step(x_train[idx], y_train[idx]).detach()
        torch.cuda.synchronize(dev)
        dt = time.perf_counter() - t0
        epoch_seconds.append(dt)
        train_loss.append(loss_sum.item() / batches)
        te_loss, te_acc = tm.evaluate(model, x_test, y_test, args.batch)
        print(f"[torch {name} {mode}] epoch {epoch + 1}/{args.epochs}  {dt:7.2f} s  "
              f"{batches * args.batch / dt:9.1f} samples/s  train_loss {train_loss[-1]:.4f}  "
              f"test_loss {te_loss:.4f}  test_acc {100 * te_acc:.2f}%", flush=True)

    total = sum(epoch_seconds)
    return {
        "framework": "pytorch",
        "mode": mode,
        "model": name,
        "device": "cuda",
        "gpu": gpu_info(args.device),
        "tf32": args.tf32,
        "workers": 1,
        "epochs": args.epochs,
        "batch": args.batch,
        "samples_per_sec": batches * args.batch * args.epochs / total if total > 0 else 0.0,
        "epoch_seconds": epoch_seconds,
        "train_loss": train_loss,
        "test_loss": te_loss,
        "test_accuracy": te_acc,
    }


def gpu_info(device: int) -> dict:
    import torch

    p = torch.cuda.get_device_properties(device)
    return {"name": p.name, "memory_bytes": p.total_memory,
            "compute_capability": f"{p.major}.{p.minor}",
            "torch": torch.__version__, "torch_cuda": torch.version.cuda}


def run_synk(binary: str, name: str, args) -> dict | None:
    """Runs synk-mnist --device cuda with the same flags; its JSON, or None on failure."""
    env = dict(os.environ)
    if args.device != 0:  # synk-mnist uses device 0 of the visible ones
        env["CUDA_VISIBLE_DEVICES"] = str(args.device)
    return tm.run_synk(binary, name, args, device="cuda", extra=["--tf32"] if args.tf32 else [], env=env)


def print_table(rows) -> None:
    head = (f"{'model':<6} {'synk sps':>11} {'eager sps':>11} {'graphs sps':>11} "
            f"{'synk/eager':>11} {'synk/graphs':>12} {'synk acc':>9} {'eager acc':>10} {'graphs acc':>11}")
    print()
    print(head)
    print("-" * len(head))
    for name, s, e, g in rows:
        s_sps = float(s["samples_per_sec"]) if s else float("nan")
        s_acc = tm.as_fraction(s.get("test_accuracy")) if s else None
        e_sps, g_sps = e["samples_per_sec"], g["samples_per_sec"]
        r_e = s_sps / e_sps if e_sps > 0 else float("nan")
        r_g = s_sps / g_sps if g_sps > 0 else float("nan")
        s_acc_txt = f"{100 * s_acc:8.2f}%" if s_acc is not None else f"{'-':>9}"
        print(f"{name:<6} {s_sps:11.1f} {e_sps:11.1f} {g_sps:11.1f} {r_e:11.3f} {r_g:12.3f} "
              f"{s_acc_txt} {100 * e['test_accuracy']:9.2f}% {100 * g['test_accuracy']:10.2f}%")
    print("(sps = training samples/s; synk = synk-mnist --device cuda --workers 1)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    tm.add_common_args(p)
    p.add_argument("--device", type=int, default=0, help="CUDA device ordinal")
    p.add_argument("--mode", choices=["eager", "graphs", "both"], default="both",
                   help="PyTorch eager loop, whole-step CUDA graph, or both")
    p.add_argument("--tf32", action="store_true", help="allow TF32 in PyTorch and pass --tf32 to synk-mnist")
    p.add_argument("--json", metavar="FILE", help="write all results (PyTorch and, with --synk, synk) as JSON")
    args = p.parse_args(argv)
    tm.check_common_args(p, args)
    if args.device < 0:
        p.error("--device must be non-negative")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("torch_mnist_gpu: PyTorch sees no CUDA device", file=sys.stderr)
        return 1
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32

    t0 = time.perf_counter()
    data = tm.load_fashion_mnist(args.data)
    if args.train_limit:
        data = (data[0][:args.train_limit], data[1][:args.train_limit]) + tuple(data[2:])
    print(f"loaded {args.data}: train {data[0].shape}, test {data[2].shape} in {time.perf_counter() - t0:.2f} s "
          f"(torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(args.device)})",
          flush=True)

    models = {"both": ["mlp", "cnn"], "all": ["mlp", "cnn", "resnet", "vit"]}.get(args.model, [args.model])
    modes = ["eager", "graphs"] if args.mode == "both" else [args.mode]
    results, rows = [], []
    for name in models:
        # One program at a time on the GPU.
        synk_result = run_synk(args.synk, name, args) if args.synk else None
        if synk_result is not None:
            results.append(synk_result)
        by_mode = {}
        for mode in modes:
            if mode == "graphs" and name in ("resnet", "vit"):
                print(f"[torch {name} graphs] skipped: the schedule changes the learning rate every step", flush=True)
                continue
            r = train_one(name, data, args, mode)
            print(f"[torch {name} {mode}] {r['samples_per_sec']:.1f} samples/s, "
                  f"test_acc {100 * r['test_accuracy']:.2f}%", flush=True)
            results.append(r)
            by_mode[mode] = r
        if args.synk and len(by_mode) == 2:
            rows.append((name, synk_result, by_mode["eager"], by_mode["graphs"]))

    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
    if rows:
        print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

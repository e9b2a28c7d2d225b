#!/usr/bin/env python3
"""PyTorch peer for the synk MNIST-style benchmark (bench/mnist, `synk-mnist`).

Trains the two Lasagne MNIST example models (mlp, cnn) on Fashion-MNIST exactly
the way synk-mnist does (same layers, Glorot-uniform init, zero biases, mean
cross entropy, SGD lr 0.01 with Nesterov momentum 0.9, batch 500, reshuffled
every epoch), and the two modern ones of bench/mnist/models.hpp (resnet: a
small ResNet with batch norm, SGD with momentum; vit: a small pre-LN Vision
Transformer, AdamW; both with linear warm-up and cosine decay) with the same layers,
initialisation, optimizer and schedule, on the CPU with one thread, so that the samples/s of the two
programs can be compared fairly: synk's CPU executor is single-threaded
OpenBLAS, so PyTorch is pinned to one intra-op and one inter-op thread.

With --synk PATH it also runs the synk-mnist binary with the same flags and
prints both programs' throughput and accuracy side by side.

The data is read straight from the IDX .gz files with gzip + numpy (no
torchvision), pixels scaled by 1/256 like synk's IDX reader path.

Accuracies (test_accuracy) are fractions in [0, 1].

glibc malloc: by default PyTorch's per-op activation buffers (megabytes each)
are above glibc's mmap threshold, so every op maps fresh zeroed pages and
unmaps them again; on the cnn this doubles the epoch time (millions of page
faults, sys time ~ user time). So that synk is compared with a well-configured
PyTorch rather than a handicapped one, the script raises the mmap and trim
thresholds with mallopt() before training (--malloc tuned, the default; the
same effect as MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_). --malloc default
measures PyTorch as it runs out of the box.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
# IDX type codes (third byte of the magic number) -> numpy dtype, big-endian.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
    """Reads one (optionally gzipped) IDX file into an array of its own shape."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic)")
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02x}")
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[code])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: payload is {len(raw) - header} bytes, dims {dims} need {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def load_fashion_mnist(data_dir: str):
    """Returns (x_train, y_train, x_test, y_test): float32 [N,1,28,28] in [0,1), int64 labels."""
    arrays = {}
    for key, name in IDX_FILES.items():
        path = os.path.join(data_dir, name)
        if not os.path.exists(path) and os.path.exists(path[:-3]):
            path = path[:-3]  # accept uncompressed copies too
        arrays[key] = read_idx(path)

    def images(a):
        return (a.astype(np.float32) / np.float32(256.0)).reshape(-1, 1, a.shape[1], a.shape[2])

    return (images(arrays["train_images"]), arrays["train_labels"].astype(np.int64),
            images(arrays["test_images"]), arrays["test_labels"].astype(np.int64))


def tune_malloc() -> str:
    """Keeps freed buffers in the heap (see the file comment); returns what was done."""
    import ctypes
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from <malloc.h>
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, 256 << 20) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1
    except (OSError, AttributeError):
        ok = False
    if not ok:
        print("warning: could not tune glibc malloc (not glibc?); measuring the default allocator",
              file=sys.stderr)
    return "tuned" if ok else "default"


def build_resnet():
    """synk's "resnet" (bench/mnist/models.cpp, synk::nn::residual_block)."""
    import torch.nn as nn
    import torch.nn.functional as F

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            h = F.relu(self.bn1(self.conv1(x)))
            h = self.bn2(self.conv2(h))
            return F.relu(h + (x if self.down is None else self.down(x)))

    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        BasicBlock(16, 16, 1), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(64, 10),
    )
    for m in model.modules():
        if isinstance(m, nn.Conv2d):  # synk::nn::kaiming_normal_fan_out
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight, gain=1.0)
            nn.init.zeros_(m.bias)
    return model


def build_vit():
    """synk's "vit" (bench/mnist/models.cpp, synk::nn::transformer_block)."""
    import math

    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    P, D, TOKENS, DEPTH, HEADS, HIDDEN = 7, 64, 16, 4, 4, 128

    class Attention(nn.Module):  # synk::nn::multi_head_attention: separate q, k, v projections
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v, self.proj = (nn.Linear(D, D) for _ in range(4))

        def forward(self, x):
            n, t, _ = x.shape
            split = lambda y: y.reshape(n, t, HEADS, D // HEADS).transpose(1, 2)
            q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
            att = torch.softmax(q @ k.transpose(-2, -1) * (1.0 / math.sqrt(D // HEADS)), dim=-1)
            return self.proj((att @ v).transpose(1, 2).reshape(n, t, D))

    class Block(nn.Module):  # pre-LN
        def __init__(self):
            super().__init__()
            self.ln1, self.attn, self.ln2 = nn.LayerNorm(D), Attention(), nn.LayerNorm(D)
            self.fc1, self.fc2 = nn.Linear(D, HIDDEN), nn.Linear(HIDDEN, D)

        def forward(self, x):
            h = x + self.attn(self.ln1(x))
            return h + self.fc2(F.gelu(self.fc1(self.ln2(h))))

    class ViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = nn.Linear(P * P, D)
            self.cls = nn.Parameter(torch.empty(1, 1, D).normal_(0.0, 0.02))
            self.pos = nn.Parameter(torch.empty(TOKENS + 1, D).normal_(0.0, 0.02))
            self.blocks = nn.Sequential(*(Block() for _ in range(DEPTH)))
            self.ln, self.head = nn.LayerNorm(D), nn.Linear(D, 10)

        def forward(self, x):
            n = x.shape[0]
            patches = x.reshape(n, 28 // P, P, 28 // P, P).permute(0, 1, 3, 2, 4).reshape(n, TOKENS, P * P)
            h = torch.cat([self.cls.expand(n, 1, D), self.patch(patches)], dim=1) + self.pos
            return self.head(self.ln(self.blocks(h))[:, 0])

    model = ViT()
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight, gain=1.0)
            nn.init.zeros_(m.bias)
    return model


def make_optimizer(name: str, model, steps_per_epoch: int, epochs: int):
    """The optimizer (and per-step LR scheduler, or None) synk-mnist trains `name` with (models.hpp)."""
    import math

    import torch

    if name in ("mlp", "cnn"):
        return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True), None
    # resnet and vit: Schedule::warmup_cosine (min_lr 0); the factor of the
    # s-th step (1-based), as synk computes it in the graph.
    total = max(2, steps_per_epoch * epochs)
    warmup = max(1, min(steps_per_epoch, total // 5))

    def factor(k: int) -> float:  # k = steps taken so far; this step is s = k + 1
        s = k + 1
        if s <= warmup:
            return s / warmup
        if s > total:
            return 0.0
        return 0.5 * (1.0 + math.cos(math.pi * (s - warmup) / max(1, total - warmup)))

    if name == "resnet":
        # synk's momentum keeps v <- mu v - lr_s g, p <- p + v (Lasagne's form):
        # with a constant lr it is PyTorch's SGD momentum; with a schedule the
        # two differ slightly (PyTorch scales the whole buffer by today's lr).
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def build_model(name: str):
    import torch.nn as nn

    if name == "resnet":
        return build_resnet()
    if name == "vit":
        return build_vit()

    if name == "mlp":
        model = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.2),
            nn.Linear(784, 800), nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(800, 800), nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(800, 10),
        )
    elif name == "cnn":
        # 28 -> conv5 -> 24 -> pool -> 12 -> conv5 -> 8 -> pool -> 4; 32*4*4 = 512.
        model = nn.Sequential(
            nn.Conv2d(1, 32, 5), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 5), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(0.5),
            nn.Linear(512, 256), nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(256, 10),
        )
    else:
        raise ValueError(f"unknown model {name!r} (expected mlp, cnn, resnet or vit)")
    # Lasagne's defaults: GlorotUniform (gain 1) weights, zero biases. PyTorch's
    # default (kaiming-uniform) would make the two runs start differently.
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight, gain=1.0)
            nn.init.zeros_(m.bias)
    return model


def evaluate(model, x, y, batch: int):
    import torch
    import torch.nn.functional as F

    model.eval()
    total_loss, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, x.shape[0], batch):
            xb, yb = x[start:start + batch], y[start:start + batch]
            out = model(xb)
            total_loss += F.cross_entropy(out, yb, reduction="sum").item()
            correct += (out.argmax(dim=1) == yb).sum().item()
    n = x.shape[0]
    return total_loss / n, correct / n


def train_one(name: str, data, args) -> dict:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x_train, y_train, x_test, y_test = (torch.from_numpy(np.ascontiguousarray(a)) for a in data)

    model = build_model(name)
    n = x_train.shape[0]
    batches = n // args.batch  # last partial batch dropped
    if batches == 0:
        raise ValueError(f"batch {args.batch} is larger than the training set ({n})")
    opt, sched = make_optimizer(name, model, batches, args.epochs)

    epoch_seconds, train_loss = [], []
    print(f"[torch {name}] threads={torch.get_num_threads()} interop={torch.get_num_interop_threads()} "
          f"batch={args.batch} epochs={args.epochs} batches/epoch={batches}", flush=True)
    for epoch in range(args.epochs):
        model.train()
        # Shuffling and batch gathering count as training time (synk does them too);
        # loading/decoding the files and evaluation do not.
        t0 = time.perf_counter()
        perm = torch.from_numpy(rng.permutation(n))
        loss_sum = torch.zeros((), dtype=torch.float64)
        for b in range(batches):
            idx = perm[b * args.batch:(b + 1) * args.batch]
            xb, yb = x_train[idx], y_train[idx]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            loss_sum += loss.detach()
        dt = time.perf_counter() - t0
        epoch_seconds.append(dt)
        train_loss.append(loss_sum.item() / batches)
        te_loss, te_acc = evaluate(model, x_test, y_test, args.batch)
        print(f"[torch {name}] epoch {epoch + 1}/{args.epochs}  {dt:7.2f} s  "
              f"{batches * args.batch / dt:9.1f} samples/s  train_loss {train_loss[-1]:.4f}  "
              f"test_loss {te_loss:.4f}  test_acc {100 * te_acc:.2f}%", flush=True)

    test_loss, test_acc = te_loss, te_acc  # the model after the last epoch
    total = sum(epoch_seconds)
    return {
        "framework": "pytorch",
        "model": name,
        "device": "cpu",
        "workers": 1,
        "threads": torch.get_num_threads(),
        "malloc": args.malloc,
        "epochs": args.epochs,
        "batch": args.batch,
        "samples_per_sec": batches * args.batch * args.epochs / total if total > 0 else 0.0,
        "epoch_seconds": epoch_seconds,
        "train_loss": train_loss,
        "test_loss": test_loss,
        "test_accuracy": test_acc,
    }


def run_synk(binary: str, name: str, args, device: str = "cpu", workers: int = 1, extra=(), env=None) -> dict | None:
    """Runs synk-mnist with the same flags on `device` with `workers` ranks; its JSON, or None on failure."""
    fd, json_path = tempfile.mkstemp(prefix=f"synk-mnist-{device}-{name}-", suffix=".json")
    os.close(fd)
    cmd = [binary, "--model", name, "--epochs", str(args.epochs), "--batch", str(args.batch),
           "--workers", str(workers), "--device", device, "--data", args.data, "--seed", str(args.seed),
           "--json", json_path] + (["--train-limit", str(args.train_limit)] if args.train_limit else []) + list(extra)
    print(f"[synk {name}] {' '.join(cmd)}", flush=True)
    try:
        proc = subprocess.run(cmd, env=env)
        if proc.returncode != 0:
            print(f"[synk {name}] synk-mnist exited with status {proc.returncode}", file=sys.stderr)
            return None
        with open(json_path) as f:
            result = json.load(f)
        if isinstance(result, list):  # tolerate a list-shaped file
            result = next((r for r in result if r.get("model") == name), result[0] if result else None)
        return result
    except (OSError, ValueError) as e:
        print(f"[synk {name}] could not run or read synk-mnist: {e}", file=sys.stderr)
        return None
    finally:
        os.unlink(json_path)


def as_fraction(acc):
    # The schema does not pin the unit; accept a percentage from the other side.
    if acc is None:
        return None
    acc = float(acc)
    return acc / 100.0 if acc > 1.0 else acc


def print_table(rows) -> None:
    head = f"{'model':<6} {'synk samples/s':>15} {'torch samples/s':>16} {'synk/torch':>11} " \
           f"{'synk acc':>9} {'torch acc':>10} {'acc diff':>9}"
    print()
    print(head)
    print("-" * len(head))
    for name, s, t in rows:
        t_sps, t_acc = t["samples_per_sec"], as_fraction(t["test_accuracy"])
        if s is None:
            print(f"{name:<6} {'failed':>15} {t_sps:16.1f} {'-':>11} {'-':>9} {100 * t_acc:9.2f}% {'-':>9}")
            continue
        s_sps, s_acc = float(s.get("samples_per_sec", 0.0)), as_fraction(s.get("test_accuracy"))
        ratio = s_sps / t_sps if t_sps > 0 else float("nan")
        s_acc_txt = f"{100 * s_acc:8.2f}%" if s_acc is not None else f"{'-':>9}"
        diff_txt = f"{100 * (s_acc - t_acc):+8.2f}p" if s_acc is not None else f"{'-':>9}"
        print(f"{name:<6} {s_sps:15.1f} {t_sps:16.1f} {ratio:11.3f} {s_acc_txt} {100 * t_acc:9.2f}% {diff_txt}")
    print("(acc diff = synk - torch, percentage points)")


def add_common_args(p: argparse.ArgumentParser) -> None:
    """The flags every peer script shares with synk-mnist."""
    p.add_argument("--model", choices=["mlp", "cnn", "resnet", "vit", "both", "all"], default="both",
                   help="both: mlp and cnn; all: the four")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--data", default=DEFAULT_DATA, help="folder with the Fashion-MNIST IDX .gz files")
    p.add_argument("--synk", metavar="PATH", help="synk-mnist binary to run with the same flags for comparison")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 epoch (overrides --epochs)")
    p.add_argument("--train-limit", type=int, default=0,
                   help="use only the first N training images, as synk-mnist --train-limit (0: all)")


def check_common_args(p: argparse.ArgumentParser, args) -> None:
    if args.quick:
        args.epochs = 1
    if args.epochs < 1 or args.batch < 1:
        p.error("--epochs and --batch must be positive")
    if args.train_limit < 0:
        p.error("--train-limit must not be negative")
    if args.synk and not os.access(args.synk, os.X_OK):
        p.error(f"--synk {args.synk}: not an executable file")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_args(p)
    p.add_argument("--threads", type=int, default=1, help="PyTorch intra-op threads (synk's CPU executor uses 1)")
    p.add_argument("--json", metavar="FILE", help="write PyTorch results (a list for --model both)")
    p.add_argument("--malloc", choices=["tuned", "default"], default="tuned",
                   help="tuned: raise glibc's mmap/trim thresholds (see file comment); default: leave as is")
    args = p.parse_args(argv)
    check_common_args(p, args)
    if args.threads < 1:
        p.error("--threads must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    # Must happen before any parallel work, or set_num_interop_threads raises.
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)

    if args.malloc == "tuned":
        args.malloc = tune_malloc()

    t0 = time.perf_counter()
    data = load_fashion_mnist(args.data)
    if args.train_limit:
        data = (data[0][:args.train_limit], data[1][:args.train_limit]) + tuple(data[2:])
    print(f"loaded {args.data}: train {data[0].shape}, test {data[2].shape} "
          f"in {time.perf_counter() - t0:.2f} s (torch {torch.__version__}, malloc {args.malloc})", flush=True)

    models = {"both": ["mlp", "cnn"], "all": ["mlp", "cnn", "resnet", "vit"]}.get(args.model, [args.model])
    results, rows = [], []
    for name in models:
        # One program at a time, so they never compete for the cores.
        synk_result = run_synk(args.synk, name, args) if args.synk else None
        r = train_one(name, data, args)
        print(f"[torch {name}] {r['samples_per_sec']:.1f} samples/s over {args.epochs} epoch(s), "
              f"test_loss {r['test_loss']:.4f}, test_acc {100 * r['test_accuracy']:.2f}%", flush=True)
        results.append(r)
        rows.append((name, synk_result, r))

    if args.json:
        with open(args.json, "w") as f:
            json.dump(results if len(results) > 1 else results[0], f, indent=2)
            f.write("\n")
    if args.synk:
        print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

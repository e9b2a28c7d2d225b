#!/usr/bin/env python3
"""PyTorch DistributedDataParallel (gloo, CPU) peer for `synk-mnist --workers N`.

Trains the same models as torch_mnist.py (imported from this folder) with N
processes of one thread each: every epoch all ranks draw the same shuffled
order, each takes its contiguous share of every global batch of --batch rows
(so the global batch and the optimizer match synk's), DDP averages the
gradients over gloo, and rank 0 times the epochs and evaluates the model.

    python3 bench/peers/torch_ddp_mnist.py --model mlp --workers 2 --epochs 10 \
        --synk build/bin/synk-mnist --json bench/results/torch_ddp.json

With --synk it first runs `synk-mnist --workers N` with the same flags and
prints both programs' samples/s and accuracy side by side.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_mnist as peer  # noqa: E402  (same folder)


def worker(rank: int, args, data, result_path: str) -> None:
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    dist.init_process_group("gloo", rank=rank, world_size=args.workers)
    torch.manual_seed(args.seed)  # equal initial weights on every rank
    rng = np.random.default_rng(args.seed)  # equal shuffles on every rank
    x_train, y_train, x_test, y_test = (torch.from_numpy(np.ascontiguousarray(a)) for a in data)
    model = DDP(peer.build_model(args.model))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    n = x_train.shape[0]
    batches = n // args.batch
    # Rank r's rows of each global batch: the remainder goes to the lowest ranks (as synk).
    base, extra = divmod(args.batch, args.workers)
    lo = rank * base + min(rank, extra)
    hi = lo + base + (1 if rank < extra else 0)
    epoch_seconds = []
    for epoch in range(args.epochs):
        model.train()
        dist.barrier()
        t0 = time.perf_counter()
        perm = torch.from_numpy(rng.permutation(n))
        for b in range(batches):
            idx = perm[b * args.batch + lo:b * args.batch + hi]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            loss.backward()  # DDP all-reduces (averages) the gradients here
            opt.step()
        dist.barrier()
        dt = time.perf_counter() - t0
        epoch_seconds.append(dt)
        if rank == 0:
            print(f"[torch-ddp {args.model} x{args.workers}] epoch {epoch + 1}/{args.epochs} {dt:7.2f} s "
                  f"{batches * args.batch / dt:9.1f} samples/s", flush=True)
    if rank == 0:
        test_loss, test_acc = peer.evaluate(model.module, x_test, y_test, args.batch)
        total = sum(epoch_seconds)
        res = {"framework": "pytorch-ddp-gloo", "model": args.model, "device": "cpu",
               "workers": args.workers, "threads": 1, "epochs": args.epochs, "batch": args.batch,
               "samples_per_sec": batches * args.batch * args.epochs / total,
               "epoch_seconds": epoch_seconds, "test_loss": test_loss, "test_accuracy": test_acc}
        with open(result_path, "w") as f:
            json.dump(res, f)
        print(f"[torch-ddp {args.model} x{args.workers}] {res['samples_per_sec']:.1f} samples/s, "
              f"test_acc {100 * test_acc:.2f}%", flush=True)
    dist.destroy_process_group()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--data", default=peer.DEFAULT_DATA)
    p.add_argument("--port", type=int, default=29517)
    p.add_argument("--synk", metavar="PATH", help="synk-mnist binary to run first with the same flags")
    p.add_argument("--json", metavar="FILE", help="write {'synk':..., 'torch_ddp':...} here")
    args = p.parse_args()

    import torch.multiprocessing as mp

    peer.tune_malloc()
    os.environ["MASTER_PORT"] = str(args.port)
    data = peer.load_fashion_mnist(args.data)
    out = {}
    if args.synk:
        synk_result = peer.run_synk(args.synk, args.model, args, workers=args.workers)
        if synk_result is not None:
            out["synk"] = synk_result
    import tempfile
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    mp.spawn(worker, args=(args, data, path), nprocs=args.workers, join=True)
    with open(path) as f:
        out["torch_ddp"] = json.load(f)
    os.unlink(path)
    t = out["torch_ddp"]
    print(f"\n{'':10}{'samples/s':>12}{'test acc':>10}")
    if "synk" in out:
        s = out["synk"]
        print(f"{'synk':10}{s['samples_per_sec']:12.1f}{s['test_accuracy']:10.4f}")
    print(f"{'torch-ddp':10}{t['samples_per_sec']:12.1f}{t['test_accuracy']:10.4f}")
    if "synk" in out:
        print(f"ratio synk / torch-ddp: {out['synk']['samples_per_sec'] / t['samples_per_sec']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

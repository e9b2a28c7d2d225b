#!/usr/bin/env python3
"""bench/plot.py — PNG charts from synk's benchmark results.

    bench/plot.py scaling  RESULTS.json...  -o scaling.png   # samples/s per worker count vs ideal
    bench/plot.py busbw    RESULTS...       -o busbw.png     # busbw per message size, synk vs OpenMPI
    bench/plot.py training RESULTS.json...  -o training.png  # loss and accuracy per epoch

Inputs are what the benchmarks write:
  scaling   synk-mnist --json files (or any JSON holding such records, e.g.
            bench/results/runtime_mnist_mlp_scaling_*.json): every object
            with "workers" and "samples_per_sec" is one run; runs with more
            than one BLAS thread are left out; several runs of one worker
            count give their median. The ideal line is the smallest worker
            count's throughput times workers / that count.
  busbw     synk-collectives --json files, and text logs holding
            nccl-tests-style tables (synk-collectives' stdout,
            bench/peers/mpi_allreduce.sh's OpenMPI table, nccl-tests): each
            table is named by the comment line above it (synk, OpenMPI,
            NCCL); tables of one name give the median per size.
  training  synk-mnist --json files and bench/peers/torch_mnist.py's (one
            run or a list): train loss per epoch, test loss and accuracy per
            epoch where recorded (synk-mnist writes test_*_per_epoch), else
            the final test accuracy at the last epoch.

matplotlib is needed for this script only, never for building or testing
synk. Install it in a virtual environment:

    python3 -m venv .venv && .venv/bin/pip install matplotlib
    .venv/bin/python bench/plot.py busbw bench/results/allreduce_cpu_vs_mpi_run*.log -o busbw.png
"""
import argparse
import json
import math
import os
import re
import statistics
import sys


def load_matplotlib():
    try:
        import matplotlib
    except ImportError:
        sys.exit("plot.py: matplotlib is not installed. Install it in a virtual environment:\n"
                 "  python3 -m venv .venv && .venv/bin/pip install matplotlib\n"
                 "  .venv/bin/python bench/plot.py ...")
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    plt.rcParams.update({"figure.dpi": 100, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def records(node):
    """Every JSON object in `node` (depth first), the node itself included."""
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from records(v)
    elif isinstance(node, list):
        for v in node:
            yield from records(v)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# ---- scaling ----------------------------------------------------------------------------

def scaling_points(paths):
    """{series name: {workers: [samples/s, ...]}}"""
    series = {}
    for path in paths:
        for r in records(read_json(path)):
            if not (number(r.get("workers")) and number(r.get("samples_per_sec"))):
                continue
            if r.get("threads", 1) != 1:
                continue  # one BLAS thread per process: the processes are the parallelism
            name = " ".join(str(r[k]) for k in ("framework", "model", "device") if k in r) or "synk"
            series.setdefault(name, {}).setdefault(int(r["workers"]), []).append(r["samples_per_sec"])
    return series


def plot_scaling(args, plt):
    series = scaling_points(args.inputs)
    if not series:
        sys.exit("plot.py scaling: no runs with 'workers' and 'samples_per_sec' in " + ", ".join(args.inputs))
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    top = 1
    for name, by_workers in sorted(series.items()):
        ws = sorted(by_workers)
        sps = [statistics.median(by_workers[w]) for w in ws]
        base_w, base = ws[0], sps[0]
        ideal = [base * w / base_w for w in ws]
        line, = ax.plot(ws, sps, "o-", label=f"{name} (median of {min(len(v) for v in by_workers.values())}+ runs)")
        ax.plot(ws, ideal, "--", color=line.get_color(), alpha=0.6, label=f"ideal: {base:,.0f} x workers/{base_w}")
        for w, s, i in zip(ws, sps, ideal):
            ax.annotate(f"{100 * s / i:.0f}%", (w, s), textcoords="offset points", xytext=(4, -12), fontsize=8)
        top = max(top, max(ws))
    ax.set_xlabel("workers (ranks)")
    ax.set_ylabel("samples/s")
    ax.set_xticks(range(1, top + 1))
    ax.set_ylim(bottom=0)
    ax.set_title(args.title or "Training throughput per worker count (% of ideal)")
    ax.legend(fontsize=8)
    return fig


# ---- busbw -------------------------------------------------------------------------------

def table_name(comment, fallback):
    c = comment.lower()
    if "openmpi" in c or "mpi_allreduce" in c:
        return "OpenMPI"
    if "synk" in c:
        return "synk"
    if "nccl" in c:
        return "NCCL"
    return fallback


def busbw_tables(path):
    """[(name, {bytes: busbw GB/s}, title comment)] of one file."""
    base = os.path.splitext(os.path.basename(path))[0]
    with open(path) as f:
        text = f.read()
    try:
        j = json.loads(text)
    except ValueError:
        j = None
    if isinstance(j, dict) and isinstance(j.get("rows"), list):
        rows = {int(r["bytes"]): r["busbw_gbs"] for r in j["rows"] if number(r.get("busbw_gbs"))}
        title = f"{j.get('op', '')}, {j.get('workers', '?')} ranks, {j.get('device', '')}"
        return [("synk", rows, title)]
    # A table is a run of data rows; its name comes from the first comment
    # line of its block (blocks are separated by blank lines).
    tables, comment, current = [], "", None
    row = re.compile(r"^\s*(\d+)\s+(\d+)\s+\S+\s+\S+\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)(\s+\d+)?\s*$")
    for line in text.splitlines():
        m = row.match(line)
        if m:
            if current is None:
                current = (table_name(comment, base), {}, comment.lstrip("# ").strip())
                tables.append(current)
            current[1][int(m.group(1))] = float(m.group(5))
        elif not line.strip():
            current, comment = None, ""
        elif line.startswith("#"):
            if current is not None:  # a trailer ("# wrong: 0"): the table ended
                current, comment = None, ""
            elif not comment and not re.match(r"#\s*size", line):
                comment = line
    return tables


def size_label(b):
    for unit, n in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if b >= n:
            return f"{b // n} {unit}" if b % n == 0 else f"{b / n:.1f} {unit}"
    return f"{b} B"


def plot_busbw(args, plt):
    merged, titles = {}, []
    for path in args.inputs:
        for name, rows, title in busbw_tables(path):
            if rows:
                runs = merged.setdefault(name, {})
                for size, bw in rows.items():
                    runs.setdefault(size, []).append(bw)
                titles.append(title)
    if not merged:
        sys.exit("plot.py busbw: no busbw tables in " + ", ".join(args.inputs))
    fig, ax = plt.subplots(figsize=(6, 3.6))
    order = sorted(merged, key=lambda n: (n != "synk", n))
    for name in order:
        sizes = sorted(merged[name])
        bws = [statistics.median(merged[name][s]) for s in sizes]
        lo, hi = min(len(v) for v in merged[name].values()), max(len(v) for v in merged[name].values())
        runs = f"{hi}" if lo == hi else f"{lo} to {hi}"
        ax.plot(sizes, bws, "o-", label=f"{name}" + (f" (median of {runs} runs)" if hi > 1 else ""))
    all_sizes = sorted({s for rows in merged.values() for s in rows})
    ax.set_xscale("log", base=2)
    ax.set_xticks(all_sizes[::2] if len(all_sizes) > 8 else all_sizes)
    ax.set_xticklabels([size_label(s) for s in (all_sizes[::2] if len(all_sizes) > 8 else all_sizes)], fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel("message size")
    ax.set_ylabel("busbw (GB/s)")
    ax.set_ylim(bottom=0)
    # "op all_reduce, 2 ranks" from synk's header (or JSON), if there is one.
    what = ""
    for t in titles:
        m = re.search(r"op (\w+), (\d+) ranks", t) or re.search(r"^(\w+), (\d+) ranks", t)
        if m:
            what = f": {m.group(1)}, {m.group(2)} ranks"
            break
    ax.set_title(args.title or f"Bus bandwidth per message size{what}")
    ax.legend(fontsize=8)
    return fig


# ---- training ----------------------------------------------------------------------------

def training_runs(paths):
    runs = []
    for path in paths:
        for r in records(read_json(path)):
            if isinstance(r.get("train_loss"), list) and r["train_loss"]:
                runs.append((path, r))
    return runs


def run_label(r, path, all_runs):
    parts = [str(r.get("framework", "")), str(r.get("model", ""))]
    if "workers" in r:
        parts.append(f"{r['workers']} worker" + ("s" if r["workers"] != 1 else ""))
    label = " ".join(p for p in parts if p)
    same = [x for _, x in all_runs if all(x.get(k) == r.get(k) for k in ("framework", "model", "workers"))]
    if len(same) > 1:
        label += f" seed {r['seed']}" if "seed" in r else f" ({os.path.basename(path)})"
    return label


def plot_training(args, plt):
    runs = training_runs(args.inputs)
    if not runs:
        sys.exit("plot.py training: no runs with a 'train_loss' list in " + ", ".join(args.inputs))
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(8, 3.4))
    for path, r in runs:
        label = run_label(r, path, runs)
        epochs = list(range(1, len(r["train_loss"]) + 1))
        line, = loss_ax.plot(epochs, r["train_loss"], "-", label=f"{label}: train")
        color = line.get_color()
        test_loss = r.get("test_loss_per_epoch")
        if isinstance(test_loss, list) and len(test_loss) == len(epochs):
            loss_ax.plot(epochs, test_loss, "--", color=color, label=f"{label}: test")
        elif number(r.get("test_loss")):
            loss_ax.plot([epochs[-1]], [r["test_loss"]], "x", color=color, label=f"{label}: final test")
        acc = r.get("test_accuracy_per_epoch")
        if isinstance(acc, list) and len(acc) == len(epochs):
            acc_ax.plot(epochs, acc, "o-", color=color, markersize=3, label=label)
        elif number(r.get("test_accuracy")):
            acc_ax.plot([epochs[-1]], [r["test_accuracy"]], "o", color=color, label=f"{label} (final)")
    last = max(len(r["train_loss"]) for _, r in runs)
    ticks = range(1, last + 1, max(1, (last + 9) // 10))
    for ax in (loss_ax, acc_ax):
        ax.set_xlim(0.5, last + 0.5)
        ax.set_xticks(list(ticks))
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("cross-entropy loss")
    loss_ax.set_title("Loss per epoch")
    loss_ax.legend(fontsize=7)
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("test accuracy")
    acc_ax.set_title("Test accuracy per epoch")
    acc_ax.legend(fontsize=7)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    return fig


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("kind", choices=["scaling", "busbw", "training"])
    p.add_argument("inputs", nargs="+", help="result files (JSON, or text logs for busbw)")
    p.add_argument("-o", "--output", help="PNG file to write (default: <kind>.png)")
    p.add_argument("--title", help="chart title")
    args = p.parse_args()
    for path in args.inputs:
        if not os.path.isfile(path):
            sys.exit(f"plot.py: {path}: no such file")
    plt = load_matplotlib()
    fig = {"scaling": plot_scaling, "busbw": plot_busbw, "training": plot_training}[args.kind](args, plt)
    out = args.output or f"{args.kind}.png"
    fig.tight_layout()
    fig.savefig(out)
    print(f"plot.py: wrote {out}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Summarises one run of scripts/gpu-check.sh (standard library only).

Reads the run's scratch folder (--work):
  steps.tsv                 one line per step: name, status, exit, seconds, limit, note
  results/*.json            the benchmarks' --json files (and the kit's CPU reference)
  results/gpus.csv          nvidia-smi --query-gpu (index, name, driver, memory, bus, cc)
  results/versions.txt      "tool: version" lines
  logs/gtest/_list.txt      the Gpu* tests; logs/gtest/<test>.log and _results.tsv: one process per test
  logs/memcheck-<i>.log     compute-sanitizer memcheck shards

Writes into --out:
  summary.json   date, machine, GPU, driver, verdict, then one line per step with its key figures
  tests.json     every GPU test: status, seconds, skip reason or failure text; memcheck per test
  bench.json     every benchmark's JSON, keyed by file name

Exit status: 0 when the verdict is ok, 1 otherwise (the caller decides whether that fails).
A skipped GPU test is a problem unless its reason matches --skip-ok (in a dry
run, where no device is expected, skips are what should happen).
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import glob
import json
import os
import re
import socket
import sys

RUN = re.compile(r"^\[ RUN      \] (\S+)")
OK = re.compile(r"^\[       OK \] (\S+)")
SKIPPED = re.compile(r"^\[  SKIPPED \] ([^\s,]+)[, ]")
FAILED = re.compile(r"^\[  FAILED  \] ([^\s,]+)[, ]")
MAX_TEXT = 3000


def read(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def load_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def clip(text: str, limit: int = MAX_TEXT) -> str:
    text = text.strip("\n")
    return text if len(text) <= limit else text[: limit // 2] + "\n[...]\n" + text[-limit // 2:]


def parse_gtest(text: str) -> dict[str, dict]:
    """Per test in a GoogleTest log: status (passed, skipped, failed, running) and its text.

    'running' means the log ends inside the test: it crashed, hung or was killed.
    """
    tests: dict[str, dict] = {}
    cur, buf = None, []
    for line in text.splitlines():
        m = RUN.match(line)
        if m:
            cur, buf = m.group(1), []
            tests[cur] = {"status": "running", "text": ""}
            continue
        for rx, status in ((OK, "passed"), (SKIPPED, "skipped"), (FAILED, "failed")):
            m = rx.match(line)
            if m and m.group(1) in tests and tests[m.group(1)]["status"] == "running":
                t = tests[m.group(1)]
                t["status"] = status
                body = "\n".join(buf)
                if status == "skipped":
                    # "file:line: Skipped" then the reason.
                    t["text"] = clip(re.sub(r"^.*?: Skipped\n", "", body, count=1, flags=re.S))
                elif status == "failed":
                    t["text"] = clip(body)
                cur, buf = None, []
                break
        else:
            if cur is not None:
                buf.append(line)
    if cur is not None:
        tests[cur]["text"] = clip("\n".join(buf))
    return tests


def read_steps(work: str) -> list[dict]:
    steps = []
    for line in read(os.path.join(work, "steps.tsv")).splitlines():
        f = line.split("\t") + [""] * 6
        steps.append({"step": f[0], "status": f[1], "exit": int(f[2]) if f[2].lstrip("-").isdigit() else None,
                      "seconds": float(f[3] or 0), "limit": int(f[4] or 0), **({"note": f[5]} if f[5] else {})})
    return steps


def gtest_per_process(work: str) -> list[dict]:
    """The Gpu* tests run one per process (logs/gtest)."""
    d = os.path.join(work, "logs", "gtest")
    names = [n for n in read(os.path.join(d, "_list.txt")).splitlines() if n]
    done = {}
    for line in read(os.path.join(d, "_results.tsv")).splitlines():
        f = line.split("\t")
        if len(f) >= 3:
            done[f[0]] = (int(f[1]), float(f[2]))
    out = []
    for name in names:
        log = os.path.join(d, re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".log")
        text = read(log)
        t = parse_gtest(text).get(name, {"status": "running", "text": clip(text[-MAX_TEXT:])})
        rc, secs = done.get(name, (None, None))
        status = t["status"]
        if not os.path.exists(log):
            status = "not-run"  # the step's limit came first
        elif rc is None:
            status = "killed"  # still running when the step's limit came
        elif rc in (124, 137):
            status = "timeout"
        elif status == "running" and rc == 0 and not text.count("[ RUN"):
            status = "not-found"  # the filter matched nothing
        elif status == "running":
            status = "crashed"
        elif status in ("passed", "skipped") and rc != 0:
            status = "failed-at-exit"
        entry = {"name": name, "status": status, "exit": rc, "seconds": secs}
        if t.get("text") and status != "passed":
            entry["skip_reason" if status == "skipped" else "text"] = t["text"]
        if status in ("crashed", "killed", "timeout", "failed-at-exit"):
            entry["text"] = clip(text[-MAX_TEXT:]) or "(no output)"
        out.append(entry)
    return out


def memcheck(work: str) -> dict | None:
    logs = sorted(glob.glob(os.path.join(work, "logs", "memcheck-*.log")))
    if not logs:
        return None
    shards, tests, total = [], [], 0
    for path in logs:
        text = read(path)
        m = re.search(r"ERROR SUMMARY: (\d+) error", text)
        shards.append({"log": os.path.basename(path), "error_summary": int(m.group(1)) if m else None})
        total += int(m.group(1)) if m else 0
        parsed = parse_gtest(text)
        # Error records ("========= Invalid __global__ read ...") by the test that was running.
        cur, errs = None, {}
        for line in text.splitlines():
            r = RUN.match(line)
            if r:
                cur = r.group(1)
            elif line.startswith("========= ") and not line.startswith("=========  "):
                head = line[10:]
                if head.startswith(("COMPUTE-SANITIZER", "ERROR SUMMARY", "Target application")):
                    continue
                errs.setdefault(cur or "(outside any test)", []).append(head)
        for name, t in parsed.items():
            e = errs.get(name, [])
            status = t["status"] if t["status"] != "running" else "unfinished"
            entry = {"name": name, "status": status, "errors": len(e)}
            if e:
                entry["first_errors"] = e[:20]
            if status == "failed" or status == "unfinished":
                entry["text"] = t["text"]
            tests.append(entry)
        if "(outside any test)" in errs:
            tests.append({"name": "(outside any test) " + os.path.basename(path), "status": "n/a",
                          "errors": len(errs["(outside any test)"]), "first_errors": errs["(outside any test)"][:20]})
    return {"error_summary_total": total, "shards": shards,
            "tests_with_errors": sum(1 for t in tests if t["errors"]), "tests": tests}


def counts(tests: list[dict]) -> dict:
    c: dict[str, int] = {}
    for t in tests:
        c[t["status"]] = c.get(t["status"], 0) + 1
    return dict(sorted(c.items()))


def frac(x):
    if x is None:
        return None
    x = float(x)
    return x / 100.0 if x > 1.0 else x


def first(d, *keys):
    for k in keys:
        if isinstance(d, dict) and d.get(k) is not None:
            return d[k]
    return None


def figures(step: str, bench: dict, tests: list[dict], mc: dict | None) -> dict:
    """The few numbers of a step worth reading first."""
    f: dict = {}
    if step.startswith("mnist-"):
        # mnist-cnn -> mnist-cuda-cnn.json; mnist-cpu-* steps -> their own name.
        key = step if step.startswith("mnist-cpu-") else "mnist-cuda-" + step[len("mnist-"):]
        if step == "mnist-mlp-nccl":
            key = next((k for k in bench if k.startswith("mnist-cuda-mlp-nccl")), None)
        j = bench.get(key or "")
        if isinstance(j, dict):
            f = {"samples_per_sec": round(j.get("samples_per_sec", 0), 1), "test_accuracy": j.get("test_accuracy"),
                 "epochs": j.get("epochs"), "epoch_seconds": j.get("epoch_seconds")}
            model = j.get("model")
            ref = bench.get(f"mnist-cpu-{model}")
            if (isinstance(ref, dict) and ref is not j and ref.get("epochs") == j.get("epochs")
                    and j.get("workers", 1) == 1):
                f["cpu_test_accuracy"] = ref.get("test_accuracy")
                f["cpu_samples_per_sec"] = round(ref.get("samples_per_sec", 0), 1)
                if j.get("test_accuracy") is not None and ref.get("test_accuracy") is not None:
                    f["accuracy_minus_cpu"] = round(j["test_accuracy"] - ref["test_accuracy"], 4)
    elif step == "gtest-gpu" or step == "gtest-nogpu":
        f = {"tests": len(tests), **counts(tests)}
        bad = [t["name"] for t in tests if t["status"] not in ("passed", "skipped")]
        if bad:
            f["not_passed"] = bad[:30]
        reasons: dict[str, int] = {}
        for t in tests:
            if t["status"] == "skipped":
                r = (t.get("skip_reason") or "").splitlines()[0][:120] if t.get("skip_reason") else "(no reason)"
                reasons[r] = reasons.get(r, 0) + 1
        if reasons:
            f["skip_reasons"] = reasons
    elif step == "memcheck" and mc:
        f = {"errors": mc["error_summary_total"], "tests": len(mc["tests"]),
             "tests_with_errors": mc["tests_with_errors"], **counts(mc["tests"])}
    elif step.startswith("collectives-"):
        j = next((v for k, v in bench.items() if k.startswith(step) and isinstance(v, dict)), None)
        rows = (j or {}).get("rows") or []
        if rows:
            big = max(rows, key=lambda r: r.get("bytes", 0))
            f = {"sizes": len(rows), "wrong": sum(int(r.get("wrong", 0)) for r in rows),
                 "largest_bytes": big.get("bytes"), "largest_time_us": big.get("time_us"),
                 "max_busbw_gbs": max(float(r.get("busbw_gbs", 0)) for r in rows),
                 "smallest_time_us": min(rows, key=lambda r: r.get("bytes", 0)).get("time_us")}
    elif step.startswith("dispatch"):
        j = bench.get("dispatch-cuda" if step == "dispatch" else "dispatch-cpu")
        if isinstance(j, dict):
            f = {k: j.get(k) for k in ("workers", "p50_us", "p99_us", "mean_us")}
    elif step == "kernels":
        j = bench.get("kernels")
        rows = (j or {}).get("results") or [] if isinstance(j, dict) else []
        wrong = sum(int(first(r, "wrong", "#wrong") or 0) for r in rows if isinstance(r, dict))
        f = {"rows": len(rows), "wrong": wrong}
    elif step == "torch-peer":
        j = bench.get("torch-gpu")
        for r in j if isinstance(j, list) else []:
            if r.get("framework") != "pytorch":
                continue
            k = f"{r.get('model')}_{r.get('mode')}"
            f[k] = {"samples_per_sec": round(r.get("samples_per_sec", 0), 1), "test_accuracy": r.get("test_accuracy")}
            s = bench.get(f"mnist-cuda-{r.get('model')}")
            if isinstance(s, dict) and r.get("samples_per_sec"):
                f[k]["synk_over_torch"] = round(s.get("samples_per_sec", 0) / r["samples_per_sec"], 3)
    return f


def environment(work: str) -> dict:
    env: dict = {"gpus": []}
    try:
        with open(os.path.join(work, "results", "gpus.csv")) as fh:
            for row in csv.reader(fh):
                row = [c.strip() for c in row]
                if len(row) >= 4:
                    g = {"index": row[0], "name": row[1], "driver": row[2], "memory": row[3]}
                    if len(row) > 4:
                        g["pci_bus"] = row[4]
                    if len(row) > 5:
                        g["compute_cap"] = row[5]
                    env["gpus"].append(g)
    except OSError:
        pass
    versions = {}
    for line in read(os.path.join(work, "results", "versions.txt")).splitlines():
        if ": " in line:
            k, v = line.split(": ", 1)
            versions[k] = v
    env["versions"] = versions
    return env


def dumps_lines(obj: dict, line_keys=("steps",)) -> str:
    """JSON with one line per element of the lists named in line_keys."""
    parts = []
    for k, v in obj.items():
        if k in line_keys and isinstance(v, list):
            inner = ",\n".join("    " + json.dumps(x, sort_keys=False) for x in v)
            parts.append(f'  {json.dumps(k)}: [\n{inner}\n  ]')
        else:
            parts.append(f"  {json.dumps(k)}: {json.dumps(v)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Summarise a scripts/gpu-check.sh run.")
    p.add_argument("--work", required=True, help="the run's scratch folder")
    p.add_argument("--out", required=True, help="where summary.json, tests.json, bench.json go")
    p.add_argument("--skip-ok", default=r"needs [0-9]+ GPUs", help="regex: skip reasons that are no problem")
    p.add_argument("--mode", choices=["gpu", "dry-run"], default="gpu")
    p.add_argument("--budget", type=int, default=0)
    p.add_argument("--epochs", type=int, default=0)
    p.add_argument("--wall", type=int, default=0)
    a = p.parse_args(argv)

    steps = read_steps(a.work)
    bench = {}
    for path in sorted(glob.glob(os.path.join(a.work, "results", "*.json"))):
        bench[os.path.splitext(os.path.basename(path))[0]] = load_json(path)
    dry = a.mode == "dry-run"
    tests = gtest_per_process(a.work)
    mc = memcheck(a.work)
    skip_ok = re.compile(a.skip_ok)

    problems = []
    for s in steps:
        s["figures"] = figures(s["step"], bench, tests, mc) if s["status"] not in ("dry-run", "skip") else {}
        if s["status"] in ("fail", "timeout"):
            problems.append(f"step {s['step']}: {s['status']} (exit {s['exit']})")
        elif s["status"] == "skip" and s.get("note") == "budget spent":
            problems.append(f"step {s['step']}: not run, budget spent")
        elif s["status"] == "skip" and s["exit"] == 77 and not dry:
            problems.append(f"step {s['step']}: the program skipped itself (exit 77: no usable device?)")
    refused: dict[str, list[str]] = {}  # skip reason -> tests
    for t in tests:
        if t["status"] == "skipped":
            if not dry and not skip_ok.search(t.get("skip_reason", "")):
                reason = (t.get("skip_reason") or "(no reason)").splitlines()[0]
                refused.setdefault(reason, []).append(t["name"])
        elif t["status"] != "passed":
            problems.append(f"test {t['name']}: {t['status']}")
    for reason, names in refused.items():
        problems.append(f"{len(names)} test(s) skipped: {reason} (e.g. {', '.join(names[:3])})")
    if mc and mc["error_summary_total"]:
        problems.append(f"memcheck: {mc['error_summary_total']} error(s) in {mc['tests_with_errors']} test(s)")
    for s in steps:
        if s["figures"].get("wrong"):
            problems.append(f"step {s['step']}: {s['figures']['wrong']} wrong result(s)")
    if not tests and any(s["step"].startswith("gtest") and s["status"] not in ("dry-run", "skip") for s in steps):
        problems.append("no Gpu* test result could be read")

    kit = load_json(os.path.join(a.out, "kit.json")) or {}
    summary = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": a.mode,
        "host": socket.gethostname(),
        "wall_seconds": a.wall,
        "budget_seconds": a.budget,
        "epochs": a.epochs,
        "kit": {k: kit.get(k) for k in ("commit", "dirty_files", "packed", "cuda_architectures", "nvcc") if k in kit},
        "environment": environment(a.work),
        "verdict": {"ok": not problems, "problems": problems[:100], "problem_count": len(problems)},
        "tests": {"gpu": counts(tests), "memcheck_errors": mc["error_summary_total"] if mc else None},
        "steps": steps,
    }
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        f.write(dumps_lines(summary))
    with open(os.path.join(a.out, "tests.json"), "w") as f:
        json.dump({"gtest": {"counts": counts(tests), "tests": tests}, "memcheck": mc}, f, indent=1)
        f.write("\n")
    with open(os.path.join(a.out, "bench.json"), "w") as f:
        json.dump(bench, f, indent=1)
        f.write("\n")

    # What a reader of the console sees first.
    print(f"gpu-check: {a.mode}: {len(steps)} steps, GPU tests {counts(tests)}"
          + (f", memcheck errors {mc['error_summary_total']}" if mc else ""))
    for s in steps:
        fig = s["figures"]
        short = {k: v for k, v in fig.items() if not isinstance(v, (list, dict))}
        print(f"  {s['step']:<18} {s['status']:<8} {s['seconds']:7.1f}s  {json.dumps(short) if short else ''}")
    if problems:
        print(f"gpu-check: verdict: {len(problems)} problem(s):")
        for pr in problems[:40]:
            print(f"  - {pr}")
    else:
        print("gpu-check: verdict: ok")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())

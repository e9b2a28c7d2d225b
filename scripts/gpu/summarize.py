#!/usr/bin/env python3
"""Summarises one run of scripts/gpu-check.sh (standard library only).

Reads the run's scratch folder (--work):
  plan.tsv                  every step the run means to take, in order: name, kind, limit
  steps.tsv                 one line per finished step: name, status, exit, seconds, limit, note
  current                   the step running now: name, start (epoch seconds), limit
  results/*.json            the benchmarks' --json files (and the kit's CPU reference)
  results/gpus.csv          nvidia-smi --query-gpu (index, name, driver, memory, bus, cc)
  results/versions.txt      "tool: version" lines
  logs/gtest/_list-<step>.txt  the Gpu* tests of one step; <test>.log and _results.tsv: one process per test
  logs/memcheck-<i>.log     compute-sanitizer memcheck shards

Writes into --out, each file replaced atomically (a temporary file, then a
rename), so that a run killed at any moment leaves the last complete set:
  summary.json   date, state, machine, GPU, driver, verdict, then one line per step with its key
                 figures; steps not yet reached are listed as such
  tests.json     every GPU test: status, seconds, skip reason or failure text; memcheck per test
  bench.json     every benchmark's JSON, keyed by file name
  logs.tar.gz    (with --logs-cap) the logs, at most that many bytes: the least useful dropped first

gpu-check.sh calls it after every step (--state running) and at the end
(--state finished, or interrupted on a signal): the last summary.json a run
leaves says how far it got.

Exit status: 0 when the verdict is ok, 1 otherwise (the caller decides whether that fails).
A skipped GPU test is a problem unless its reason matches --skip-ok (in a dry
run, where no device is expected, skips are what should happen).
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import glob
import gzip
import io
import json
import os
import re
import socket
import sys
import tarfile
import time

RUN = re.compile(r"^\[ RUN      \] (\S+)")
OK = re.compile(r"^\[       OK \] (\S+)")
SKIPPED = re.compile(r"^\[  SKIPPED \] ([^\s,]+)[, ]")
FAILED = re.compile(r"^\[  FAILED  \] ([^\s,]+)[, ]")
MAX_TEXT = 3000
MIB = 1024 * 1024
FILE_LIMIT = 16 * MIB  # what one returned file may hold
BAD_TEST = ("failed", "crashed", "timeout", "killed", "failed-at-exit", "not-found")


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


def read_plan(work: str) -> list[dict]:
    """The steps the run means to take, in order (plan.tsv: name, kind, limit)."""
    plan = []
    for line in read(os.path.join(work, "plan.tsv")).splitlines():
        f = line.split("\t") + [""] * 3
        if f[0]:
            plan.append({"step": f[0], "kind": f[1], "limit": int(f[2]) if f[2].isdigit() else 0})
    return plan


def read_current(work: str, now: float) -> dict | None:
    """The step running now (current: name, start epoch, limit), if any."""
    f = read(os.path.join(work, "current")).strip().split("\t")
    if len(f) < 3 or not f[0]:
        return None
    try:
        return {"step": f[0], "status": "running", "exit": None, "seconds": round(max(0.0, now - float(f[1])), 1),
                "limit": int(f[2] or 0)}
    except ValueError:
        return None


def merge_plan(steps: list[dict], plan: list[dict], current: dict | None) -> list[dict]:
    """Finished steps, the running one and the ones not reached, in the plan's order."""
    done = {s["step"] for s in steps}
    out = list(steps)
    if current and current["step"] not in done:
        out.append(current)
        done.add(current["step"])
    for p in plan:
        if p["step"] not in done:
            out.append({"step": p["step"], "status": "not reached", "exit": None, "seconds": 0.0,
                        "limit": p["limit"]})
            done.add(p["step"])
    return out


def gtest_per_process(work: str, finished_steps: set[str] | None = None,
                      interrupted: set[str] = frozenset()) -> list[dict]:
    """The Gpu* tests run one per process (logs/gtest): one list per step, _list-<step>.txt.

    A test of a step that has not finished (the one running, or the run was
    cut off inside it) is 'running' if it started, else 'pending'; in a step
    that finished, such a test was 'killed' at the step's limit or 'not-run';
    in a step stopped by a signal to the whole run, 'interrupted'.
    """
    d = os.path.join(work, "logs", "gtest")
    lists = sorted(glob.glob(os.path.join(d, "_list-*.txt")))
    if os.path.exists(os.path.join(d, "_list.txt")):
        lists.insert(0, os.path.join(d, "_list.txt"))
    done = {}
    for line in read(os.path.join(d, "_results.tsv")).splitlines():
        f = line.split("\t")
        if len(f) >= 3:
            done[f[0]] = (int(f[1]), float(f[2]))
    out, seen = [], set()
    for lst in lists:
        base = os.path.basename(lst)
        step = base[len("_list-"):-len(".txt")] if base.startswith("_list-") else None
        over = finished_steps is None or step is None or step in finished_steps
        for name in read(lst).splitlines():
            if not name or name in seen:
                continue
            seen.add(name)
            log = os.path.join(d, re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".log")
            text = read(log)
            t = parse_gtest(text).get(name, {"status": "running", "text": clip(text[-MAX_TEXT:])})
            rc, secs = done.get(name, (None, None))
            status = t["status"]
            if not os.path.exists(log):
                status = "not-run" if over else "pending"  # the step's limit came first, or not yet
            elif rc is None and step in interrupted:
                status = "interrupted"  # the run was stopped: not the test's doing
            elif rc is None:
                status = "killed" if over else "running"  # still running when the step's limit came
            elif rc in (124, 137):
                status = "timeout"
            elif status == "running" and rc == 0 and not text.count("[ RUN"):
                status = "not-found"  # the filter matched nothing
            elif status == "running":
                status = "crashed"
            elif status in ("passed", "skipped") and rc != 0:
                status = "failed-at-exit"
            entry = {"name": name, "status": status, "exit": rc, "seconds": secs}
            if step:
                entry["step"] = step
            if t.get("text") and status not in ("passed", "running"):
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
    elif step.startswith("gtest-"):
        # Each step's own tests (_list-<step>.txt); a run's tests without a step: all of them.
        tests = [t for t in tests if t.get("step", step) == step]
        f = {"tests": len(tests), **counts(tests)}
        bad = [t["name"] for t in tests if t["status"] in BAD_TEST]
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


def write_atomic(path: str, data: bytes) -> None:
    """Replaces path with data in one rename: a reader (or a run killed now) sees the old file or the new."""
    tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def cut(data: bytes, limit: int) -> bytes:
    """At most about limit bytes: the first and last halves of data."""
    if len(data) <= limit:
        return data
    half = max(0, limit // 2 - 64)
    return data[:half] + b"\n[... cut by gpu-check: %d bytes left out ...]\n" % (len(data) - 2 * half) + data[-half:]


def log_tier(rel: str, steps: dict[str, str], tests: dict[str, str]) -> int:
    """How much a log is worth keeping: 0 always (cut if need be) ... 3 first dropped.

    0: the step table, the results, env/ldd/help, and every log of a step or
       test that did not pass (the failures' logs are never dropped);
    1: the logs of the other steps, memcheck's;
    2: anything else (the traces of the NCCL steps);
    3: the logs of GPU tests that passed or skipped.
    """
    base = os.path.basename(rel)
    if rel in ("steps.tsv", "plan.tsv") or rel.startswith("results/"):
        return 0
    if rel.startswith("logs/gtest/"):
        if base.startswith("_"):
            return 0
        st = tests.get(base[:-4]) if base.endswith(".log") else None
        return 3 if st in ("passed", "skipped") else 0
    if rel.startswith("logs/") and base.endswith(".log"):
        name = base[:-4]
        if name in ("env", "ldd", "help", "unpack", "sanitizer-probe"):
            return 0
        if name.startswith("memcheck"):
            st = steps.get("memcheck")
            return 0 if st not in ("ok", "unavailable", None) else 1
        st = steps.get(name)
        if st is None:
            return 2
        return 1 if st in ("ok", "skip", "dry-run") else 0
    return 2


def write_logs_tar(work: str, path: str, cap: int, steps: list[dict], tests: list[dict]) -> dict:
    """logs.tar.gz of the run's logs (and steps.tsv, results/), at most cap bytes.

    Each file is its own gzip member (a tar.gz that tar and Python read as
    one), so its compressed size is known before it is added: files go in
    from the most useful tier to the least, smallest first within a tier;
    what does not fit is dropped (tiers 1-3) or cut to its first and last
    bytes (tier 0). A file over 4 MiB is cut to its first and last 2 MiB
    first. Once a file of one tier is dropped, every file of the tiers below
    goes too (the least useful first, strictly). logs/DROPPED.txt lists what
    was dropped or cut.
    """
    step_status = {s["step"]: s["status"] for s in steps}
    test_status = {re.sub(r"[^A-Za-z0-9_.-]", "_", t["name"]): t["status"] for t in tests}
    files = []
    for root, _, names in os.walk(work):
        for n in names:
            full = os.path.join(root, n)
            rel = os.path.relpath(full, work)
            if not (rel.startswith(("logs/", "results/")) or rel in ("steps.tsv", "plan.tsv")):
                continue
            try:
                size = os.path.getsize(full)
            except OSError:
                continue
            files.append((log_tier(rel, step_status, test_status), size, rel, full))
    files.sort()

    def member(arc: str, data: bytes) -> bytes:
        info = tarfile.TarInfo("logs/" + arc if not arc.startswith("logs/") else arc)
        info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
        raw = info.tobuf(format=tarfile.GNU_FORMAT) + data + b"\0" * (-len(data) % 512)
        return gzip.compress(raw, compresslevel=6, mtime=0)

    end = gzip.compress(b"\0" * 1024, mtime=0)
    room = cap - len(end) - 64 * 1024  # the end of the archive, DROPPED.txt
    parts, dropped, was_cut = [], [], []
    floor = 99  # the most useful tier that lost a file
    for tier, size, rel, full in files:
        if tier > floor:
            dropped.append(f"{rel} ({size} bytes)")
            continue
        try:
            with open(full, "rb") as f:
                data = f.read()
        except OSError:
            continue
        if len(data) > 4 * MIB:
            data = cut(data, 4 * MIB)
            was_cut.append(rel)
        m = member(rel, data)
        if len(m) > room and tier == 0:
            limit = len(data)
            while len(m) > room and limit > 4096:  # a failure's log: its beginning and end
                limit //= 2
                m = member(rel, cut(data, limit))
            if rel not in was_cut:
                was_cut.append(rel)
        if len(m) > room:
            dropped.append(f"{rel} ({size} bytes)")
            floor = min(floor, tier)
            continue
        parts.append(m)
        room -= len(m)
    note = ""
    if dropped or was_cut:
        note = (f"gpu-check kept logs.tar.gz under {cap} bytes:\n"
                + "".join(f"dropped: {d}\n" for d in dropped) + "".join(f"cut: {c}\n" for c in was_cut))
        parts.append(member("logs/DROPPED.txt", note.encode()[: 60 * 1024]))
    parts.append(end)
    blob = b"".join(parts)
    write_atomic(path, blob)
    return {"bytes": len(blob), "cap": cap, "files": len(parts) - 1 - (1 if note else 0),
            "dropped": dropped[:50], "dropped_count": len(dropped), "cut": was_cut[:50]}


def bench_bytes(bench: dict) -> bytes:
    """bench.json, its largest entries replaced by a note while over what a returned file may hold."""
    data = (json.dumps(bench, indent=1) + "\n").encode()
    while len(data) > FILE_LIMIT - MIB and bench:
        big = max(bench, key=lambda k: len(json.dumps(bench[k])))
        bench = {**bench, big: {"left_out": f"{len(json.dumps(bench[big]))} bytes: over what bench.json may hold; "
                                            f"the file is in logs.tar.gz (results/)"}}
        data = (json.dumps(bench, indent=1) + "\n").encode()
    return data


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
    p.add_argument("--state", choices=["running", "finished", "interrupted"], default="finished",
                   help="running: a summary between two steps (what is not done yet is 'not reached')")
    p.add_argument("--budget", type=int, default=0)
    p.add_argument("--epochs", type=int, default=0)
    p.add_argument("--wall", type=int, default=0)
    p.add_argument("--started", type=float, default=0, help="the run's start (epoch seconds): wall from it")
    p.add_argument("--logs-cap", type=int, default=0, help="write logs.tar.gz into --out, at most this many bytes")
    p.add_argument("--quiet", action="store_true", help="print nothing (the summaries between steps)")
    a = p.parse_args(argv)
    now = time.time()
    wall = int(now - a.started) if a.started else a.wall

    finished = read_steps(a.work)
    current = read_current(a.work, now) if a.state != "finished" else None
    steps = merge_plan(finished, read_plan(a.work), current)
    bench = {}
    for path in sorted(glob.glob(os.path.join(a.work, "results", "*.json"))):
        bench[os.path.splitext(os.path.basename(path))[0]] = load_json(path)
    dry = a.mode == "dry-run"
    tests = gtest_per_process(a.work, {s["step"] for s in finished},
                              {s["step"] for s in finished if s["status"] == "interrupted"})
    mc = memcheck(a.work)
    skip_ok = re.compile(a.skip_ok)
    status = {s["step"]: s for s in steps}
    unavailable = []
    if status.get("memcheck", {}).get("status") == "unavailable":
        # compute-sanitizer could not attach on this machine (a sandbox): the machine's limit, not synk's.
        unavailable.append(f"memcheck: {status['memcheck'].get('note') or 'compute-sanitizer cannot run here'}")
        mc = {"unavailable": status["memcheck"].get("note") or True, **(mc or {})}

    problems = []
    for s in steps:
        s["figures"] = (figures(s["step"], bench, tests, mc)
                        if s["status"] not in ("dry-run", "skip", "not reached", "unavailable") else {})
        if s["status"] in ("fail", "timeout"):
            problems.append(f"step {s['step']}: {s['status']} (exit {s['exit']})")
        elif s["status"] == "skip" and s.get("note") == "budget spent":
            problems.append(f"step {s['step']}: not run, budget spent")
        elif s["status"] == "skip" and s["exit"] == 77 and not dry:
            problems.append(f"step {s['step']}: the program skipped itself (exit 77: no usable device?)")
    running = [s["step"] for s in steps if s["status"] == "running"]
    stopped = [s["step"] for s in steps if s["status"] == "interrupted"]
    not_reached = [s["step"] for s in steps if s["status"] == "not reached"]
    if a.state != "finished" and (running or stopped or not_reached):
        where = (f"step {running[0]} was running" if running else f"step {stopped[0]} was stopped" if stopped
                 else "between two steps")
        problems.insert(0, f"run {'interrupted' if a.state == 'interrupted' else 'unfinished'} ({where}); "
                           f"{len(not_reached)} step(s) not reached" + (f": {', '.join(not_reached)}" if not_reached else ""))
    refused: dict[str, list[str]] = {}  # skip reason -> tests
    for t in tests:
        if t["status"] == "skipped":
            if not dry and not skip_ok.search(t.get("skip_reason", "")):
                reason = (t.get("skip_reason") or "(no reason)").splitlines()[0]
                refused.setdefault(reason, []).append(t["name"])
        elif t["status"] in BAD_TEST:
            problems.append(f"test {t['name']}: {t['status']}")
    for reason, names in refused.items():
        problems.append(f"{len(names)} test(s) skipped: {reason} (e.g. {', '.join(names[:3])})")
    if mc and mc.get("error_summary_total") and not unavailable:
        problems.append(f"memcheck: {mc['error_summary_total']} error(s) in {mc['tests_with_errors']} test(s)")
    for s in steps:
        if s["figures"].get("wrong"):
            problems.append(f"step {s['step']}: {s['figures']['wrong']} wrong result(s)")
    if not tests and any(s["step"].startswith("gtest") and s["status"] not in ("dry-run", "skip", "not reached", "running")
                         for s in steps):
        problems.append("no Gpu* test result could be read")

    os.makedirs(a.out, exist_ok=True)
    logs = None
    if a.logs_cap > 0:
        logs = write_logs_tar(a.work, os.path.join(a.out, "logs.tar.gz"), a.logs_cap, steps, tests)
        if logs["dropped_count"]:
            print(f"gpu-check: logs.tar.gz kept under {a.logs_cap} bytes: {logs['dropped_count']} log(s) dropped "
                  f"(listed in logs/DROPPED.txt)", file=sys.stderr)
    kit = load_json(os.path.join(a.out, "kit.json")) or {}
    summary = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": a.mode,
        "state": a.state,
        "host": socket.gethostname(),
        "wall_seconds": wall,
        "budget_seconds": a.budget,
        "epochs": a.epochs,
        "kit": {k: kit.get(k) for k in ("commit", "dirty_files", "packed", "cuda_architectures", "nvcc") if k in kit},
        "environment": environment(a.work),
        "verdict": {"ok": not problems, "problems": problems[:100], "problem_count": len(problems),
                    **({"unavailable": unavailable} if unavailable else {})},
        "progress": {"finished": [s["step"] for s in finished], "running": running, "not_reached": not_reached},
        "tests": {"gpu": counts(tests), "memcheck_errors": mc.get("error_summary_total") if mc else None},
        **({"logs": logs} if logs else {}),
        "steps": steps,
    }
    write_atomic(os.path.join(a.out, "tests.json"),
                 (json.dumps({"gtest": {"counts": counts(tests), "tests": tests}, "memcheck": mc}, indent=1)
                  + "\n").encode())
    write_atomic(os.path.join(a.out, "bench.json"), bench_bytes(bench))
    write_atomic(os.path.join(a.out, "summary.json"), dumps_lines(summary).encode())
    if a.quiet:
        return 0 if not problems else 1

    # What a reader of the console sees first.
    print(f"gpu-check: {a.mode} ({a.state}): {len(steps)} steps, GPU tests {counts(tests)}"
          + (f", memcheck errors {mc.get('error_summary_total')}" if mc and not unavailable else ""))
    for s in steps:
        fig = s["figures"]
        short = {k: v for k, v in fig.items() if not isinstance(v, (list, dict))}
        print(f"  {s['step']:<25} {s['status']:<11} {s['seconds']:7.1f}s  {json.dumps(short) if short else ''}")
    for u in unavailable:
        print(f"gpu-check: unavailable on this machine (not counted against synk): {u}")
    if problems:
        print(f"gpu-check: verdict: {len(problems)} problem(s):")
        for pr in problems[:40]:
            print(f"  - {pr}")
    else:
        print("gpu-check: verdict: ok")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())

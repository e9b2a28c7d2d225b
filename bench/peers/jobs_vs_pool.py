#!/usr/bin/env python3
"""bench/peers/jobs_vs_pool.py -- plain parallel jobs: Python's
multiprocessing.Pool against synk on the same cores, in one run.

1. The numeric integration of the multiprocessing lecture (seed 003): the
   integral of 1/(1+x^2) over [0, 1] from nSample sorted uniform points, for
   every nSample in range(samples): Python serially and with
   Pool(processes).apply_async + get() (the lecture's code; the pool is made
   inside the timed function, as there), then synk's examples/integrate
   (serial, apply_async + get, map) with the same number of ranks.
2. A map of `tiny` empty jobs (identity on an int): Pool.map and
   Pool.apply_async + get() against synk-jobs (map, apply_async + get,
   map_async), per-job time = wall / jobs; the pool and the runtime are made
   before the clock starts.
3. synk-jobs' parallel argsort of `sort` floats against std::stable_sort.

Every measurement is the median of --repeat runs. The peer uses the Python
standard library only (random, sorted, sum): numpy is not installed on the
machines this ran on (the lecture's version used numpy's vectorised
generator and sort).

  python3 bench/peers/jobs_vs_pool.py --integrate build/bin/integrate \
      --synk-jobs build/bin/synk-jobs --processes 2 --json bench/results/jobs_vs_pool.json
"""
import argparse
import json
import multiprocessing as mp
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time


def f(x):
    return 1 / (1 + x ** 2)


def integral(nSample, f, xmin, xmax):
    # the lecture's integral(), numpy replaced by the standard library
    sample = sorted([random.uniform(xmin, xmax) for _ in range(nSample)])
    value = [f(x) for x in sample]
    area = sum((sample[i] - sample[i - 1]) * value[i] for i in range(1, nSample))
    return (nSample, area)


def serial(samples, f, lb, ub):
    return [integral(s, f, lb, ub)[1] for s in range(samples)]


def multiprocess(processes, samples, f, lb, ub):
    with mp.Pool(processes=processes) as pool:
        results = [pool.apply_async(integral, args=(s, f, lb, ub)) for s in range(samples)]
        results = [p.get() for p in results]
    results.sort()
    return [x[1] for x in results]


def noop(x):
    return x


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def cpu_name():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def run_json(cmd):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        path = tmp.name
    try:
        out = subprocess.run(cmd + ["--json", path], check=True, capture_output=True, text=True)
        sys.stdout.write(out.stdout)
        with open(path) as fh:
            return json.load(fh)
    finally:
        os.unlink(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--integrate", help="path of synk's examples/integrate binary")
    ap.add_argument("--synk-jobs", help="path of synk-jobs")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--samples", type=int, default=10000)
    ap.add_argument("--tiny", type=int, default=10000)
    ap.add_argument("--sort", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=5, help="runs of each synk and tiny-job measurement")
    ap.add_argument("--py-repeat", type=int, default=3, help="runs of the Python integration (slow)")
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.processes < 1 or a.samples < 2 or a.tiny < 1 or a.repeat < 1 or a.py_repeat < 1:
        ap.error("counts must be positive (samples >= 2)")

    res = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
           "processes": a.processes, "python": platform.python_version(), "samples": a.samples, "tiny": a.tiny}
    print(f"cpu: {res['cpu']}, {res['usable_cpus']} usable; Python {res['python']}; {a.processes} processes/ranks")

    # ---- 1. integration ----
    py_serial, py_pool = [], []
    for _ in range(a.py_repeat):
        py_serial.append(timed(lambda: serial(a.samples, f, 0, 1)))
        py_pool.append(timed(lambda: multiprocess(a.processes, a.samples, f, 0, 1)))
    res["py_serial_s"], res["py_pool_apply_async_s"] = py_serial, py_pool
    synk_int = None
    if a.integrate:
        synk_int = run_json([a.integrate, "--samples", str(a.samples), "--workers", str(a.processes),
                             "--repeat", str(a.repeat)])
        res["synk_integrate"] = synk_int

    # ---- 2. tiny jobs ----
    jobs = list(range(a.tiny))
    pm, pa = [], []
    with mp.Pool(a.processes) as pool:
        pool.map(noop, range(100))
        for _ in range(a.repeat):
            pm.append(timed(lambda: pool.map(noop, jobs)))
            pa.append(timed(lambda: [r.get() for r in [pool.apply_async(noop, (j,)) for j in jobs]]))
    res["py_pool_map_s"], res["py_pool_apply_async_tiny_s"] = pm, pa
    synk_jobs = None
    if a.synk_jobs:
        synk_jobs = run_json([a.synk_jobs, "--workers", str(a.processes), "--tiny", str(a.tiny),
                              "--sort", str(a.sort), "--repeat", str(a.repeat)])
        res["synk_jobs"] = synk_jobs

    # ---- table ----
    med = statistics.median
    print(f"\nintegration over {a.samples} sample sizes (median wall s)")
    print(f"  {'program':<34} {'serial':>9} {'parallel':>9} {'par/ser':>8}")
    ps, pp = med(py_serial), med(py_pool)
    print(f"  {'Python, Pool.apply_async':<34} {ps:9.3f} {pp:9.3f} {pp / ps:8.2f}")
    if synk_int:
        ss, sa, sm = med(synk_int["serial_s"]), med(synk_int["apply_async_s"]), med(synk_int["map_s"])
        print(f"  {'synk, apply_async':<34} {ss:9.3f} {sa:9.3f} {sa / ss:8.2f}")
        print(f"  {'synk, map':<34} {ss:9.3f} {sm:9.3f} {sm / ss:8.2f}")
        best_py = min(ps, pp)
        res["summary_integrate"] = {"synk_speedup_apply_async": ss / sa, "synk_speedup_map": ss / sm,
                                    "python_pool_over_serial": pp / ps, "python_best_s": best_py,
                                    "synk_parallel_s": sa, "python_best_over_synk_parallel": best_py / sa}
        print(f"  synk speed-up on {a.processes} ranks: {ss / sa:.2f}x (apply_async), {ss / sm:.2f}x (map); "
              f"Python's pool takes {pp / ps:.2f}x its serial time; synk's parallel time is "
              f"{best_py / sa:.0f}x below Python's best")
    n = a.tiny
    print(f"\n{n} empty jobs (median; us per job)")
    pmu, pau = med(pm) / n * 1e6, med(pa) / n * 1e6
    print(f"  {'Python Pool.map':<34} {pmu:10.3f}")
    print(f"  {'Python Pool.apply_async + get':<34} {pau:10.3f}")
    if synk_jobs:
        sm, sa, sma = synk_jobs["map_us_per_job"], synk_jobs["apply_async_us_per_job"], synk_jobs["map_async_us_per_job"]
        print(f"  {'synk map':<34} {sm:10.3f}   Pool.map / synk map = {pmu / sm:.0f}x")
        print(f"  {'synk apply_async + get':<34} {sa:10.3f}   Pool.apply_async / synk apply_async = {pau / sa:.0f}x")
        print(f"  {'synk map_async + get':<34} {sma:10.3f}")
        res["summary_tiny"] = {"pool_map_us": pmu, "pool_apply_async_us": pau, "synk_map_us": sm,
                               "synk_apply_async_us": sa, "synk_map_async_us": sma,
                               "pool_map_over_synk_map": pmu / sm, "pool_apply_async_over_synk_apply_async": pau / sa,
                               "pool_map_over_synk_apply_async": pmu / sa}
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=2)
            fh.write("\n")


if __name__ == "__main__":
    main()

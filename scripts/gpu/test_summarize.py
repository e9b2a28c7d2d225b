#!/usr/bin/env python3
"""Checks scripts/gpu/summarize.py on made-up logs of every outcome a GPU
test can have (passed, skipped for an accepted and a refused reason,
failed, crashed, timed out, killed at the step's limit, never started), on
a memcheck log with one error and on a sanitizer that cannot attach; on the
summaries written between two steps (the running step, the steps not
reached, a run stopped by a signal) and on the cap of logs.tar.gz (the
least useful logs dropped first, never a failure's). No GPU and no build needed:

    python3 scripts/gpu/test_summarize.py
"""
import json
import os
import random
import sys
import tarfile
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import summarize  # noqa: E402


def gtest_log(name, body, end):
    return f"Note: Google Test filter = {name}\n[ RUN      ] {name}\n{body}{end}"


class SummarizeTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.work = os.path.join(self.tmp.name, "work")
        self.out = os.path.join(self.tmp.name, "out")
        g = os.path.join(self.work, "logs", "gtest")
        os.makedirs(g)
        os.makedirs(os.path.join(self.work, "results"))
        cases = {
            "GpuSession.Passes": (0, gtest_log("GpuSession.Passes", "", "[       OK ] GpuSession.Passes (12 ms)\n")),
            "GpuFaultMatrix/X.Nccl/kill": (0, gtest_log(
                "GpuFaultMatrix/X.Nccl/kill", "tests/test_faults.cpp:69: Skipped\nneeds 3 GPUs (one per rank), 1 visible\n",
                "[  SKIPPED ] GpuFaultMatrix/X.Nccl/kill (0 ms)\n")),
            "GpuRuntime.NoDevice": (0, gtest_log(
                "GpuRuntime.NoDevice", "tests/x.cpp:1: Skipped\nno CUDA device\n", "[  SKIPPED ] GpuRuntime.NoDevice (0 ms)\n")),
            "All/GpuOps.MatchesCpu/Softmax": (1, gtest_log(
                "All/GpuOps.MatchesCpu/Softmax", "tests/t.cpp:9: Failure\nExpected: 1.0\nActual: 2.0\n",
                "[  FAILED  ] All/GpuOps.MatchesCpu/Softmax, where GetParam() = x (3 ms)\n")),
            "GpuGrad.Crashes": (139, gtest_log("GpuGrad.Crashes", "partial output\n", "")),
            "GpuTraining.Hangs": (124, gtest_log("GpuTraining.Hangs", "", "")),
            "GpuHostStaged.Killed": (None, gtest_log("GpuHostStaged.Killed", "", "")),
            "GpuNccl.NeverStarted": (None, None),
        }
        with open(os.path.join(g, "_list.txt"), "w") as f:
            f.write("".join(n + "\n" for n in cases))
        with open(os.path.join(g, "_results.tsv"), "w") as res:
            for name, (rc, log) in cases.items():
                if log is not None:
                    with open(os.path.join(g, name.replace("/", "_") + ".log"), "w") as f:
                        f.write(log)
                if rc is not None:
                    res.write(f"{name}\t{rc}\t0.5\n")
        with open(os.path.join(self.work, "logs", "memcheck-0.log"), "w") as f:
            f.write("========= COMPUTE-SANITIZER\n[ RUN      ] GpuGrad.NetworkGradientsMatchCpu\n"
                    "========= Invalid __global__ read of size 4 bytes\n=========     at reduce_kernel+0x10\n"
                    "[       OK ] GpuGrad.NetworkGradientsMatchCpu (100 ms)\n========= ERROR SUMMARY: 1 error\n")
        with open(os.path.join(self.work, "steps.tsv"), "w") as f:
            f.write("gtest-gpu\tfail\t1\t12.5\t120\t\nmnist-mlp\tok\t0\t8.0\t30\t\n"
                    "kernels\tskip\t\t0\t0\tsynk-kernels not built\n")
        with open(os.path.join(self.work, "results", "mnist-cuda-mlp.json"), "w") as f:
            json.dump({"model": "mlp", "epochs": 3, "workers": 1, "samples_per_sec": 1e6, "test_accuracy": 0.80}, f)
        with open(os.path.join(self.work, "results", "mnist-cpu-mlp.json"), "w") as f:
            json.dump({"model": "mlp", "epochs": 3, "workers": 1, "samples_per_sec": 1e4, "test_accuracy": 0.81}, f)
        with open(os.path.join(self.work, "results", "gpus.csv"), "w") as f:
            f.write("0, NVIDIA H200, 580.159.04, 143771 MiB, 00000000:00:05.0, 9.0\n")

    def tearDown(self):
        self.tmp.cleanup()

    def run_summary(self):
        rc = summarize.main(["--work", self.work, "--out", self.out, "--skip-ok", r"needs [0-9]+ GPUs"])
        with open(os.path.join(self.out, "summary.json")) as f:
            summary = json.load(f)
        with open(os.path.join(self.out, "tests.json")) as f:
            tests = json.load(f)
        return rc, summary, tests

    def test_every_outcome(self):
        rc, summary, tests = self.run_summary()
        self.assertEqual(rc, 1)
        status = {t["name"]: t["status"] for t in tests["gtest"]["tests"]}
        self.assertEqual(status, {
            "GpuSession.Passes": "passed", "GpuFaultMatrix/X.Nccl/kill": "skipped", "GpuRuntime.NoDevice": "skipped",
            "All/GpuOps.MatchesCpu/Softmax": "failed", "GpuGrad.Crashes": "crashed", "GpuTraining.Hangs": "timeout",
            "GpuHostStaged.Killed": "killed", "GpuNccl.NeverStarted": "not-run"})
        by_name = {t["name"]: t for t in tests["gtest"]["tests"]}
        self.assertEqual(by_name["GpuRuntime.NoDevice"]["skip_reason"], "no CUDA device")
        self.assertIn("Actual: 2.0", by_name["All/GpuOps.MatchesCpu/Softmax"]["text"])
        problems = summary["verdict"]["problems"]
        self.assertIn("1 test(s) skipped: no CUDA device (e.g. GpuRuntime.NoDevice)", problems)
        self.assertFalse(any("Nccl/kill" in p for p in problems))  # needs more GPUs: accepted
        self.assertTrue(any(p.startswith("memcheck: 1 error") for p in problems))
        self.assertTrue(any("step gtest-gpu: fail" in p for p in problems))
        self.assertFalse(any("kernels" in p for p in problems))  # skipped for a stated reason
        mlp = next(s for s in summary["steps"] if s["step"] == "mnist-mlp")
        self.assertAlmostEqual(mlp["figures"]["accuracy_minus_cpu"], -0.01)
        self.assertEqual(summary["environment"]["gpus"][0]["name"], "NVIDIA H200")
        self.assertEqual(tests["memcheck"]["tests"][0]["errors"], 1)
        with open(os.path.join(self.out, "summary.json")) as f:
            lines = f.read().splitlines()
        self.assertEqual(sum(1 for ln in lines if ln.lstrip().startswith('{"step"')), 3)  # one line per step

    def test_all_good(self):
        g = os.path.join(self.work, "logs", "gtest")
        keep = {"GpuSession.Passes", "GpuFaultMatrix/X.Nccl/kill"}
        with open(os.path.join(g, "_list.txt"), "w") as f:
            f.write("".join(n + "\n" for n in sorted(keep)))
        os.remove(os.path.join(self.work, "logs", "memcheck-0.log"))
        with open(os.path.join(self.work, "steps.tsv"), "w") as f:
            f.write("gtest-gpu\tok\t0\t12.5\t120\t\n")
        rc, summary, _ = self.run_summary()
        self.assertEqual(summary["verdict"], {"ok": True, "problems": [], "problem_count": 0})
        self.assertEqual(rc, 0)


class IncrementalTest(unittest.TestCase):
    """The summaries written after every step: a run killed now leaves them."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.work = os.path.join(self.tmp.name, "work")
        self.out = os.path.join(self.tmp.name, "out")
        self.g = os.path.join(self.work, "logs", "gtest")
        os.makedirs(self.g)
        os.makedirs(os.path.join(self.work, "results"))
        self.write("plan.tsv", "".join(f"{n}\tgpu\t30\n" for n in
                                       ("env", "ldd", "gtest-core", "mnist-mlp", "memcheck", "kernels")))
        self.write("steps.tsv", "env\tok\t0\t0.5\t30\t\nldd\tok\t0\t0.4\t20\t\n")
        # gtest-core is running: one test passed, one running, one not started.
        self.write("current", f"gtest-core\t{int(time.time()) - 7}\t150\n")
        self.write("logs/gtest/_list-gtest-core.txt", "GpuOps.A\nGpuGrad.B\nGpuSession.C\n")
        self.write("logs/gtest/GpuOps.A.log", gtest_log("GpuOps.A", "", "[       OK ] GpuOps.A (1 ms)\n"))
        self.write("logs/gtest/GpuGrad.B.log", gtest_log("GpuGrad.B", "", ""))
        self.write("logs/gtest/_results.tsv", "GpuOps.A\t0\t0.3\n")

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, rel, text):
        path = os.path.join(self.work, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)

    def run_summary(self, *extra):
        rc = summarize.main(["--work", self.work, "--out", self.out, *extra])
        with open(os.path.join(self.out, "summary.json")) as f:
            summary = json.load(f)
        with open(os.path.join(self.out, "tests.json")) as f:
            tests = json.load(f)
        return rc, summary, tests

    def test_running_names_finished_running_and_not_reached(self):
        rc, summary, tests = self.run_summary("--state", "running", "--quiet")
        self.assertEqual(rc, 1)
        self.assertEqual(summary["state"], "running")
        self.assertEqual(summary["progress"], {"finished": ["env", "ldd"], "running": ["gtest-core"],
                                               "not_reached": ["mnist-mlp", "memcheck", "kernels"]})
        status = {s["step"]: s["status"] for s in summary["steps"]}
        self.assertEqual(status, {"env": "ok", "ldd": "ok", "gtest-core": "running", "mnist-mlp": "not reached",
                                  "memcheck": "not reached", "kernels": "not reached"})
        running = next(s for s in summary["steps"] if s["step"] == "gtest-core")
        self.assertGreaterEqual(running["seconds"], 6)
        self.assertEqual(summary["verdict"]["problems"],
                         ["run unfinished (step gtest-core was running); 3 step(s) not reached: "
                          "mnist-mlp, memcheck, kernels"])
        t = {x["name"]: x["status"] for x in tests["gtest"]["tests"]}
        self.assertEqual(t, {"GpuOps.A": "passed", "GpuGrad.B": "running", "GpuSession.C": "pending"})
        self.assertEqual(running["figures"]["tests"], 3)
        # Each file replaced in one rename: no temporary file left beside them.
        self.assertEqual(sorted(os.listdir(self.out)), ["bench.json", "summary.json", "tests.json"])

    def test_finished_step_leaves_its_unfinished_tests_killed_or_not_run(self):
        os.remove(os.path.join(self.work, "current"))
        with open(os.path.join(self.work, "steps.tsv"), "a") as f:
            f.write("gtest-core\ttimeout\t124\t150\t150\t\n")
        rc, summary, tests = self.run_summary("--state", "running", "--quiet")
        t = {x["name"]: x["status"] for x in tests["gtest"]["tests"]}
        self.assertEqual(t, {"GpuOps.A": "passed", "GpuGrad.B": "killed", "GpuSession.C": "not-run"})
        self.assertTrue(summary["verdict"]["problems"][0].startswith("run unfinished (between two steps)"))

    def test_interrupted_run_is_not_blamed_on_tests(self):
        os.remove(os.path.join(self.work, "current"))
        with open(os.path.join(self.work, "steps.tsv"), "a") as f:
            f.write("gtest-core\tinterrupted\t\t7\t150\tsignal\n")
        rc, summary, tests = self.run_summary("--state", "interrupted", "--quiet")
        self.assertEqual(summary["state"], "interrupted")
        t = {x["name"]: x["status"] for x in tests["gtest"]["tests"]}
        self.assertEqual(t["GpuGrad.B"], "interrupted")
        self.assertEqual(len(summary["verdict"]["problems"]), 1)
        self.assertIn("step gtest-core was stopped", summary["verdict"]["problems"][0])

    def test_finished_run_reports_every_step(self):
        os.remove(os.path.join(self.work, "current"))
        self.write("steps.tsv", "".join(f"{n}\tok\t0\t1\t30\t\n" for n in
                                        ("env", "ldd", "gtest-core", "mnist-mlp", "memcheck", "kernels")))
        self.write("logs/gtest/GpuGrad.B.log", gtest_log("GpuGrad.B", "", "[       OK ] GpuGrad.B (1 ms)\n"))
        self.write("logs/gtest/GpuSession.C.log", gtest_log("GpuSession.C", "", "[       OK ] GpuSession.C (1 ms)\n"))
        self.write("logs/gtest/_results.tsv", "GpuOps.A\t0\t0.3\nGpuGrad.B\t0\t0.3\nGpuSession.C\t0\t0.3\n")
        # A stale `current` is ignored once the run says it finished.
        self.write("current", f"kernels\t{int(time.time())}\t30\n")
        rc, summary, _ = self.run_summary("--state", "finished", "--quiet")
        self.assertEqual(summary["verdict"], {"ok": True, "problems": [], "problem_count": 0})
        self.assertEqual(summary["progress"]["not_reached"], [])
        self.assertEqual(rc, 0)

    def test_sanitizer_that_cannot_attach_is_unavailable_not_a_failure(self):
        os.remove(os.path.join(self.work, "current"))
        self.write("steps.tsv", "".join(f"{n}\tok\t0\t1\t30\t\n" for n in ("env", "ldd", "mnist-mlp", "kernels"))
                   + "memcheck\tunavailable\t78\t2\t90\tcompute-sanitizer cannot attach here: Device not supported\n")
        self.write("plan.tsv", "")
        os.remove(os.path.join(self.work, "logs", "gtest", "_list-gtest-core.txt"))
        rc, summary, tests = self.run_summary("--state", "finished", "--quiet")
        self.assertTrue(summary["verdict"]["ok"], summary["verdict"])
        self.assertEqual(summary["verdict"]["unavailable"],
                         ["memcheck: compute-sanitizer cannot attach here: Device not supported"])
        self.assertIn("Device not supported", tests["memcheck"]["unavailable"])
        self.assertEqual(rc, 0)


class LogsCapTest(unittest.TestCase):
    """logs.tar.gz stays under its cap: the least useful logs go first, never a failure's."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.work = os.path.join(self.tmp.name, "work")
        self.out = os.path.join(self.tmp.name, "out")
        rnd = random.Random(1)
        noise = lambda n: "".join(rnd.choice("0123456789abcdef") for _ in range(n))  # compresses to about half
        files = {
            "steps.tsv": "gtest-core\tfail\t1\t9\t150\t\nmnist-mlp\tok\t0\t5\t30\t\n"
                         "mnist-mlp-nccl1-buckets\tok\t0\t5\t30\t\n",
            "results/mnist-cuda-mlp.json": json.dumps({"model": "mlp", "samples_per_sec": 1.0}),
            "logs/gtest-core.log": noise(40_000),
            "logs/mnist-mlp.log": noise(40_000),
            "logs/trace-cuda-mlp-nccl1.json": noise(200_000),
            "logs/gtest/_list-gtest-core.txt": "GpuOps.Fails\n" + "".join(f"GpuSession.P{i}\n" for i in range(20)),
            "logs/gtest/GpuOps.Fails.log": gtest_log("GpuOps.Fails", noise(600_000) + "\nThe failure, at the end\n",
                                                     "[  FAILED  ] GpuOps.Fails (3 ms)\n"),
        }
        results = "GpuOps.Fails\t1\t0.5\n"
        for i in range(20):
            files[f"logs/gtest/GpuSession.P{i}.log"] = gtest_log(f"GpuSession.P{i}", noise(20_000) + "\n",
                                                                 f"[       OK ] GpuSession.P{i} (1 ms)\n")
            results += f"GpuSession.P{i}\t0\t0.1\n"
        files["logs/gtest/_results.tsv"] = results
        for rel, text in files.items():
            path = os.path.join(self.work, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)

    def tearDown(self):
        self.tmp.cleanup()

    def logs(self, cap):
        summarize.main(["--work", self.work, "--out", self.out, "--logs-cap", str(cap), "--quiet"])
        path = os.path.join(self.out, "logs.tar.gz")
        with tarfile.open(path, "r:gz") as t:
            names = {m.name: t.extractfile(m).read().decode() for m in t.getmembers()}
        with open(os.path.join(self.out, "summary.json")) as f:
            return os.path.getsize(path), names, json.load(f)["logs"]

    def test_everything_fits(self):
        size, names, info = self.logs(12 * 1024 * 1024)
        self.assertIn("logs/gtest/GpuSession.P0.log", set(names))
        self.assertIn("logs/steps.tsv", set(names))
        self.assertIn("logs/results/mnist-cuda-mlp.json", set(names))
        self.assertNotIn("logs/DROPPED.txt", set(names))
        self.assertEqual(info["dropped_count"], 0)
        self.assertEqual(size, info["bytes"])

    def test_cap_drops_passed_tests_then_traces_but_keeps_failures(self):
        cap = 500_000  # the failure's log alone compresses to about 340 kB, the trace to 100 kB
        size, names, info = self.logs(cap)
        self.assertLessEqual(size, cap)
        self.assertIn("logs/gtest/GpuOps.Fails.log", set(names))  # a failure's: kept
        self.assertIn("The failure, at the end", names["logs/gtest/GpuOps.Fails.log"])
        self.assertIn("logs/gtest-core.log", set(names))  # a failed step's
        self.assertIn("logs/steps.tsv", set(names))
        self.assertIn("logs/mnist-mlp.log", set(names))  # a passed step's: tier 1, fits
        self.assertNotIn("logs/trace-cuda-mlp-nccl1.json", set(names))  # tier 2: dropped
        self.assertFalse(any(n.startswith("logs/gtest/GpuSession.P") for n in names))  # tier 3: dropped first
        self.assertIn("dropped: logs/trace-cuda-mlp-nccl1.json", names["logs/DROPPED.txt"])
        self.assertEqual(info["dropped_count"], 21)

    def test_a_failure_too_big_for_the_cap_is_cut_not_dropped(self):
        cap = 200_000
        size, names, info = self.logs(cap)
        self.assertLessEqual(size, cap)
        log = names["logs/gtest/GpuOps.Fails.log"]
        self.assertIn("[ RUN      ] GpuOps.Fails", log)  # its beginning
        self.assertIn("The failure, at the end", log)  # and its end
        self.assertIn("cut by gpu-check", log)
        self.assertIn("logs/gtest/GpuOps.Fails.log", info["cut"])


if __name__ == "__main__":
    unittest.main()

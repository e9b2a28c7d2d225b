#!/usr/bin/env python3
"""Checks scripts/gpu/summarize.py on made-up logs of every outcome a GPU
test can have (passed, skipped for an accepted and a refused reason,
failed, crashed, timed out, killed at the step's limit, never started) and
on a memcheck log with one error. No GPU and no build needed:

    python3 scripts/gpu/test_summarize.py
"""
import json
import os
import sys
import tempfile
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


if __name__ == "__main__":
    unittest.main()

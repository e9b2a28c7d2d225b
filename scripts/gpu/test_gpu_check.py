#!/usr/bin/env python3
"""Runs scripts/gpu-check.sh's dry run on a build tree (no GPU needed), whole
and killed in the middle:

    python3 scripts/gpu/test_gpu_check.py BUILD_DIR

- the whole dry run reports no problem, writes at most 5 files of at most
  16 MiB, and its help step checks only the programs the run uses (not the
  examples or the test helpers that a full build tree also holds);
- a run killed with SIGKILL once its first steps are done leaves a
  summary.json that names the steps that finished and those not reached.
"""
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "gpu-check.sh")
BUILD = None
USED = {"synk-mnist", "synk-collectives", "synk-dispatch", "synk-kernels"}


class GpuCheckDryRunTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
        self.out = os.path.join(self.tmp.name, "out")
        self.env = {**os.environ, "TMPDIR": self.tmp.name}  # the scratch folder too
        self.env.pop("OUT", None)

    def tearDown(self):
        self.tmp.cleanup()

    def cmd(self):
        return ["bash", SCRIPT, "run", "--dry-run", "--build", BUILD, "--out", self.out, "--jobs", "2"]

    def summary(self):
        with open(os.path.join(self.out, "summary.json")) as f:
            return json.load(f)

    def test_whole_dry_run_reports_no_problem(self):
        p = subprocess.run(self.cmd(), env=self.env, capture_output=True, text=True, timeout=600)
        self.assertEqual(p.returncode, 0, p.stdout[-3000:] + p.stderr[-3000:])
        s = self.summary()
        self.assertEqual(s["state"], "finished")
        self.assertEqual(s["verdict"]["problems"], [], p.stdout[-3000:])
        self.assertEqual(s["progress"]["not_reached"], [])
        for name in ("env", "ldd", "help", "gtest-nogpu", "gtest-core", "mnist-mlp", "memcheck", "torch-peer",
                     "gtest-faults"):
            self.assertIn(name, [x["step"] for x in s["steps"]])
        files = os.listdir(self.out)
        self.assertLessEqual(len(files), 5, files)
        for f in files:
            self.assertLessEqual(os.path.getsize(os.path.join(self.out, f)), 16 * 1024 * 1024, f)
        with tarfile.open(os.path.join(self.out, "logs.tar.gz")) as t:
            help_log = t.extractfile("logs/help.log").read().decode()
        checked = {line.split()[1] for line in help_log.splitlines() if line.startswith("## ") and "--help" in line}
        built = {p for p in USED if os.access(os.path.join(BUILD, "bin", p), os.X_OK)}
        self.assertEqual(checked, built, help_log[-2000:])

    def test_killed_run_names_steps_finished_and_not_reached(self):
        p = subprocess.Popen(self.cmd(), env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        try:
            deadline = time.time() + 300
            while time.time() < deadline and p.poll() is None:
                try:
                    if "help" in self.summary()["progress"]["finished"]:
                        break
                except (OSError, ValueError, KeyError):
                    pass
                time.sleep(0.05)
            self.assertIsNone(p.poll(), "the run ended before it could be killed")
            os.killpg(p.pid, signal.SIGKILL)  # as `timeout -s KILL` does
            p.wait(30)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(30)
        s = self.summary()
        self.assertEqual(s["state"], "running")  # the last word of a run that was cut off
        self.assertEqual(s["progress"]["finished"][:3], ["env", "ldd", "help"])
        self.assertIn("gtest-core", s["progress"]["not_reached"])
        self.assertIn("torch-peer", s["progress"]["not_reached"])
        status = {x["step"]: x["status"] for x in s["steps"]}
        self.assertEqual(status["torch-peer"], "not reached")
        self.assertFalse(s["verdict"]["ok"])
        self.assertTrue(s["verdict"]["problems"][0].startswith("run unfinished"), s["verdict"]["problems"])


if __name__ == "__main__":
    if len(sys.argv) < 2 or not os.path.isdir(os.path.join(sys.argv[1], "bin")):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        sys.exit(2)
    BUILD = os.path.abspath(sys.argv.pop(1))
    unittest.main()

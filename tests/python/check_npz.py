#!/usr/bin/env python3
"""tests/python/check_npz.py — synk's checkpoints are numpy's .npz, both ways.

    check_npz.py <synk_npz_tool> <work dir>

numpy (alone: no synk code) reads what synk writes, plain and ZIP64, and
finds exactly the sample values of tests/support/npz_sample.hpp, bit for
bit; synk reads what np.savez and np.savez_compressed write and finds the
same; synk refuses what it cannot read (float64, Fortran order, big-endian,
pickled objects) with a message saying so. Exit 77 (CTest: skipped) when
numpy is missing.
"""
import os
import subprocess
import sys

try:
    import numpy as np
except ImportError:
    print("SKIPPED: numpy is not installed for " + sys.executable +
          " (Debian: apt-get install python3-numpy; scripts/install-deps.sh does)")
    sys.exit(77)

tool, work = sys.argv[1], sys.argv[2]
os.makedirs(work, exist_ok=True)
failures = []


def expected():
    """The values of npz_sample(), built with numpy, in the same order."""
    special = np.array([0x7FC00000, 0x7FC12345, 0x80000000, 0x7F800000, 0x00000001, 0xFF7FFFFF],
                       dtype=np.uint32).view(np.float32)
    return {
        "l1/W": (np.arange(12, dtype=np.float32) * np.float32(0.25) - np.float32(1)).reshape(3, 4),
        "l1/b": np.arange(4, dtype=np.float32) * np.float32(0.5),
        "steps": np.array([-3, 4, 11, 18, -2**31], dtype=np.int32),
        "t": np.array(42, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "special": special,
        "caf\u00e9/\u03bb": np.array([1, 2], dtype=np.float32),
    }


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def numpy_reads(path):
    want = expected()
    with np.load(path) as f:  # allow_pickle=False: plain arrays only
        if list(f.files) != list(want):
            failures.append(f"{path}: numpy sees {f.files}, expected {list(want)}")
            return
        for name, value in want.items():
            got = f[name]
            if not same_bits(got, value):
                failures.append(f"{path}: {name!r}: numpy reads {got.dtype} {got.shape} {got!r}, "
                                f"expected {value.dtype} {value.shape} {value!r}")
    print(f"numpy read {path}: {len(want)} arrays, bit for bit")


def tool_run(*args):
    r = subprocess.run([tool, *args], capture_output=True, text=True)
    sys.stdout.write(r.stdout)
    if r.returncode != 0:
        failures.append(f"synk_npz_tool {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")


# synk writes, numpy reads.
for name, extra in (("synk.npz", []), ("synk_zip64.npz", ["--zip64"])):
    path = os.path.join(work, name)
    tool_run("write", path, *extra)
    if os.path.exists(path):
        numpy_reads(path)

# numpy writes, synk reads.
for name, save in (("numpy_savez.npz", np.savez), ("numpy_savez_compressed.npz", np.savez_compressed)):
    path = os.path.join(work, name)
    save(path, **expected())
    tool_run("check", path)

# What synk cannot read: refused, saying why.
refusals = [
    ("float64.npz", {"W": np.zeros((2, 3))}, "dtype '<f8' is not supported"),
    ("int64.npz", {"n": np.arange(3, dtype=np.int64)}, "a.astype(numpy.int32)"),
    ("fortran.npz", {"W": np.asfortranarray(np.zeros((2, 3), np.float32))}, "Fortran-order"),
    ("bigendian.npz", {"W": np.zeros(3, dtype=">f4")}, "big-endian"),
    ("object.npz", {"W": np.array([None, 1], dtype=object)}, "never unpickles"),
]
for name, arrays, text in refusals:
    path = os.path.join(work, name)
    np.savez(path, **arrays)
    tool_run("refuse", path, text)

if failures:
    print("FAILED:\n  " + "\n  ".join(failures))
    sys.exit(1)
print("check_npz: all checks passed")

#!/usr/bin/env python3
"""What the GPU machine is, for scripts/gpu-check.sh's env step (standard library only).

    python3 scripts/gpu/probe.py PROGRAM [LIBRARY...]

Prints "key: value" lines:
  driver            the kernel driver's version (/proc/driver/nvidia/version, else libcuda's file name)
  cuda driver api   cuDriverGetVersion of libcuda.so.1 (the CUDA version the driver supports)
  cudart            cudaRuntimeGetVersion of the libcudart the programs load, and its path
  cublas            cublasGetProperty (major.minor.patch) of the libcublas they load, and its path
  nccl              ncclGetVersion of the libnccl they load, and its path (or why none)
  sandbox           gVisor or not, and the hints that say so (kernel release, dmesg, /proc)
The libraries are the ones `ldd PROGRAM LIBRARY...` resolves with the
caller's LD_LIBRARY_PATH, i.e. exactly what synk's programs get. None of
these calls needs a GPU or creates a CUDA context.
"""
from __future__ import annotations

import ctypes
import os
import platform
import re
import subprocess
import sys


def resolved(paths: list[str]) -> dict[str, str]:
    """soname -> path for every library ldd resolves for paths."""
    libs: dict[str, str] = {}
    for p in paths:
        try:
            out = subprocess.run(["ldd", p], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        for line in out.splitlines():
            m = re.match(r"\s*(\S+) => (/\S+)", line)
            if m:
                libs.setdefault(m.group(1), m.group(2))
    return libs


def find(libs: dict[str, str], prefix: str) -> str | None:
    return next((v for k, v in sorted(libs.items()) if k.startswith(prefix)), None)


def load(path: str | None, name: str):
    """ctypes handle of path (else of name through the loader's own search), or the reason it failed."""
    try:
        return ctypes.CDLL(path or name), None
    except OSError as e:
        return None, str(e).splitlines()[0]


def int_call(lib, fn: str, *args) -> int | None:
    v = ctypes.c_int(0)
    try:
        rc = getattr(lib, fn)(*args, ctypes.byref(v))
    except AttributeError:
        return None
    return v.value if rc == 0 else None


def cuda_version(v: int | None) -> str:
    return f"{v // 1000}.{v % 1000 // 10}" if v else "unknown"


def sandbox() -> str:
    hints = []
    release = platform.release()
    gvisor = False
    if release == "4.4.0":  # gVisor reports this fixed release
        hints.append("kernel release 4.4.0 (what gVisor reports)")
        gvisor = True
    else:
        hints.append(f"kernel {release}")
    try:
        dmesg = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=5).stdout
        if "gVisor" in dmesg:
            hints.append("dmesg: " + next(ln for ln in dmesg.splitlines() if "gVisor" in ln).strip())
            gvisor = True
    except (OSError, subprocess.SubprocessError, StopIteration):
        pass
    for path in ("/proc/version", "/proc/self/mountinfo"):
        try:
            text = open(path).read()
        except OSError:
            continue
        if "gvisor" in text.lower() or "runsc" in text:
            hints.append(f"{path} names gVisor")
            gvisor = True
    if re.search(r"-fc-|firecracker", release, re.I):
        hints.append("a Firecracker microVM kernel")
    if os.path.exists("/.dockerenv"):
        hints.append("/.dockerenv exists")
    return ("gVisor" if gvisor else "not gVisor") + " (" + "; ".join(hints) + ")"


def main(argv: list[str]) -> int:
    libs = resolved(argv)
    try:
        line = open("/proc/driver/nvidia/version").readline()
        m = re.search(r"Kernel Module\s+(?:for \S+\s+)?([0-9.]+)", line)
        driver = m.group(1) if m else line.strip()
    except OSError:
        driver = "unknown (no /proc/driver/nvidia/version)"
    cuda, why = load(None, "libcuda.so.1")
    if cuda is not None:
        path = None
        try:
            for ln in open("/proc/self/maps"):
                if "libcuda.so" in ln:
                    path = ln.split()[-1]
                    break
        except OSError:
            pass
        if driver.startswith("unknown") and path:
            m = re.search(r"libcuda\.so\.([0-9.]+)$", os.path.realpath(path))
            if m:
                driver = m.group(1) + " (libcuda's file name)"
        print(f"driver: {driver}")
        print(f"cuda driver api: {cuda_version(int_call(cuda, 'cuDriverGetVersion'))} ({path or 'libcuda.so.1'})")
    else:
        print(f"driver: {driver}")
        print(f"cuda driver api: none (libcuda.so.1: {why})")

    path = find(libs, "libcudart.so")
    rt, why = load(path, "libcudart.so")
    if rt is not None:
        print(f"cudart: {cuda_version(int_call(rt, 'cudaRuntimeGetVersion'))} ({os.path.realpath(path) if path else 'loader'})")
    else:
        print(f"cudart: none ({why})")

    path = find(libs, "libcublas.so")
    blas, why = load(path, "libcublas.so")
    if blas is not None:
        parts = [int_call(blas, "cublasGetProperty", ctypes.c_int(k)) for k in (0, 1, 2)]
        v = ".".join(str(x) for x in parts) if None not in parts else "unknown"
        print(f"cublas: {v} ({os.path.realpath(path) if path else 'loader'})")
    else:
        print(f"cublas: none ({why})")

    path = find(libs, "libnccl.so")
    if path is None:
        print("nccl: none (synk's programs load no libnccl: a build without NCCL, or not found)")
    else:
        nccl, why = load(path, "libnccl.so.2")
        v = int_call(nccl, "ncclGetVersion") if nccl is not None else None
        if v:
            # NCCL >= 2.9: major*10000 + minor*100 + patch; before: major*1000 + minor*100 + patch.
            v = f"{v // 10000}.{v % 10000 // 100}.{v % 100}" if v >= 20900 else f"{v // 1000}.{v % 1000 // 100}.{v % 100}"
        print(f"nccl: {v or 'unknown'} ({os.path.realpath(path)}{'' if nccl is not None else ': ' + str(why)})")
    print(f"sandbox: {sandbox()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

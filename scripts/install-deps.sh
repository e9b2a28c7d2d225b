#!/usr/bin/env bash
# scripts/install-deps.sh — installs the Debian 12 packages synk needs to
# build, test and run its benchmark. Debian packages only.
#
# Idempotent and cheap to repeat: it asks dpkg which packages are missing and
# returns at once when none are, so the quick-start scripts call it every
# time. Uses sudo only when not root; never prompts (DEBIAN_FRONTEND).
# CUDA is optional and not installed here: where the toolkit exists
# (/usr/local/cuda) the build picks it up by itself.
set -euo pipefail

packages=(
  build-essential      # g++ 12, make
  cmake                # >= 3.25
  ninja-build
  pkg-config
  libopenblas-dev      # sgemm for the CPU executor
  libboost-context-dev # fibers for the CUDA emulation's kernel threads (tests/cuda_emu)
  zlib1g-dev           # .gz datasets
  libgtest-dev         # the test suite
  libcli11-dev         # command lines of the benchmark and tools
  libfmt-dev
  nlohmann-json3-dev   # benchmark JSON results
  dataset-fashion-mnist  # /usr/share/datasets/fashion-mnist (IDX, 28x28)
  python3-numpy        # tests/python: numpy reads synk's checkpoints (.npz)
  openmpi-bin          # mpirun: multi-node jobs and the `mpi` tests
  libopenmpi-dev       # MPI headers and library (optional: without them synk is single-node)
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "installed" ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo=()
if ((EUID != 0)); then
  if ! command -v sudo >/dev/null; then
    echo "install-deps: not root and sudo is not installed; as root run:" >&2
    echo "  apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
apt_get=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q
         -o Dpkg::Use-Pty=0 --no-install-recommends)

# Refresh the package lists only when they are missing (fresh images ship
# without them) or when installing from the present ones fails.
if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
  "${apt_get[@]}" update
fi
if ! "${apt_get[@]}" install "${missing[@]}"; then
  echo "install-deps: retrying after apt-get update"
  "${apt_get[@]}" update
  "${apt_get[@]}" install "${missing[@]}"
fi

#!/bin/sh
# bench/peers/mpi_allreduce.sh — OpenMPI's MPI_Allreduce over the same sizes
# and with the same table columns as `synk-collectives --op all_reduce`.
#
#   bench/peers/mpi_allreduce.sh [--min-bytes B] [--max-bytes B] [--iters I] [--warmup W]
#   NP=2 SYNK=build/bin/synk-collectives bench/peers/mpi_allreduce.sh   # both, side by side
#
# Needs Debian's OpenMPI: apt-get install -y --no-install-recommends openmpi-bin libopenmpi-dev
# NP (default 2) ranks; MPI binds them to cores (its default for np <= 2),
# like synk-collectives pins its ranks. With SYNK set to a synk-collectives
# binary, it runs that first with the same sizes.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
np=${NP:-2}
out=${TMPDIR:-/tmp}/synk-mpi-allreduce.$$
trap 'rm -f "$out"' EXIT INT TERM
command -v mpicc >/dev/null || { echo "mpicc not found: apt-get install openmpi-bin libopenmpi-dev" >&2; exit 1; }
mpicc -O2 -o "$out" "$here/mpi_allreduce.c"
min=65536 max=67108864 iters=20 warmup=5
while [ $# -gt 0 ]; do
  case "$1" in
    --min-bytes) min=$2; shift 2 ;;
    --max-bytes) max=$2; shift 2 ;;
    --iters) iters=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 1 ;;
  esac
done
if [ -n "${SYNK:-}" ]; then
  "$SYNK" --op all_reduce --workers "$np" --min-bytes "$min" --max-bytes "$max" --iters "$iters" --warmup "$warmup"
  echo
fi
# OMPI_MCA_* quiet the warnings of a container without a network or a job manager.
OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-cma} \
mpirun --allow-run-as-root --oversubscribe -np "$np" "$out" \
  --min-bytes "$min" --max-bytes "$max" --iters "$iters" --warmup "$warmup"

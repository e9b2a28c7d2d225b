/* bench/peers/mpi_allreduce.c — OpenMPI's MPI_Allreduce (float sum) timed the
 * way synk-collectives times synk's all_reduce, for a side-by-side table.
 *
 * Per size (doubling from --min-bytes to --max-bytes): one checked call
 * (#wrong = elements differing from the exact sum, over all ranks), --warmup
 * untimed calls, then --iters calls each after MPI_Barrier; an iteration's
 * time is the slowest rank's (MPI_Reduce MAX) and the row shows the median.
 * algbw = size / time, busbw = algbw * 2(n-1)/n (nccl-tests). Out of place,
 * like synk-collectives. Usage (see mpi_allreduce.sh):
 *   mpirun -np 2 ./mpi_allreduce [--min-bytes B] [--max-bytes B] [--iters I] [--warmup W]
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_double(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

static float value(int rank, size_t i) { return (float)((long)((i * 7 + rank * 3) % 61) - 30); }

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, n = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  size_t min_bytes = 65536, max_bytes = (size_t)64 << 20;
  int iters = 20, warmup = 5;
  for (int a = 1; a + 1 < argc; a += 2) {
    if (!strcmp(argv[a], "--min-bytes")) min_bytes = strtoull(argv[a + 1], NULL, 10);
    else if (!strcmp(argv[a], "--max-bytes")) max_bytes = strtoull(argv[a + 1], NULL, 10);
    else if (!strcmp(argv[a], "--iters")) iters = atoi(argv[a + 1]);
    else if (!strcmp(argv[a], "--warmup")) warmup = atoi(argv[a + 1]);
    else {
      if (rank == 0) fprintf(stderr, "unknown option %s\n", argv[a]);
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
  }
  if (iters < 1 || min_bytes < 4 || min_bytes > max_bytes) {
    if (rank == 0) fprintf(stderr, "bad options\n");
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  const size_t max_count = max_bytes / sizeof(float);
  float* in = malloc(max_count * sizeof(float));
  float* out = malloc(max_count * sizeof(float));
  double* t = malloc(sizeof(double) * iters);
  double* tmax = malloc(sizeof(double) * iters);
  if (!in || !out || !t || !tmax) MPI_Abort(MPI_COMM_WORLD, 1);
  memset(in, 0, max_count * sizeof(float));
  memset(out, 0, max_count * sizeof(float));
  if (rank == 0) {
    printf("# OpenMPI MPI_Allreduce, %d ranks, float sum, out of place; iters %d, warmup %d; "
           "time = median over iters of the slowest rank\n", n, iters, warmup);
    printf("#%11s %12s %8s %6s %10s %12s %12s %8s\n", "size(B)", "count", "type", "redop", "time(us)",
           "algbw(GB/s)", "busbw(GB/s)", "#wrong");
  }
  for (size_t bytes = min_bytes; bytes <= max_bytes; bytes *= 2) {
    const size_t count = bytes / sizeof(float);
    for (size_t i = 0; i < count; ++i) in[i] = value(rank, i);
    MPI_Allreduce(in, out, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    long long wrong = 0, wrong_all = 0;
    for (size_t i = 0; i < count; ++i) {
      float want = 0;
      for (int r = 0; r < n; ++r) want += value(r, i);
      wrong += out[i] != want;
    }
    MPI_Reduce(&wrong, &wrong_all, 1, MPI_LONG_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
    for (int w = 0; w < warmup; ++w) MPI_Allreduce(in, out, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    for (int it = 0; it < iters; ++it) {
      MPI_Barrier(MPI_COMM_WORLD);
      double t0 = MPI_Wtime();
      MPI_Allreduce(in, out, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      t[it] = MPI_Wtime() - t0;
    }
    MPI_Reduce(t, tmax, iters, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    if (rank == 0) {
      qsort(tmax, iters, sizeof(double), cmp_double);
      double med = iters % 2 ? tmax[iters / 2] : 0.5 * (tmax[iters / 2 - 1] + tmax[iters / 2]);
      double algbw = bytes / med / 1e9;
      printf("%12zu %12zu %8s %6s %10.2f %12.2f %12.2f %8lld\n", bytes, count, "float", "sum", med * 1e6, algbw,
             algbw * 2.0 * (n - 1) / n, wrong_all);
      fflush(stdout);
    }
    if (bytes > max_bytes / 2) break;
  }
  free(in);
  free(out);
  free(t);
  free(tmax);
  MPI_Finalize();
  return 0;
}

// synk-mnist — trains the Lasagne MNIST example models (mlp, cnn) and two
// modern ones (resnet, vit; models.hpp) on an MNIST-format data set
// (Fashion-MNIST by default) and reports throughput and accuracy; the
// headline benchmark of synk.
//
//   synk-mnist --model mlp --epochs 10 --json mlp.json
//   synk-mnist --model vit --epochs 3 --workers 2
//   synk-mnist --model mlp --epochs 5 --save ck.npz         # checkpoint after every epoch
//   synk-mnist --model mlp --epochs 5 --resume ck.npz       # train on from it
//   synk-mnist --model mlp --epochs 0 --resume ck.npz       # evaluate it
//   synk-mnist --model mlp --optimizer adam --workers 2 --shard-optimizer   # ZeRO-1
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <numeric>
#include <random>
#include <span>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <synk/cuda_session.hpp>
#include <synk/synk.hpp>

#include "blas_core.hpp"
#include "common/bench_main.hpp"
#if SYNK_HAVE_CUDA
#include "common/gpu_info.hpp"
#endif
#include "models.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Copies rows idx[begin, end) of src into dst (dst has end-begin rows).
void gather_rows(const synk::Array& src, const std::vector<int64_t>& idx, size_t begin, size_t end,
                 synk::Array& dst) {
  const size_t row_bytes = src.nbytes() / static_cast<size_t>(std::max<int64_t>(src.rows(), 1));
  auto* out = static_cast<char*>(dst.raw());
  const auto* in = static_cast<const char*>(src.raw());
  for (size_t i = begin; i < end; ++i)
    std::memcpy(out + (i - begin) * row_bytes, in + static_cast<size_t>(idx[i]) * row_bytes, row_bytes);
}

synk::Shape with_rows(synk::Shape s, int64_t rows) {
  s[0] = rows;
  return s;
}

// A one-line progress bar on a terminal, redrawn at most ~10 times a second.
class Progress {
 public:
  Progress(bool tty, int epoch, int epochs, size_t total) : tty_(tty), epoch_(epoch), epochs_(epochs), total_(total) {}
  void update(size_t done, double loss, double rate) {
    if (!tty_) return;
    auto now = Clock::now();
    if (done < total_ && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    const int width = 30;
    int fill = total_ ? static_cast<int>(width * done / total_) : width;
    std::fprintf(stderr, "\repoch %d/%d [%.*s%*s] %3zu%%  loss %.4f  %.0f samples/s ", epoch_, epochs_, fill,
                 "##############################", width - fill, "", total_ ? 100 * done / total_ : 100, loss, rate);
    std::fflush(stderr);
  }
  void finish() {
    if (tty_) std::fprintf(stderr, "\r\033[K");
  }

 private:
  bool tty_;
  int epoch_, epochs_;
  size_t total_;
  Clock::time_point last_{};
};

struct EvalResult {
  double loss = 0, accuracy = 0;
};

// The same over the runtime: rows of the shared test set by range.
EvalResult evaluate(const synk::ParallelFunction& fn, const synk::Data& X, const synk::Data& Y, int64_t batch) {
  const int64_t n = X.rows();
  double loss_sum = 0, correct = 0;
  for (int64_t b = 0; b < n; b += batch) {
    int64_t rows = std::min(batch, n - b);
    auto out = fn({X, Y}, {.batch = synk::Range{b, b + rows}});
    loss_sum += out[0].scalar() * static_cast<double>(rows);
    correct += out[1].scalar();
  }
  return {n ? loss_sum / static_cast<double>(n) : NAN, n ? correct / static_cast<double>(n) : NAN};
}

// One process: synk::Function (CPU) or synk::CudaFunction (GPU).
template <class Fn>
EvalResult evaluate(const Fn& fn, const synk::Array& X, const synk::Array& Y, int64_t batch) {
  const int64_t n = X.rows();
  double loss_sum = 0, correct = 0;
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  for (int64_t b = 0; b < n; b += batch) {
    int64_t rows = std::min(batch, n - b);
    synk::Array xb(X.dtype(), with_rows(X.shape(), rows)), yb(Y.dtype(), with_rows(Y.shape(), rows));
    gather_rows(X, idx, static_cast<size_t>(b), static_cast<size_t>(b + rows), xb);
    gather_rows(Y, idx, static_cast<size_t>(b), static_cast<size_t>(b + rows), yb);
    auto out = fn({xb, yb});
    loss_sum += out[0].scalar() * static_cast<double>(rows);
    correct += out[1].scalar();
  }
  return {n ? loss_sum / static_cast<double>(n) : NAN, n ? correct / static_cast<double>(n) : NAN};
}

int run(int argc, char** argv) {
  CLI::App app{"synk-mnist: train MNIST-style models (mlp, cnn, resnet, vit) with synk"};
  std::string model = "mlp", device = "cpu", data = synk::kDefaultMnistDir, json_path, trace_path, save_path,
              resume_path;
  int epochs = 10, workers = 0, threads = 1;
  int64_t batch = 500, train_limit = 0;
  uint64_t seed = 1;
  float lr = 0, momentum = 0.9f;
  app.add_option("--model", model, "mlp, cnn, resnet or vit (models.hpp says what each is and how it trains)")
      ->check(CLI::IsMember({"mlp", "cnn", "resnet", "vit"}));
  app.add_option("--epochs", epochs, "training epochs (0: only with --resume, evaluates the checkpoint)")
      ->check(bench::integer(0, 100000));
  app.add_option("--batch", batch, "minibatch size")->check(bench::integer(1, uint64_t{1} << 30));
  app.add_option("--workers", workers,
                 "ranks in total; 0 (default): one per GPU with --device cuda, one per core on the CPU; "
                 "1: a single process, no runtime")
      ->check(bench::integer(0, 256));
  app.add_option("--device", device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--data", data, "directory with MNIST-format IDX files");
  app.add_option("--seed", seed, "seed for initialisation, shuffling and dropout")->check(bench::integer(0));
  app.add_option("--json", json_path, "write results as JSON to this file")->check(bench::writable_file());
  app.add_option("--trace", trace_path,
                 "write a timeline of every rank to this file at the end (Chrome trace JSON: ui.perfetto.dev); "
                 "with one worker the run then goes through the runtime")
      ->check(bench::writable_file());
  app.add_option("--save", save_path,
                 "write a checkpoint (.npz: parameters and optimizer state, numpy reads it) after every epoch "
                 "(atomically: a crash leaves the previous one)")
      ->check(bench::writable_file());
  app.add_option("--resume", resume_path, "start from this checkpoint (written by --save, any worker count)")
      ->check(CLI::ExistingFile);
  app.add_option("--lr", lr, "learning rate (default: the model's: 0.01 mlp and cnn, 0.05 resnet, 2e-3 vit)")
      ->check(bench::number(0, INFINITY, true));
  auto* momentum_opt = app.add_option("--momentum", momentum, "momentum of mlp, cnn (Nesterov) and resnet (default 0.9)")
      ->check(bench::number(0, 1, false, true));
  app.add_option("--threads", threads, "BLAS threads per process")->check(bench::integer(1, 256));
  app.add_option("--train-limit", train_limit,
                 "use only the first N training images (smoke tests; all of them if the set has fewer)")
      ->check(bench::integer(1));
  std::string optimizer;
  app.add_option("--optimizer", optimizer,
                 "train with this optimizer instead of the model's (lr: --lr, else 0.01; 1e-3 for adam, adamw, rmsprop)")
      ->check(CLI::IsMember({"sgd", "momentum", "nesterov", "adam", "rmsprop", "adamw"}));
  bool shard_optimizer = false;
  app.add_flag("--shard-optimizer", shard_optimizer,
               "ZeRO-1: each rank updates, and keeps the optimizer state of, 1/N of the parameters "
               "(TrainSpec::shard_optimizer; the runtime's path even with one worker)");
  bool tf32 = false, graphs = true, host_staged = false, nccl = false, deterministic = false, sync_bn = false,
       report = false;
  int det_chunks = 12;
  int64_t bucket_bytes = int64_t{1} << 20;
  app.add_option("--bucket-bytes", bucket_bytes,
                 "gradient all-reduce buckets, each sent while backward goes on (0: one all-reduce after backward)")
      ->check(bench::integer(0, int64_t{1} << 40));
  auto* det_chunks_opt = app.add_option("--deterministic-chunks", det_chunks,
                 "--deterministic: row chunks per batch (results depend on it, not on the worker count)")
      ->check(bench::integer(1, 4096));
  app.add_flag("--deterministic", deterministic,
               "bitwise-reproducible training for any worker count (fixed row chunks combined in order; "
               "with one worker the run then goes through the runtime)");
  app.add_flag("--report", report,
               "after training, a table of every rank's training-step phases (p50 / p90 / max) naming the "
               "slowest rank and phase (Runtime::stats; in --json too); runs through the runtime");
  auto* sync_bn_flag = app.add_flag("--sync-bn", sync_bn,
               "--model resnet: batch norm statistics over all workers' rows (SyncBatchNorm; default: each "
               "worker's own, as DDP); --batch must divide by the ranks");
  auto* host_staged_flag = app.add_flag("--host-staged", host_staged,
               "--device cuda --workers N: combine through host memory (lets N exceed the GPUs)");
  auto* nccl_flag = app.add_flag("--nccl", nccl,
               "--device cuda: the ranks combine through NCCL even when there is one (it then goes through the "
               "runtime, as several do; default: NCCL for several ranks on one GPU each)");
  auto* tf32_flag = app.add_flag("--tf32", tf32, "--device cuda: let cuBLAS use TF32 tensor cores (default FP32)");
  auto* graphs_flag =
      app.add_flag("--graphs,!--no-graphs", graphs, "--device cuda: replay each function as a CUDA graph (default on)");
  if (!bench::parse(app, argc, argv)) return 0;

  // Flags that only mean something with others: refused rather than ignored.
  if (epochs == 0 && resume_path.empty())
    throw synk::ArgumentError("--epochs 0: only with --resume FILE (evaluates that checkpoint)");
  if (host_staged_flag->count() && !(device == "cuda" && workers != 1))
    throw synk::ArgumentError("--host-staged: needs --device cuda and more than one worker");
  if (nccl_flag->count() && device != "cuda") throw synk::ArgumentError("--nccl: needs --device cuda");
  if (nccl && host_staged) throw synk::ArgumentError("--nccl: not with --host-staged (one way to combine)");
  if (tf32_flag->count() && device != "cuda") throw synk::ArgumentError("--tf32: needs --device cuda");
  if (momentum_opt->count() && model == "vit") throw synk::ArgumentError("--momentum: vit trains with AdamW");
  if (sync_bn_flag->count() && model != "resnet") throw synk::ArgumentError("--sync-bn: needs --model resnet");
  if (sync_bn && deterministic)
    throw synk::ArgumentError("--sync-bn: not with --deterministic (its row chunks run one by one on each worker)");
  if (det_chunks_opt->count() && !deterministic) throw synk::ArgumentError("--deterministic-chunks: needs --deterministic");
  if (graphs_flag->count() && device != "cuda")
    throw synk::ArgumentError(std::string(graphs ? "--graphs" : "--no-graphs") + ": needs --device cuda");
  struct stat data_st {};
  if (::stat(data.c_str(), &data_st) != 0 || !S_ISDIR(data_st.st_mode))
    throw synk::ArgumentError("--data " + data + ": no such directory");
  const bool cuda = device == "cuda";
  // Several CUDA workers: the runtime (rank r on GPU r) checks the devices
  // itself, in a child, so this process has no CUDA context before fork.
  if (cuda && workers == 1 && !synk::CudaSession::available())
    throw synk::BackendError(SYNK_HAVE_CUDA ? "--device cuda: no CUDA device is visible"
                                            : "--device cuda: synk was built without CUDA");
  // Fork first: the workers start small and share everything else through
  // the runtime's shared memory.
  synk::Runtime rt;
  // Under mpirun or srun (several processes): one node each, joined by the
  // runtime (docs/multinode.md); node 0 prints and writes files.
  const bool launched = synk::launched_processes() > 1;
  // What only the runtime gives, even to one rank: its timeline, its
  // deterministic mode, a comm.
  const bool runtime_asked = !trace_path.empty() || deterministic || nccl || report || shard_optimizer;
  int nodes = 1;
  if (workers != 1 || launched || runtime_asked) {
    rt = synk::fork({.workers = workers,
                     .device = device.c_str(),
                     .comm = host_staged ? synk::CommBackend::host_staged
                             : nccl      ? synk::CommBackend::nccl
                                         : synk::CommBackend::automatic,
                     .seed = seed,
                     .trace = trace_path.empty() ? nullptr : trace_path.c_str(),
                     .deterministic = deterministic,
                     .deterministic_chunks = det_chunks,
                     .bucket_bytes = static_cast<size_t>(bucket_bytes)});
    workers = rt.local_size();  // 0 resolved by the runtime: one rank per GPU or per core
    nodes = rt.nodes();
    if (rt.node() != 0 && !std::freopen("/dev/null", "w", stdout)) std::fclose(stdout);
    if (rt.node() != 0) json_path.clear();
    // One GPU or core: the single-process path, no runtime (unless asked for).
    if (workers == 1 && nodes == 1 && !runtime_asked) rt.close();
  }
  const int ranks = workers * nodes;

  synk::MnistSet ds = synk::load_mnist(data);
  if (train_limit > 0 && train_limit < ds.train_images.rows()) {
    std::vector<int64_t> first(static_cast<size_t>(train_limit));
    std::iota(first.begin(), first.end(), 0);
    synk::Array xi(ds.train_images.dtype(), with_rows(ds.train_images.shape(), train_limit));
    synk::Array yi(ds.train_labels.dtype(), with_rows(ds.train_labels.shape(), train_limit));
    gather_rows(ds.train_images, first, 0, first.size(), xi);
    gather_rows(ds.train_labels, first, 0, first.size(), yi);
    ds.train_images = std::move(xi);
    ds.train_labels = std::move(yi);
  }
  const int64_t n_train = ds.train_images.rows();
  if (n_train < batch)
    throw synk::ArgumentError("--batch " + std::to_string(batch) + " is larger than the training set (" +
                              std::to_string(n_train) + " rows)");

  synk::Graph g;
  const int64_t steps = n_train / batch;  // the last partial batch is dropped, as in Lasagne's example
  mnist::Model m = mnist::build(g, model, {.lr = lr, .momentum = momentum, .steps_per_epoch = steps, .epochs = epochs, .sync_bn = sync_bn});
  if (!optimizer.empty()) {
    const bool adaptive = optimizer == "adam" || optimizer == "adamw" || optimizer == "rmsprop";
    synk::optim::Options o{.lr = lr > 0 ? lr : adaptive ? 1e-3f : 0.01f, .momentum = momentum};
    using Fn = std::vector<synk::Update> (*)(const std::vector<synk::Tensor>&, const std::vector<synk::Tensor>&,
                                              const synk::optim::Options&);
    const Fn fn = optimizer == "sgd"        ? &synk::optim::sgd
                  : optimizer == "momentum" ? &synk::optim::momentum
                  : optimizer == "nesterov" ? &synk::optim::nesterov
                  : optimizer == "adam"     ? &synk::optim::adam
                  : optimizer == "rmsprop"  ? &synk::optim::rmsprop
                                            : &synk::optim::adamw;
    m.optimizer = [fn, o](const std::vector<synk::Tensor>& p, const std::vector<synk::Tensor>& gr) { return fn(p, gr, o); };
    m.optimizer_name = optimizer + " lr " + std::to_string(o.lr);
  }
  // The optimizer state one rank keeps: the f32 variables the optimizer
  // makes (after node `first`), but not a sharded step's copy of its slice
  // of the parameters ("__synk_zero1/<step>#k", no slot after it).
  auto state_bytes = [&](size_t first) {
    int64_t bytes = 0;
    for (size_t id = first; id < g.size(); ++id) {
      const synk::Node& n = g.node(static_cast<int32_t>(id));
      const std::string zero1 = "__synk_zero1/";
      if (n.op != synk::Op::Variable || (n.name.rfind(zero1, 0) == 0 && n.name.find('/', zero1.size()) == std::string::npos))
        continue;
      bytes += synk::numel(n.shape) * static_cast<int64_t>(synk::dtype_size(n.dtype));
    }
    return bytes;
  };
  int64_t optimizer_state_bytes = 0;
  const bool tty = isatty(STDERR_FILENO) != 0;
  std::mt19937_64 rng(seed);
  std::vector<int64_t> order(static_cast<size_t>(n_train));
  std::iota(order.begin(), order.end(), 0);
  std::vector<double> epoch_seconds, train_losses, test_losses, test_accuracies;  // per epoch
  double train_time = 0;
  std::string gpu_text;
  nlohmann::json gpu_json;
#if SYNK_HAVE_CUDA
  if (cuda) {
    const bench::GpuInfo info = bench::gpu_info(0);
    gpu_text = ", GPU " + bench::describe(info) + (tf32 ? ", TF32" : ", FP32") +
               (graphs ? ", CUDA graphs" : ", no CUDA graphs");
    gpu_json = bench::to_json(info);
    gpu_json["tf32"] = tf32;
    gpu_json["graphs"] = graphs;
  }
#endif
  if (nodes > 1) std::printf("synk-mnist: %d nodes x %d workers = %d ranks\n", nodes, workers, ranks);
  if (sync_bn && batch % ranks != 0)
    throw synk::ArgumentError("--sync-bn: --batch " + std::to_string(batch) + " must divide by the " +
                              std::to_string(ranks) + " ranks (a training step with synchronized batch norm "
                              "needs equal shares)");
  std::printf("synk-mnist: model %s, device %s, workers %d, batch %lld, %lld training images, %d epochs%s\n"
              "synk-mnist: %zu parameter tensors, %s\n",
              model.c_str(), device.c_str(), workers, static_cast<long long>(batch),
              static_cast<long long>(n_train), epochs, gpu_text.c_str(), m.params.size(), m.optimizer_name.c_str());
  // One epoch of training through `step(s)`, then a test evaluation.
  // After every epoch (and once when no epoch runs), --save.
  auto run_epochs = [&](auto&& step, auto&& eval_test, auto&& save) {
    for (int e = 1; e <= epochs; ++e) {
      std::shuffle(order.begin(), order.end(), rng);
      Progress bar(tty, e, epochs, static_cast<size_t>(steps));
      double loss_sum = 0;
      auto t0 = Clock::now();
      for (int64_t s = 0; s < steps; ++s) {
        loss_sum += step(s);
        double el = seconds_since(t0);
        bar.update(static_cast<size_t>(s + 1), loss_sum / static_cast<double>(s + 1),
                   el > 0 ? static_cast<double>((s + 1) * batch) / el : 0);
      }
      double secs = seconds_since(t0);
      bar.finish();
      train_time += secs;
      epoch_seconds.push_back(secs);
      train_losses.push_back(loss_sum / static_cast<double>(steps));
      EvalResult val = eval_test();
      test_losses.push_back(val.loss);
      test_accuracies.push_back(val.accuracy);
      std::printf("epoch %d/%d  %.2fs  train loss %.4f  test loss %.4f  test acc %.4f  %.0f samples/s\n", e, epochs,
                  secs, train_losses.back(), val.loss, val.accuracy, static_cast<double>(steps * batch) / secs);
      if (!save_path.empty()) {
        save();
        std::printf("checkpoint: saved %s\n", save_path.c_str());
      }
      std::fflush(stdout);
    }
    if (epochs == 0 && !save_path.empty()) {
      save();
      std::printf("checkpoint: saved %s\n", save_path.c_str());
    }
    return eval_test();
  };
  auto resumed = [&] { std::printf("checkpoint: resumed from %s\n", resume_path.c_str()); };
  EvalResult test;
  // One process: the same training loop over a CPU Session or, on a GPU,
  // a CudaSession (the same functions compiled by the CUDA executor).
  auto train_single = [&](auto& session) {
    auto grads = synk::grad(m.train_loss, m.params);
    const size_t before = g.size();
    auto updates = m.optimizer(m.params, grads);
    optimizer_state_bytes = state_bytes(before);
    auto train = session.function({"train", {m.x, m.y}, {{m.train_loss}}, updates});
    auto eval = session.function({"eval", {m.x, m.y}, {{m.eval_loss}, {m.eval_correct, synk::Collect::sum}}, {}});
    if (!resume_path.empty()) {
      synk::load_checkpoint(resume_path, session);
      resumed();
    }
    synk::Array xb(ds.train_images.dtype(), with_rows(ds.train_images.shape(), batch));
    synk::Array yb(ds.train_labels.dtype(), with_rows(ds.train_labels.shape(), batch));
    return run_epochs(
        [&](int64_t s) {
          gather_rows(ds.train_images, order, static_cast<size_t>(s * batch), static_cast<size_t>((s + 1) * batch), xb);
          gather_rows(ds.train_labels, order, static_cast<size_t>(s * batch), static_cast<size_t>((s + 1) * batch), yb);
          return static_cast<double>(train({xb, yb})[0].scalar());
        },
        [&] { return evaluate(eval, ds.test_images, ds.test_labels, batch); },
        [&] { synk::save_checkpoint(save_path, session); });
  };
  // One rank without a runtime, unless something only the runtime gives was asked for.
  const bool single = workers == 1 && nodes == 1 && !runtime_asked;
  if (cuda && single) {
    synk::CudaSession session(g, {.seed = seed, .device = 0, .tf32 = tf32, .graphs = graphs});
    test = train_single(session);
  } else if (single) {
    synk::Session session(g, {.seed = seed, .blas_threads = threads});
    test = train_single(session);
  } else {
    // Each rank computes the gradient of its share of the batch; one
    // all-reduce of the flat gradient buffer, then the same update on every
    // rank.
    // --shard-optimizer: the gradients reduce-scattered, each rank updates
    // its slice, the parameters all-gathered (TrainSpec::shard_optimizer).
    const size_t before = g.size();
    auto train = rt.train_step({.name = "train", .inputs = {m.x, m.y}, .outputs = {{m.train_loss}},
                                .loss = m.train_loss, .params = m.params,
                                .optimizer = m.optimizer, .shard_optimizer = shard_optimizer});
    optimizer_state_bytes = state_bytes(before);
    auto eval = rt.function({"eval", {m.x, m.y}, {{m.eval_loss}, {m.eval_correct, synk::Collect::sum}}, {}});
    rt.distribute();
    if (!resume_path.empty()) {
      synk::load_checkpoint(resume_path, rt);  // every rank: a checkpoint of any worker count
      resumed();
    }
    synk::Data X = rt.data(ds.train_images), Y = rt.data(ds.train_labels);
    synk::Data TX = rt.data(ds.test_images), TY = rt.data(ds.test_labels);
    test = run_epochs(
        [&](int64_t s) {
          std::span<const int64_t> idx(order.data() + s * batch, static_cast<size_t>(batch));
          return static_cast<double>(train({X, Y}, {.batch = idx})[0].scalar());
        },
        [&] { return evaluate(eval, TX, TY, batch); },
        [&] {
          if (rt.node() == 0) synk::save_checkpoint(save_path, rt);  // the master's copy (the same on every node)
        });
  }
  // The straggler report (before close(): the statistics live with the runtime).
  nlohmann::json stats_json;
  if (report && !single) {
    const synk::StepStats st = rt.stats();
    std::printf("training steps per rank (ms):\n%s", st.table().c_str());
    nlohmann::json rs = nlohmann::json::array();
    for (const synk::RankStepStats& r : st.ranks) {
      nlohmann::json ph;
      for (int p = 0; p < synk::kStepPhases; ++p)
        ph[synk::step_phase_name(static_cast<synk::StepPhase>(p))] = {
            {"p50_ms", r.phase[p].p50_ms}, {"p90_ms", r.phase[p].p90_ms}, {"max_ms", r.phase[p].max_ms}};
      rs.push_back({{"rank", r.rank}, {"node", r.node}, {"steps", r.steps}, {"phases", ph}});
    }
    stats_json = {{"ranks", rs}, {"slowest_rank", st.slowest_rank},
                  {"slowest_phase", synk::step_phase_name(st.slowest_phase)},
                  {"slowest_p50_ms", st.slowest_p50_ms}, {"median_p50_ms", st.median_p50_ms}};
  }
  // No epoch: no throughput (NaN, null in the JSON).
  const double sps = epochs ? static_cast<double>(steps * batch) * epochs / train_time : NAN;
  if (epochs)
    std::printf("result: %.0f samples/s, test loss %.4f, test accuracy %.4f\n", sps, test.loss, test.accuracy);
  else
    std::printf("result: no training (--epochs 0), test loss %.4f, test accuracy %.4f\n", test.loss, test.accuracy);
  std::printf("optimizer state: %lld bytes per rank%s\n", static_cast<long long>(optimizer_state_bytes),
              shard_optimizer ? " (sharded)" : "");
  if (!trace_path.empty()) {
    rt.close();  // writes the timeline
    std::printf("trace: %s (open in ui.perfetto.dev or chrome://tracing)\n", trace_path.c_str());
  }

  if (!json_path.empty()) {
    nlohmann::json j = {{"model", model},          {"device", device},        {"workers", workers},
                        {"epochs", epochs},        {"batch", batch},          {"samples_per_sec", sps},
                        {"epoch_seconds", epoch_seconds}, {"train_loss", train_losses},
                        {"test_loss", test.loss},  {"test_accuracy", test.accuracy}, {"framework", "synk"},
                        {"test_loss_per_epoch", test_losses}, {"test_accuracy_per_epoch", test_accuracies},
                        {"threads", threads},      {"seed", seed},   {"deterministic", deterministic},
                        {"blas_core", mnist::blas_core_name()},
                        {"nodes", nodes},          {"ranks", ranks},  {"bucket_bytes", bucket_bytes},
                        {"optimizer", m.optimizer_name},
                        {"shard_optimizer", shard_optimizer},
                        {"optimizer_state_bytes_per_rank", optimizer_state_bytes}};
    if (!stats_json.is_null()) j["step_stats"] = stats_json;
    if (cuda) {
      j["gpu"] = gpu_json;
      // How the ranks combined: asked for, or what the runtime picks.
      j["comm"] = host_staged ? "host_staged" : nccl ? "nccl" : "automatic";
    }
    if (!resume_path.empty()) j["resumed_from"] = resume_path;
    bench::write_json(json_path, j);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  mnist::maybe_reexec_for_blas_core(argv);
  return bench::guarded_main("synk-mnist", run, argc, argv);
}

// examples/amp_partial_sums.cpp — the Amp pattern (seed 000): the training
// data sit in shared memory (instead of temporary JSON files), each rank
// computes the partial cost and its gradient over its part of the images,
// the results come back to the master (instead of through Queues), which
// adds up the partial values and takes a gradient step. The number of ranks
// is found automatically (synk::cpu_count(), or SYNK_WORKERS) and printed
// first, as Amp prints it at the top of its log.
//
// The model: a linear fit E(x) = w . x + b of "energies" to "fingerprints";
// cost = sum over images of (E(x) - E_ref)^2. Partial results are
// (cost, gradient) pairs -- a std::pair<double, std::vector<double>>, sent
// through synk::Codec. They are summed in part order
// (map_reduce_ordered), so the sums are bit for bit those of the serial
// loop over the same parts; the program checks that and exits 1 otherwise.
#include <cmath>
#include <cstdio>
#include <utility>
#include <vector>

#include "synk/synk.hpp"

namespace {

constexpr int kFeatures = 8;

struct Part {
  synk::DataRef x, e;  // [images, kFeatures] f32, [images] f32
  int64_t begin, end;
  std::array<double, kFeatures + 1> params;  // w..., b
};

using Partial = std::pair<double, std::vector<double>>;  // cost, d cost / d params

Partial partial(synk::JobContext& ctx, const Part& p) {
  std::span<const float> x = ctx.rows<float>(p.x, p.begin, p.end - p.begin);
  std::span<const float> e = ctx.rows<float>(p.e, p.begin, p.end - p.begin);
  Partial out{0.0, std::vector<double>(kFeatures + 1, 0.0)};
  for (int64_t i = 0; i < p.end - p.begin; ++i) {
    double pred = p.params[kFeatures];
    for (int k = 0; k < kFeatures; ++k) pred += p.params[k] * x[static_cast<size_t>(i * kFeatures + k)];
    const double r = pred - e[static_cast<size_t>(i)];
    out.first += r * r;
    for (int k = 0; k < kFeatures; ++k) out.second[k] += 2 * r * x[static_cast<size_t>(i * kFeatures + k)];
    out.second[kFeatures] += 2 * r;
  }
  return out;
}

Partial add(Partial acc, const Partial& p) {
  acc.first += p.first;
  for (size_t k = 0; k < acc.second.size(); ++k) acc.second[k] += p.second[k];
  return acc;
}

}  // namespace

int main() {
  synk::Runtime rt = synk::fork();
  std::printf("Amp-style training: %d processes (synk::cpu_count() = %d)\n", rt.size(), synk::cpu_count());
  const int64_t images = 20000, part = 1000;
  std::vector<float> x(static_cast<size_t>(images * kFeatures)), e(static_cast<size_t>(images));
  uint32_t s = 7;
  auto rnd = [&s] {
    s = s * 1664525u + 1013904223u;
    return static_cast<float>(s >> 8) / 16777216.f - 0.5f;
  };
  for (float& v : x) v = rnd();
  for (int64_t i = 0; i < images; ++i) {
    double t = 0.25;
    for (int k = 0; k < kFeatures; ++k) t += (k + 1) * 0.1 * x[static_cast<size_t>(i * kFeatures + k)];
    e[static_cast<size_t>(i)] = static_cast<float>(t + 0.01 * rnd());
  }
  synk::Data X = rt.data(synk::Array::from(x, {images, kFeatures}).view());
  synk::Data E = rt.data(synk::Array::from(e, {images}).view());

  std::array<double, kFeatures + 1> params{};
  bool ok = true;
  double cost = 0;
  const double lr = 0.5 / static_cast<double>(images);
  for (int step = 0; step < 200; ++step) {
    std::vector<Part> parts;
    for (int64_t b = 0; b < images; b += part) parts.push_back({X.ref(), E.ref(), b, std::min(images, b + part), params});
    const Partial total = rt.map_reduce_ordered(&partial, parts, Partial{0.0, std::vector<double>(kFeatures + 1)}, &add);
    if (step % 50 == 0 || step == 199) {
      // The same sums from a serial loop over the same parts.
      Partial serial{0.0, std::vector<double>(kFeatures + 1)};
      for (const Part& p : parts) {
        Partial q{0.0, std::vector<double>(kFeatures + 1, 0.0)};
        for (int64_t i = p.begin; i < p.end; ++i) {
          double pred = params[kFeatures];
          for (int k = 0; k < kFeatures; ++k) pred += params[k] * x[static_cast<size_t>(i * kFeatures + k)];
          const double r = pred - e[static_cast<size_t>(i)];
          q.first += r * r;
          for (int k = 0; k < kFeatures; ++k) q.second[k] += 2 * r * x[static_cast<size_t>(i * kFeatures + k)];
          q.second[kFeatures] += 2 * r;
        }
        serial = add(std::move(serial), q);
      }
      const bool same = serial.first == total.first && serial.second == total.second;
      ok = ok && same;
      std::printf("step %3d: cost %.6f %s\n", step, total.first, same ? "(= serial)" : "(DIFFERS from serial)");
    }
    cost = total.first;
    for (int k = 0; k <= kFeatures; ++k) params[k] -= lr * total.second[k];
  }
  std::printf("w = [");
  for (int k = 0; k < kFeatures; ++k) std::printf("%s%.3f", k ? ", " : "", params[k]);
  std::printf("], b = %.3f\n", params[kFeatures]);
  // The fit recovers the weights (k+1)/10 and b = 0.25 closely.
  for (int k = 0; k < kFeatures; ++k) ok = ok && std::fabs(params[k] - (k + 1) * 0.1) < 0.05;
  ok = ok && std::fabs(params[kFeatures] - 0.25) < 0.02 && cost / images < 1e-3;
  std::printf("%s\n", ok ? "ok" : "MISMATCH");
  return ok ? 0 : 1;
}

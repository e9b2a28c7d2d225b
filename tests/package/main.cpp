// tests/package/main.cpp — the consumer of an installed synk: builds a small
// graph with gradients, round-trips it through the serialiser, checks a
// synk::Error crosses the library boundary and runs a function on two ranks. Exit code 0 means the package's
// headers, config header, library and exported target all work.
#include <synk/synk.hpp>

#include <cstdio>
#include <vector>

namespace {

int failures = 0;

void check(bool ok, const char* what) {
  std::printf("%s: %s\n", ok ? "ok  " : "FAIL", what);
  if (!ok) ++failures;
}

}  // namespace

int main() {
  std::printf("synk %s (CUDA %d)\n", SYNK_VERSION, SYNK_HAVE_CUDA);
  try {
    synk::Graph g;
    auto x = g.input("x", synk::f32, {synk::batch, 3});
    auto W = g.variable("W", {3, 2}, synk::Init::glorot_uniform());
    auto b = g.variable("b", {2});
    auto loss = synk::mean(synk::square(synk::matmul(x, W) + b));
    check(loss.shape().empty(), "loss is a scalar");

    auto gs = synk::grad(loss, {W, b});
    check(gs.size() == 2 && gs[0].shape() == synk::Shape{3, 2} &&
              gs[1].shape() == synk::Shape{2},
          "gradients have the parameters' shapes");

    auto def = synk::make_function_def({"step", {x}, {{loss}}, {{W, W - 0.1f * gs[0]}}});
    std::vector<uint8_t> buf = synk::serialize(g, {def});
    synk::Graph g2;
    auto fns = synk::deserialize(buf.data(), buf.size(), g2);
    check(g2.size() == g.size() && fns.size() == 1 && fns[0].name == "step",
          "serialise / deserialise round trip");

    bool threw = false;
    try {
      synk::matmul(x, b);  // [batch, 3] x [2]: not 2-D
    } catch (const synk::ShapeError&) {
      threw = true;
    }
    check(threw, "ShapeError is catchable across the library boundary");

    auto a = synk::Array::from(std::vector<float>{1.5f}, {});
    check(a.scalar() == 1.5f, "Array round trip");

    // The runtime from the package: two CPU ranks, each summing its rows.
    synk::Runtime rt = synk::fork({.workers = 2});
    auto total = rt.function({"total", {x}, {{synk::sum(x), synk::Collect::sum}}});
    rt.distribute();
    synk::Data X = rt.data(synk::Array::from(std::vector<float>(12, 0.5f), {4, 3}));
    check(total({X})[0].scalar() == 6.f, "a function on two ranks sums every row once");
    rt.close();
  } catch (const synk::Error& e) {
    std::printf("FAIL: unexpected synk::Error: %s\n", e.what());
    return 1;
  }
  return failures == 0 ? 0 : 1;
}

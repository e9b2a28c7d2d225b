// synk/jobs_impl.hpp — the definitions of Runtime's job templates
// (declared in runtime.hpp, described in jobs.hpp). Included by runtime.hpp.
#pragma once

#include "synk/jobs.hpp"
#include "synk/runtime.hpp"

namespace synk {
namespace detail {

// The jobs as bytes: job i at [offsets[i], offsets[i+1]).
template <class J> struct EncodedJobs {
  std::vector<uint8_t> bytes;
  std::vector<uint64_t> offsets;
  explicit EncodedJobs(const std::vector<J>& jobs) {
    offsets.resize(jobs.size() + 1);
    if constexpr (std::is_trivially_copyable_v<J> && !requires(ByteWriter& w, const J& v) { Codec<J>::write(w, v); }) {
      bytes.resize(jobs.size() * sizeof(J));
      if (!jobs.empty()) std::memcpy(bytes.data(), jobs.data(), bytes.size());
      for (size_t i = 0; i <= jobs.size(); ++i) offsets[i] = i * sizeof(J);
    } else {
      ByteWriter w;
      for (size_t i = 0; i < jobs.size(); ++i) {
        offsets[i] = w.bytes().size();
        encode_value(w, jobs[i]);
      }
      offsets[jobs.size()] = w.bytes().size();
      bytes = std::move(w.bytes());
    }
  }
};

// Result bytes kept inline per job (larger ones go to the rank's result space).
template <class R> constexpr size_t result_slot() {
  if constexpr (std::is_same_v<R, NoResult>) return 0;
  else if constexpr (std::is_trivially_copyable_v<R>) return sizeof(R);
  else return 48;
}

}  // namespace detail

template <class F, class J> auto Runtime::map(F fn, const std::vector<J>& jobs, int retries) {
  detail::check_job<F, J>();
  using R = detail::JobResult<F, J>;
  using Ret = detail::JobRet<F, J>;
  constexpr bool plain_job = std::is_trivially_copyable_v<J> && !requires(ByteReader& rr) { Codec<J>::read(rr); };
  constexpr bool plain_result =
      std::is_void_v<Ret> || (std::is_trivially_copyable_v<R> && !requires(ByteWriter& ww, const R& vv) {
        Codec<R>::write(ww, vv);
      });
  constexpr size_t slot = std::is_void_v<Ret> ? 0 : detail::result_slot<R>();
  if constexpr (plain_job && plain_result) {
    // The fast path: the jobs as they lie, run a chunk at a time, results
    // copied out at the end.
    std::vector<R> out(std::is_void_v<Ret> ? 0 : jobs.size());
    detail::JobsFast fast{sizeof(J), &detail::chunk_thunk<F, J>, std::is_void_v<Ret> ? nullptr : static_cast<void*>(out.data())};
    run_jobs(&detail::job_thunk<F, J>, detail::fn_word(fn), reinterpret_cast<const uint8_t*>(jobs.data()), nullptr,
             jobs.size(), slot, true, JobSink(), "map", fast, retries);
    if constexpr (!std::is_void_v<Ret>) return out;
  } else {
    detail::EncodedJobs<J> e(jobs);
    if constexpr (std::is_void_v<Ret>) {
      run_jobs(&detail::job_thunk<F, J>, detail::fn_word(fn), e.bytes.data(), e.offsets.data(), jobs.size(), 0,
               false, JobSink(), "map", {}, retries);
    } else {
      std::vector<R> out(jobs.size());
      run_jobs(&detail::job_thunk<F, J>, detail::fn_word(fn), e.bytes.data(), e.offsets.data(), jobs.size(), slot,
               true, [&out](uint64_t i, std::span<const uint8_t> b) { out[i] = detail::decode_result<R>(b); }, "map",
               {}, retries);
      return out;
    }
  }
}

template <class F, class J, class T, class Red>
T Runtime::map_reduce(F fn, const std::vector<J>& jobs, T init, Red reduce, int retries) {
  detail::check_job<F, J>();
  using R = detail::JobResult<F, J>;
  detail::EncodedJobs<J> e(jobs);
  run_jobs(&detail::job_thunk<F, J>, detail::fn_word(fn), e.bytes.data(), e.offsets.data(), jobs.size(),
           detail::result_slot<R>(), false,
           [&](uint64_t, std::span<const uint8_t> b) { init = reduce(std::move(init), detail::decode_result<R>(b)); },
           "map_reduce", {}, retries);
  return init;
}

template <class F, class J, class T, class Red>
T Runtime::map_reduce_ordered(F fn, const std::vector<J>& jobs, T init, Red reduce, int retries) {
  detail::check_job<F, J>();
  using R = detail::JobResult<F, J>;
  detail::EncodedJobs<J> e(jobs);
  run_jobs(&detail::job_thunk<F, J>, detail::fn_word(fn), e.bytes.data(), e.offsets.data(), jobs.size(),
           detail::result_slot<R>(), true,
           [&](uint64_t, std::span<const uint8_t> b) { init = reduce(std::move(init), detail::decode_result<R>(b)); },
           "map_reduce_ordered", {}, retries);
  return init;
}

template <class F, class J> auto Runtime::apply_async(F fn, const J& job, int retries) {
  detail::check_job<F, J>();
  using R = detail::JobResult<F, J>;
  thread_local ByteWriter w;
  w.clear();
  encode_value(w, job);
  uint64_t index = 0;
  std::shared_ptr<detail::JobBatch> b = submit(&detail::job_thunk<F, J>, detail::fn_word(fn), w.bytes().data(),
                                               w.bytes().size(), detail::result_slot<R>(), index, retries);
  return Future<R>(std::move(b), index);
}

template <class F, class J> auto Runtime::map_async(F fn, const std::vector<J>& jobs, int retries) {
  detail::check_job<F, J>();
  using R = detail::JobResult<F, J>;
  std::vector<Future<R>> out;
  out.reserve(jobs.size());
  ByteWriter w;
  for (const J& j : jobs) {
    w.clear();
    encode_value(w, j);
    uint64_t index = 0;
    std::shared_ptr<detail::JobBatch> b = submit(&detail::job_thunk<F, J>, detail::fn_word(fn), w.bytes().data(),
                                                 w.bytes().size(), detail::result_slot<R>(), index, retries,
                                                 "map_async");
    out.emplace_back(std::move(b), index);
  }
  return out;
}

}  // namespace synk

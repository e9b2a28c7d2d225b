// tests/support/device_array.hpp — a typed device array for the GPU tests
// (only where SYNK_HAVE_CUDA is 1): a DeviceBuffer whose element count
// travels with it, so the tests' uploads and downloads never take a count by
// hand. The library itself holds raw DeviceBuffers.
#pragma once

#include <span>
#include <string>

#include "cuda/device.hpp"

namespace synk::cuda {

// A typed device array: its element count travels with it, so kernels and
// copies never take a count by hand.
template <class T>
class DeviceArray {
 public:
  DeviceArray() = default;
  explicit DeviceArray(size_t n) : buf_(n * sizeof(T)), size_(n) {}

  T* data() const { return static_cast<T*>(buf_.data()); }
  size_t size() const { return size_; }
  int device() const { return buf_.device(); }

  void upload(std::span<const T> host) {
    check_size(host.size(), "upload");
    if (size_ != 0) buf_.upload(host.data());
  }
  void download(std::span<T> host) const {
    check_size(host.size(), "download");
    if (size_ != 0) buf_.download(host.data());
  }

 private:
  void check_size(size_t n, const char* what) const {
    if (n != size_)
      throw ArgumentError("DeviceArray::" + std::string(what) + ": host span has " +
                          std::to_string(n) + " elements, device array " +
                          std::to_string(size_));
  }
  DeviceBuffer buf_;
  size_t size_ = 0;
};

}  // namespace synk::cuda

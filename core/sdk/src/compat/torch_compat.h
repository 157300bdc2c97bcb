// The LibTorch APIs that differ between the versions this code builds against (Debian's 1.13 and
// the 2.x of GPU machines), in one place: autocast's per-device switches (one function per
// device in 1.13, a device argument from 2.4 on) and c10d's process-group base (ProcessGroup in
// 1.13, Backend for the concrete Gloo/NCCL groups from 2.0 on). Everything else is the same API.
#pragma once

#include <ATen/autocast_mode.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>
#include <torch/version.h>

#include <stdexcept>
#include <string>

#define WB_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) ||     \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace c10d {
class ProcessGroup;
class Backend;
}  // namespace c10d

namespace wb::compat {

// What the concrete Gloo and NCCL groups derive from, and what the communicator holds.
#if WB_TORCH_AT_LEAST(2, 0)
using ProcessGroupBase = ::c10d::Backend;
#else
using ProcessGroupBase = ::c10d::ProcessGroup;
#endif

// Autocast for a device: CPU and CUDA are what this project uses (others: refused).
inline bool autocast_enabled(c10::DeviceType device) {
#if WB_TORCH_AT_LEAST(2, 4)
  return at::autocast::is_autocast_enabled(device);
#else
  if (device == c10::DeviceType::CPU) return at::autocast::is_cpu_enabled();
  if (device == c10::DeviceType::CUDA) return at::autocast::is_enabled();
  return false;
#endif
}

inline at::ScalarType autocast_dtype(c10::DeviceType device) {
#if WB_TORCH_AT_LEAST(2, 4)
  return at::autocast::get_autocast_dtype(device);
#else
  return device == c10::DeviceType::CPU ? at::autocast::get_autocast_cpu_dtype()
                                        : at::autocast::get_autocast_gpu_dtype();
#endif
}

inline void set_autocast(c10::DeviceType device, bool enabled, at::ScalarType dtype) {
#if WB_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_dtype(device, dtype);
  at::autocast::set_autocast_enabled(device, enabled);
#else
  if (device == c10::DeviceType::CPU) {
    at::autocast::set_autocast_cpu_dtype(dtype);
    at::autocast::set_cpu_enabled(enabled);
  } else if (device == c10::DeviceType::CUDA) {
    at::autocast::set_autocast_gpu_dtype(dtype);
    at::autocast::set_enabled(enabled);
  } else {
    throw std::invalid_argument("autocast: only CPU and CUDA are supported, not " +
                                c10::DeviceTypeName(device));
  }
#endif
}

// Sets autocast for one device for the guard's life and restores what was there before
// (enabled = false: a region that runs in the tensors' own dtypes). At the outermost exit the
// cast cache is cleared, as torch.autocast does.
class AutocastGuard {
 public:
  AutocastGuard(c10::DeviceType device, bool enabled, at::ScalarType dtype)
      : device_(device),
        was_enabled_(autocast_enabled(device)),
        was_dtype_(autocast_dtype(device)) {
    set_autocast(device, enabled, dtype);
    if (enabled) at::autocast::increment_nesting();
    counted_ = enabled;
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;
  ~AutocastGuard() {
    if (counted_ && at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    set_autocast(device_, was_enabled_, was_dtype_);
  }

 private:
  c10::DeviceType device_;
  bool was_enabled_;
  at::ScalarType was_dtype_;
  bool counted_ = false;
};

}  // namespace wb::compat

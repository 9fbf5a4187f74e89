#include "worker/train/runtime.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <fstream>
#include <string>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/version.h>
#ifdef RELORA_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <torch/cuda.h>
#endif

#include "worker/model/torch_compat.h"

namespace relora::train {

namespace {

// A "VmRSS:" / "VmHWM:" line of /proc/self/status, in bytes. Both come from the same kernel
// counters, so the high-water mark read after the current size is never below it (getrusage's
// ru_maxrss is updated lazily and can lag the current size).
int64_t proc_status_kb(const char* key) {
  std::ifstream status("/proc/self/status");
  std::string line;
  const size_t n = std::strlen(key);
  while (std::getline(status, line)) {
    if (line.compare(0, n, key) == 0) return std::stoll(line.substr(n)) * 1024;
  }
  return 0;
}

}  // namespace

int64_t current_rss_bytes() { return proc_status_kb("VmRSS:"); }

int64_t peak_rss_bytes() { return proc_status_kb("VmHWM:"); }

void keep_freed_host_memory() {
#if defined(__GLIBC__)
  static std::once_flag once;
  std::call_once(once, [] {
    const char* env = std::getenv("RELORA_MALLOC_TUNING");
    if (env != nullptr && std::strcmp(env, "0") == 0) return;
    mallopt(M_MMAP_MAX, 0);              // no mmap()ed blocks: everything from the reusable heap
    mallopt(M_TRIM_THRESHOLD, INT_MAX);  // never hand the free heap top back (until exit)
    mallopt(M_TOP_PAD, 64 << 20);        // grow the heap in 64 MB steps
  });
#endif
}

void release_free_host_memory() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

void configure_process(int intra_op_threads) {
  configure_threads(intra_op_threads);
  keep_freed_host_memory();
}

void configure_threads(int intra_op_threads) {
  if (intra_op_threads > 0) at::set_num_threads(intra_op_threads);
}

Bf16Autocast::Bf16Autocast(bool enabled, c10::Device device) : enabled_(enabled), cuda_(device.is_cuda()) {
  if (enabled_) model::compat::set_bf16_autocast(cuda_, true);
}

Bf16Autocast::~Bf16Autocast() {
  if (enabled_) model::compat::set_bf16_autocast(cuda_, false);
}

void synchronize_device(c10::Device device) {
#ifdef RELORA_WITH_CUDA
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
#else
  (void)device;
#endif
}

#ifdef RELORA_WITH_CUDA
namespace {
// The caching allocator sets a device up lazily, when the first tensor is allocated there; until
// then its statistics calls fail with "Invalid device argument" (gpu_bench called resetPeakStats
// before the trainer had allocated anything). One small allocation sets the device up.
void set_up_allocator(c10::Device device) { (void)at::empty({1}, at::TensorOptions().device(device)); }
}  // namespace
#endif

DeviceMemory device_memory(c10::Device device) {
  DeviceMemory m;
#ifdef RELORA_WITH_CUDA
  if (device.is_cuda()) {
    set_up_allocator(device);
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    // Index 0 is StatType::AGGREGATE (the enum's namespace moved in LibTorch 2.6).
    m.allocated = stats.allocated_bytes[0].current;
    m.reserved = stats.reserved_bytes[0].current;
    m.peak_allocated = stats.allocated_bytes[0].peak;
    m.peak_reserved = stats.reserved_bytes[0].peak;
  }
#else
  (void)device;
#endif
  return m;
}

int64_t usable_memory_bytes(c10::Device device) {
#ifdef RELORA_WITH_CUDA
  if (device.is_cuda()) {
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaSetDevice(device.index() < 0 ? 0 : device.index()) != cudaSuccess ||
        cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess)
      return 0;
    return static_cast<int64_t>(free_bytes);
  }
#endif
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page : 0;
}

void reset_device_memory_peak(c10::Device device) {
#ifdef RELORA_WITH_CUDA
  if (device.is_cuda()) {
    set_up_allocator(device);
    c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
  }
#else
  (void)device;
#endif
}

double measure_matmul_peak_flops(c10::ScalarType dtype, c10::Device device) {
  constexpr int64_t n = 2048;
  auto options = at::TensorOptions().dtype(dtype).device(device);
  auto a = at::randn({n, n}, options), b = at::randn({n, n}, options);
  auto c = at::mm(a, b);  // warm-up: thread pools, kernels, caches
  synchronize_device(device);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    c = at::mm(a, b);
    synchronize_device(device);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * n * n * n / s);
  }
  return best;
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const long long s = static_cast<long long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof(buf), "%lldh%02lldm", s / 3600, (s % 3600) / 60);
  else if (s >= 60) std::snprintf(buf, sizeof(buf), "%lldm%02llds", s / 60, s % 60);
  else std::snprintf(buf, sizeof(buf), "%llds", s);
  return buf;
}

std::string format_count(double n) {
  char buf[32];
  if (n >= 1e9) std::snprintf(buf, sizeof(buf), "%.2fG", n / 1e9);
  else if (n >= 1e6) std::snprintf(buf, sizeof(buf), "%.2fM", n / 1e6);
  else if (n >= 1e3) std::snprintf(buf, sizeof(buf), "%.1fk", n / 1e3);
  else std::snprintf(buf, sizeof(buf), "%.0f", n);
  return buf;
}

}  // namespace relora::train

// Process-level facts and settings the trainer needs: memory use, threads, mixed precision.
#pragma once

#include <cstdint>
#include <string>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

namespace relora::train {

int64_t current_rss_bytes();
int64_t peak_rss_bytes();

// The process-wide settings a training program makes once, in main() (the worker, the benchmarks,
// the test programs that train): configure_threads(intra_op_threads) and keep_freed_host_memory().
// Not the Trainer's business: several Trainers (ranks) may share a process.
void configure_process(int intra_op_threads);

// LibTorch's intra-op threads. OpenBLAS runs its own thread pool for matrix products; on the
// 2-core build machine, adding torch intra-op threads on top made an eager training step 1.9x
// slower (oversubscription, see docs/architecture.md), so the default is 1. 0 keeps LibTorch's own.
void configure_threads(int intra_op_threads);

// Training allocates and frees the same large activation and gradient buffers every step. glibc
// serves big blocks with fresh mmap()s and unmaps them on free, so every step page-faults and
// zero-fills its whole working set again (measured on the 2-core build machine, micro preset in
// relora mode: 2.9x the page faults and 11% slower steps without this). This serves everything from the
// heap and never trims it, so freed blocks stay mapped for reuse. Once per process
// (configure_process); RELORA_MALLOC_TUNING=0 turns it off. A no-op outside glibc.
void keep_freed_host_memory();
// Hands the free pages inside the heap back to the kernel (glibc: malloc_trim), despite the
// setting above: for the rare moment when a large block of memory is freed for good, such as
// the fp32 frozen W once it is stored in bf16 at the low-rank start. Later allocations reuse
// the pages (the kernel supplies them again on first touch), so the peak RSS no longer carries
// the freed copy.
void release_free_host_memory();

// Enables bf16 autocast (fp32 master weights, bf16 matrix products) on `device` while alive.
class Bf16Autocast {
 public:
  Bf16Autocast(bool enabled, c10::Device device);
  ~Bf16Autocast();
  Bf16Autocast(const Bf16Autocast&) = delete;
  Bf16Autocast& operator=(const Bf16Autocast&) = delete;

 private:
  bool enabled_;
  bool cuda_;
};

// Waits for the work queued on `device` (a no-op on the CPU), so host clocks time real work.
void synchronize_device(c10::Device device);

// The CUDA caching allocator's figures for `device`, in bytes; -1 on the CPU and in builds
// without CUDA. Peaks since the process started or since reset_device_memory_peak.
struct DeviceMemory {
  int64_t allocated = -1, reserved = -1, peak_allocated = -1, peak_reserved = -1;
};
DeviceMemory device_memory(c10::Device device);
void reset_device_memory_peak(c10::Device device);

// What a job may use on `device`: the free device memory of a CUDA device (its context is set up
// to ask), the physical memory of the host for the CPU. 0 when it cannot be read.
int64_t usable_memory_bytes(c10::Device device);

// Best FLOP/s of a few 2048x2048 matrix products in `dtype` on `device`: the peak that
// utilisation figures (MFU) divide by, measured on the machine that trains. Takes ~0.5 s on a CPU.
double measure_matmul_peak_flops(c10::ScalarType dtype, c10::Device device);

std::string format_duration(double seconds);  // "1h02m", "3m12s", "45s"
std::string format_count(double n);           // "12.3k", "4.5M"

}  // namespace relora::train

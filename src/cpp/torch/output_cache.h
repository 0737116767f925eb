// Large CPU outputs (y, dx, the fused add's sum, the backward's partial sums) come from a cache
// of freed blocks, so that a training loop does not page-fault every output afresh
// (docs/cpu.md: a fresh 16-64 MB output cost 1-25 ms of page faults, more than the kernel).
#pragma once

#include <ATen/ATen.h>

#include <cstddef>

namespace fastln {

// A contiguous CPU tensor like at::empty(sizes, opts). Its storage's allocator is the cache:
// when the tensor is freed its block waits for the next output of its size or up to a fifth
// smaller, up to FASTLN_CPU_CACHE_MB idle megabytes (default 1024; 0 turns the cache off).
// Resizing works as for any tensor.
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& opts);

struct OutputCacheStats {
  size_t cached_bytes;  // idle, kept for reuse
  size_t limit_bytes;
  size_t hits, misses;  // allocations served from the cache / by a fresh mapping
};
OutputCacheStats output_cache_stats();

// Returns the idle blocks to the system; what tensors still hold is untouched. Returns the bytes.
size_t empty_output_cache();

}  // namespace fastln

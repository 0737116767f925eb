// The output cache (output_cache.h). Why: glibc maps a large block afresh for each allocation
// (or hands back heap memory, depending on the allocations before it), and every 4 KB page of a
// fresh mapping faults on its first write. Measured here: 0 to 12000 faults per LayerNorm call,
// the same call 1-6 ms one time and 5-28 ms the next (docs/cpu.md). Blocks freed by fastln's own
// outputs are kept instead, like CUDA's caching allocator keeps device memory.
#include "output_cache.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <memory>
#include <mutex>
#include <vector>
#ifdef __linux__
#include <pthread.h>
#include <sys/mman.h>
#endif

namespace fastln {
namespace {

constexpr size_t kMiB = size_t(1) << 20;
// Below 1 MB glibc reuses freed memory without faults; from 8 MB, 2 MB aligned blocks in whole
// 2 MB pages, so that transparent huge pages ("madvise" mode) back them: 512x fewer faults on
// first use and fewer TLB misses.
constexpr size_t kMinBytes = kMiB, kHugeFrom = 8 * kMiB, kHuge = 2 * kMiB;

size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }
size_t block_size(size_t n) { return n >= kHugeFrom ? round_up(n, kHuge) : round_up(n, 64 << 10); }

#ifdef __linux__
void* map_block(size_t size) {
  const size_t align = size >= kHugeFrom ? kHuge : 4096;
  const size_t len = size + align - 4096;  // mmap gives 4 KB alignment; trim to `align`
  void* raw = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  TORCH_CHECK_WITH(OutOfMemoryError, raw != MAP_FAILED, "fastln: out of memory allocating ",
                   size, " bytes for an output");
  const uintptr_t b = reinterpret_cast<uintptr_t>(raw), a = round_up(b, align);
  if (a > b) munmap(raw, a - b);
  if (b + len > a + size) munmap(reinterpret_cast<void*>(a + size), b + len - (a + size));
  if (align == kHuge) madvise(reinterpret_cast<void*>(a), size, MADV_HUGEPAGE);  // advisory
  return reinterpret_cast<void*>(a);
}
void unmap_block(void* p, size_t size) { munmap(p, size); }
#endif

struct Block {
  void* ptr;
  size_t size;
};

class OutputCache final : public c10::Allocator {
 public:
  OutputCache() {
    const char* env = std::getenv("FASTLN_CPU_CACHE_MB");
    limit_ = (env ? size_t(std::strtoull(env, nullptr, 10)) : size_t(1024)) * kMiB;
  }

  c10::DataPtr allocate(size_t n) override {
#ifdef __linux__
    if (n >= kMinBytes && limit_ > 0) {
      const size_t size = block_size(n);
      Block b = take(size);
      if (!b.ptr) b = {map_block(size), size};
      return {b.ptr, new Block(b), &release, c10::Device(c10::DeviceType::CPU)};
    }
#endif
    return c10::GetDefaultCPUAllocator()->allocate(n);
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  OutputCacheStats stats() {
    std::lock_guard<std::mutex> g(mu_);
    return {cached_, limit_, hits_, misses_};
  }

  size_t empty() {
    std::vector<Block> out;
    {
      std::lock_guard<std::mutex> g(mu_);
      out.swap(free_);
      cached_ = 0;
    }
    size_t bytes = 0;
    for (const Block& b : out) bytes += b.size, unmap(b);
    return bytes;
  }

  // Never destroyed: tensors may be freed during interpreter shutdown, after static destructors.
  static OutputCache& get() {
    static OutputCache* cache = [] {
      auto* c = new OutputCache;
#ifdef __linux__
      // A child forked while another thread held the lock would wait on it forever.
      pthread_atfork([] { get().mu_.lock(); }, [] { get().mu_.unlock(); }, [] { get().mu_.unlock(); });
#endif
      return c;
    }();
    return *cache;
  }

 private:
  // The smallest idle block of at least `size` bytes and at most a quarter more (the most
  // recently freed of equal ones), so that outputs of varying shapes (e.g. sequence lengths)
  // reuse blocks too; null if none.
  Block take(size_t size) {
    std::lock_guard<std::mutex> g(mu_);
    size_t best = free_.size();
    for (size_t i = free_.size(); i-- > 0;) {
      const size_t s = free_[i].size;
      if (s >= size && s - size <= size / 4 && (best == free_.size() || s < free_[best].size)) best = i;
    }
    if (best == free_.size()) {
      ++misses_;
      return {nullptr, 0};
    }
    const Block b = free_[best];
    free_.erase(free_.begin() + best);
    cached_ -= b.size;
    ++hits_;
    return b;
  }

  // Keeps b; over the limit, unmaps the blocks idle longest (a loop whose shapes changed stops
  // holding memory for the old ones). A block over the limit alone is not kept.
  void give_back(Block b) {
    std::vector<Block> evicted{b};
    {
      std::lock_guard<std::mutex> g(mu_);
      if (b.size <= limit_) {
        free_.push_back(b);
        cached_ += b.size;
        size_t k = 0;
        while (cached_ > limit_) cached_ -= free_[k++].size;
        evicted.assign(free_.begin(), free_.begin() + k);
        free_.erase(free_.begin(), free_.begin() + k);
      }
    }
    for (const Block& e : evicted) unmap(e);
  }

  static void release(void* ctx) {
    std::unique_ptr<Block> b(static_cast<Block*>(ctx));
    get().give_back(*b);
  }

  static void unmap(const Block& b) {
#ifdef __linux__
    unmap_block(b.ptr, b.size);
#endif
  }

  std::mutex mu_;
  std::vector<Block> free_;  // idle blocks, oldest first (a few dozen at most)
  size_t cached_ = 0, limit_ = 0, hits_ = 0, misses_ = 0;
};

}  // namespace

at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& opts) {
  return at::detail::empty_generic(sizes, &OutputCache::get(), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   c10::typeMetaToScalarType(opts.dtype()), at::MemoryFormat::Contiguous);
}

OutputCacheStats output_cache_stats() { return OutputCache::get().stats(); }

size_t empty_output_cache() { return OutputCache::get().empty(); }

}  // namespace fastln

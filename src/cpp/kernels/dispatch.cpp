// The one dispatch point: picks the kernel build for this CPU at run time.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "layer_norm.h"

namespace fastln {

#define FASTLN_DECLARE_ISA(ns)                                                                    \
  namespace ns {                                                                                  \
  template <class T, class P> void forward(const ForwardArgs<T, P>&, int64_t, int64_t);          \
  template <class T, class P>                                                                     \
  void backward_blocks(const BackwardArgs<T, P>&, const BlockPlan&, int64_t, int64_t);           \
  template <class T, class P>                                                                     \
  void reduce_partials(const acc_t<T>*, int64_t, int64_t, P*, P*, int64_t, int64_t);             \
  }
FASTLN_DECLARE_ISA(base)
#if FASTLN_X86
FASTLN_DECLARE_ISA(avx2)
FASTLN_DECLARE_ISA(avx512)
FASTLN_DECLARE_ISA(avx512bf16)
#endif

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512Bf16: return "avx512bf16";
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "base";
  }
}

Isa best_isa() {
#if FASTLN_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return __builtin_cpu_supports("avx512bf16") ? Isa::kAvx512Bf16 : Isa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c"))
    return Isa::kAvx2;
#endif
  return Isa::kBase;
}

namespace {
Isa initial_isa() {
  Isa isa = best_isa();
  if (const char* env = std::getenv("FASTLN_ISA")) {
    for (Isa lower : kIsas)
      if (std::strcmp(env, isa_name(lower)) == 0) isa = std::min(isa, lower);
  }
  return isa;
}
std::atomic<Isa> g_isa{initial_isa()};
}  // namespace

Isa active_isa() { return g_isa.load(std::memory_order_relaxed); }
void set_isa(Isa isa) { g_isa.store(std::min(isa, best_isa())); }

BlockPlan plan_blocks(int64_t M, int64_t N) {
  // At least 8 rows and ~32K elements a block (the partials then cost a few % of the
  // traffic), and at most 64 blocks (enough for the threads of one socket). But at least 8
  // blocks where there are 8 rows: threads split the blocks, and 2 blocks of 64 and 36 rows
  // (M = 100, N = 512) left one of 2 threads idle a third of the time.
  const int64_t n = std::max<int64_t>(N, 1);
  int64_t rows = std::max<int64_t>({8, (32768 + n - 1) / n, (M + 63) / 64});
  if ((M + rows - 1) / rows < 8) rows = (M + 7) / 8;
  rows = std::max<int64_t>(1, std::min(rows, M));
  return {rows, M == 0 ? 0 : (M + rows - 1) / rows};
}

bool stream_output(int64_t M, int64_t N, int elem_bytes) {
  // Measured (docs/cpu.md): float rows of 2 KB and more gain 1.15-1.5x from 16 MB on, shorter
  // rows lose (0.87x at 512 B), and 16-bit outputs, stored in half vectors, lose 5-15%.
  static const int64_t threshold = [] {
    const char* e = std::getenv("FASTLN_STREAM_BYTES");
    return e ? std::atoll(e) : (int64_t(16) << 20);
  }();
  return elem_bytes >= 4 && N * elem_bytes >= 2048 && M * N * elem_bytes >= threshold;
}

#define FASTLN_COMMA ,
#if FASTLN_X86
#define FASTLN_SELECT(fn, ...)                                          \
  switch (active_isa()) {                                              \
    case Isa::kAvx512Bf16: return avx512bf16::fn(__VA_ARGS__);          \
    case Isa::kAvx512: return avx512::fn(__VA_ARGS__);                  \
    case Isa::kAvx2: return avx2::fn(__VA_ARGS__);                      \
    default: return base::fn(__VA_ARGS__);                              \
  }
#else
#define FASTLN_SELECT(fn, ...) return base::fn(__VA_ARGS__);
#endif

template <class T, class P>
void forward(const ForwardArgs<T, P>& a, int64_t row_begin, int64_t row_end) {
  FASTLN_SELECT(forward<T FASTLN_COMMA P>, a, row_begin, row_end)
}

template <class T, class P>
void backward_blocks(const BackwardArgs<T, P>& a, const BlockPlan& plan, int64_t block_begin,
                     int64_t block_end) {
  FASTLN_SELECT(backward_blocks<T FASTLN_COMMA P>, a, plan, block_begin, block_end)
}

template <class T, class P>
void reduce_partials(const acc_t<T>* partial, int64_t nblocks, int64_t N, P* dgamma, P* dbeta,
                     int64_t col_begin, int64_t col_end) {
  FASTLN_SELECT(reduce_partials<T FASTLN_COMMA P>, partial, nblocks, N, dgamma, dbeta, col_begin,
                col_end)
}

FASTLN_FOR_EACH_TYPE_PAIR(FASTLN_INSTANTIATE_KERNELS)

}  // namespace fastln

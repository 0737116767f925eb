// fastln kernels: LayerNorm / RMSNorm over the last N elements of each of M rows.
//
// Torch-free: plain pointers, sizes and strides. The torch glue (src/cpp/torch) allocates,
// checks and splits rows across threads; this layer only computes a given range of rows.
//
// Element types: T is the storage type of X, dY, Y and dX (float, double, bf16, fp16);
// P is the parameter type of gamma and beta (T, or float when T is 16-bit: "mixed" mode).
// Accumulation is in acc_t<T>: float, or double for double.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace fastln {

// 16-bit floats, bit-compatible with c10::BFloat16 and c10::Half.
struct bf16 { uint16_t bits; };
struct fp16 { uint16_t bits; };

template <class T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Scalar conversions. `static` gives each translation unit its own copy, so the
// per-ISA kernel builds (compiled with different -m flags) never share one.
static inline float to_float(float v) { return v; }
static inline double to_float(double v) { return v; }
static inline float to_float(bf16 v) {
  uint32_t u = uint32_t(v.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
static inline float to_float(fp16 v) {
  // IEEE half -> float, exact (subnormals and Inf/NaN included).
  const uint32_t h = v.bits, sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  uint32_t u;
  if (exp == 0x1f) {
    u = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {
    u = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    u = sign;
  } else {  // subnormal half: man * 2^-24, exact in float
    const float f = float(man) * (1.0f / 16777216.0f);
    return sign ? -f : f;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

template <class T> static inline T from_float(acc_t<T> v);
template <> inline float from_float<float>(float v) { return v; }
template <> inline double from_float<double>(double v) { return v; }
template <> inline bf16 from_float<bf16>(float v) {
  // Round to nearest even, NaN -> canonical quiet NaN (as c10::BFloat16).
  uint32_t u;
  std::memcpy(&u, &v, 4);
  if (v != v) return bf16{0x7fc0};
  return bf16{uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}
template <> inline fp16 from_float<fp16>(float v) {
  // Float -> IEEE half, round to nearest even; NaN -> 0x7e00 as c10::Half (F. Giesen's method).
  uint32_t u;
  std::memcpy(&u, &v, 4);
  const uint32_t sign = (u >> 16) & 0x8000u;
  u &= 0x7fffffffu;
  if (u >= 0x47800000u) return fp16{uint16_t(sign | (u > 0x7f800000u ? 0x7e00u : 0x7c00u))};
  if (u < 0x38800000u) {  // result is subnormal or zero: add 0.5 so the FPU rounds for us
    float f, half = 0.5f;
    std::memcpy(&f, &u, 4);
    f += half;
    uint32_t r;
    std::memcpy(&r, &f, 4);
    return fp16{uint16_t(sign | (r - 0x3f000000u))};
  }
  const uint32_t odd = (u >> 13) & 1u;
  u += 0xc8000fffu + odd;  // rebias exponent (-112 << 23) and round
  return fp16{uint16_t(sign | (u >> 13))};
}

enum class Norm { kLayer, kRms };

// Instruction sets with a kernel build of their own, best last. avx512bf16: AVX-512 with the
// bf16 conversion instruction (Cooper Lake, Sapphire Rapids, Zen 4 and later).
enum class Isa { kBase, kAvx2, kAvx512, kAvx512Bf16 };
inline constexpr Isa kIsas[] = {Isa::kBase, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16};
const char* isa_name(Isa isa);
Isa best_isa();    // what this CPU supports
Isa active_isa();  // best_isa(), lowered by FASTLN_ISA=<an isa_name> in the environment
void set_isa(Isa isa);  // for tests; clamps to best_isa()

template <class T, class P>
struct ForwardArgs {
  const T* X;  // row i starts at X + i * ldx; elements of a row are contiguous
  int64_t ldx;
  const P* gamma;  // N elements or null (no weight)
  const P* beta;   // N elements or null (no bias)
  T* Y;            // M x N, contiguous
  acc_t<T>* mean;  // M elements; 0 for kRms
  acc_t<T>* rstd;  // M elements
  int64_t N;
  double eps;
  Norm norm;
  // Fused residual add (optional): when R is set, each row of X + R is rounded to T, written
  // to S (M x N, contiguous) and normalized in place of X's row. R's rows are as X's.
  const T* R = nullptr;
  int64_t ldr = 0;
  T* S = nullptr;
  bool stream = false;  // store Y non-temporally (stream_output() says when)
  // Zero-centred gamma (Gemma, TransformerEngine): y = xhat * (weight_offset + gamma) + beta,
  // the sum formed in acc_t<T>. Used only with gamma.
  double weight_offset = 0;
};

template <class T, class P>
struct BackwardArgs {
  const T* dY;
  int64_t lddy;
  const T* X;
  int64_t ldx;
  const acc_t<T>* mean;
  const acc_t<T>* rstd;
  const P* gamma;  // null: weight of ones
  T* dX;           // M x N contiguous, or null when the input needs no gradient
  // Per-block column sums [nblocks][2][N] of dY * xhat (-> dgamma) and dY (-> dbeta),
  // or null when neither parameter needs a gradient.
  acc_t<T>* partial;
  int64_t M, N;
  Norm norm;
  bool stream = false;  // store dX non-temporally (stream_output() says when)
  double weight_offset = 0;  // as ForwardArgs: dX sees weight_offset + gamma; dgamma keeps its form
};

// Backward splits rows into fixed blocks chosen from (M, N) alone, never from the thread
// count, and reduces the blocks' partial sums in block order: dgamma and dbeta are bitwise
// the same whatever the number of threads.
struct BlockPlan {
  int64_t rows_per_block;
  int64_t nblocks;
};
BlockPlan plan_blocks(int64_t M, int64_t N);

// Whether an M x N output of T is better stored non-temporally: when it would not stay in the
// caches for its reader anyway (docs/cpu.md).
bool stream_output(int64_t M, int64_t N, int elem_bytes);

// Rows [row_begin, row_end) of the forward pass.
template <class T, class P>
void forward(const ForwardArgs<T, P>& a, int64_t row_begin, int64_t row_end);

// Blocks [block_begin, block_end) of the backward pass: dX for their rows and, when
// a.partial is set, each block's partial column sums.
template <class T, class P>
void backward_blocks(const BackwardArgs<T, P>& a, const BlockPlan& plan, int64_t block_begin,
                     int64_t block_end);

// Columns [col_begin, col_end) of dgamma = sum_b partial[b][0] and dbeta = sum_b partial[b][1]
// (either output may be null), summed in block order.
template <class T, class P>
void reduce_partials(const acc_t<T>* partial, int64_t nblocks, int64_t N, P* dgamma, P* dbeta,
                     int64_t col_begin, int64_t col_end);

// The (T, P) pairs that have kernels, and their explicit instantiation.
#define FASTLN_FOR_EACH_TYPE_PAIR(X) \
  X(float, float) X(double, double) X(bf16, bf16) X(bf16, float) X(fp16, fp16) X(fp16, float)
#define FASTLN_INSTANTIATE_KERNELS(T, P)                                                          \
  template void forward<T, P>(const ForwardArgs<T, P>&, int64_t, int64_t);                       \
  template void backward_blocks<T, P>(const BackwardArgs<T, P>&, const BlockPlan&, int64_t,      \
                                      int64_t);                                                  \
  template void reduce_partials<T, P>(const acc_t<T>*, int64_t, int64_t, P*, P*, int64_t, int64_t);

}  // namespace fastln

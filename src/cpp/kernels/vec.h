// Portable SIMD for the kernels: GCC/Clang vector extensions, one register wide for the ISA
// this translation unit is compiled for (64 bytes with AVX-512, 32 with AVX2, 16 otherwise).
// The compiler turns +, -, * (and, with -mfma, a*b+c) into native instructions; only the
// half-precision conversions (F16C, AVX-512) and AVX-512's masked tail loads and stores need
// intrinsics.
//
// Everything here lives in namespace fastln::FASTLN_ISA (set per build by CMake), so the
// builds for different ISAs never share an inline function compiled for another.
#pragma once

#include <bit>
#include <cstring>
#include <utility>
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#elif defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "layer_norm.h"

#ifndef FASTLN_ISA
#error "FASTLN_ISA names the kernel build (base, avx2, avx512); CMake defines it"
#endif

namespace fastln {
namespace FASTLN_ISA {

#if defined(__AVX512F__)
inline constexpr int kVecBytes = 64;
#elif defined(__AVX2__)
inline constexpr int kVecBytes = 32;
#else
inline constexpr int kVecBytes = 16;
#endif

typedef float vfloat __attribute__((vector_size(kVecBytes)));
typedef double vdouble __attribute__((vector_size(kVecBytes)));
typedef int32_t vint32 __attribute__((vector_size(kVecBytes)));
typedef uint32_t vuint32 __attribute__((vector_size(kVecBytes)));
typedef int64_t vint64 __attribute__((vector_size(kVecBytes)));
typedef uint16_t vuint16 __attribute__((vector_size(kVecBytes / 2)));

template <class A> struct VecOf;
template <> struct VecOf<float> { using type = vfloat; using mask = vint32; };
template <> struct VecOf<double> { using type = vdouble; using mask = vint64; };

// Vector of A = acc_t<T> with its lane count W.
template <class A>
struct V {
  using type = typename VecOf<A>::type;
  static constexpr int W = kVecBytes / sizeof(A);
};

template <class A>
inline typename V<A>::type splat(A a) {
  return typename V<A>::type{} + a;
}

// A vector of L lanes of A (L a power of two, at most W).
template <class A, int L>
struct LanesOf {
  typedef A type __attribute__((vector_size(L * sizeof(A))));
};

// Pairwise tree, the same order on every call: the upper half of the lanes added to the lower
// half, then again, down to two lanes. Shuffles keep it in registers (the loop over an array
// that it replaces went through the stack).
template <class A, int L = V<A>::W>
inline A hsum(typename LanesOf<A, L>::type v) {
  if constexpr (L == 2) {
    return v[0] + v[1];
  } else {
    return [&]<int... i>(std::integer_sequence<int, i...>) {
      const typename LanesOf<A, L / 2>::type lo = __builtin_shufflevector(v, v, i...);
      const typename LanesOf<A, L / 2>::type hi = __builtin_shufflevector(v, v, (i + L / 2)...);
      return hsum<A, L / 2>(lo + hi);
    }(std::make_integer_sequence<int, L / 2>{});
  }
}

// Zero lanes n.. of v (tails of rows).
template <class A>
inline typename V<A>::type keep_first(typename V<A>::type v, int n) {
  using M = typename VecOf<A>::mask;
  M idx;
  for (int i = 0; i < V<A>::W; ++i) idx[i] = i;
  const M keep = idx < n;
  return (typename V<A>::type)((M)v & keep);
}

// ---- 16-bit lanes: a vector of floats' worth of bf16 or fp16 (Half), converted both ways ----
#if defined(__AVX512F__)
using Half = __m256i;
#elif defined(__AVX2__)
using Half = __m128i;
#else
using Half = vuint16;
#endif

// bf16 / fp16 lanes -> floats, exact.
template <class U>
inline vfloat widen(Half h) {
  if constexpr (std::is_same_v<U, bf16>) {
    // bf16 is the high half of a float. (GCC lowers __builtin_convertvector here to
    // 128-bit pieces; the intrinsics give one widening move.)
#if defined(__AVX512F__)
    return (vfloat)_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16);
#elif defined(__AVX2__)
    return (vfloat)_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
#else
    return (vfloat)(__builtin_convertvector(h, vuint32) << 16);
#endif
  } else {
    static_assert(std::is_same_v<U, fp16>);
#if defined(__AVX512F__)
    return (vfloat)_mm512_cvtph_ps(h);
#elif defined(__AVX2__)
    return (vfloat)_mm256_cvtph_ps(h);
#else
    vfloat v;
    for (int i = 0; i < V<float>::W; ++i) v[i] = to_float(fp16{h[i]});
    return v;
#endif
  }
}

// Floats -> bf16 / fp16 lanes, rounded to nearest even, NaN as c10 does.
template <class U>
inline Half narrow(vfloat v) {
  if constexpr (std::is_same_v<U, bf16>) {
#if defined(__AVX512BF16__)
    // One instruction rounds 16 lanes to nearest even, as below, except that it flushes
    // subnormal inputs to zero and keeps a NaN's payload: vectors holding either (fpclass
    // 0xa1: quiet NaN, subnormal, signalling NaN) take the exact code below. bf16 kernels
    // 1.03-1.23x faster, forward and backward (Zen 4; docs/cpu.md).
    if (!_mm512_fpclass_ps_mask((__m512)v, 0xa1)) return (__m256i)_mm512_cvtneps_pbh((__m512)v);
#endif
    // NaN -> 0x7fc0 (c10::BFloat16's rule, lane by lane).
    const vuint32 u = (vuint32)v;
    vuint32 r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const vuint32 nan = (vuint32)(v != v);
    r = (r & ~nan) | (0x7fc0u & nan);
#if defined(__AVX512F__)
    return _mm512_cvtepi32_epi16((__m512i)r);
#elif defined(__AVX2__)
    // r < 2^16 lane by lane, so the saturating pack is exact; it packs within 128-bit
    // halves, and the permute puts the two halves' results side by side.
    const __m256i packed = _mm256_packus_epi32((__m256i)r, (__m256i)r);
    return _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08));
#else
    return __builtin_convertvector(r, vuint16);
#endif
  } else {
    static_assert(std::is_same_v<U, fp16>);
#if defined(__AVX512F__)
    return _mm512_cvtps_ph((__m512)v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#elif defined(__AVX2__)
    return _mm256_cvtps_ph((__m256)v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
    Half h;
    for (int i = 0; i < V<float>::W; ++i) h[i] = from_float<fp16>(v[i]).bits;
    return h;
#endif
  }
}

// ---- loads: U in memory -> vector of A (A = float for 16-bit U) ----
template <class A, class U>
inline typename V<A>::type load(const U* p) {
  if constexpr (std::is_same_v<U, A>) {
    typename V<A>::type v;
    std::memcpy(&v, p, sizeof v);
    return v;
  } else {
    Half h;
    std::memcpy(&h, p, sizeof h);
    return widen<U>(h);
  }
}

// The bytes of h to p. kStream: a non-temporal store (p aligned to sizeof h), which writes
// the line to memory without reading it first (no read for ownership) and without evicting
// data still to be read from the caches. Needs stream_fence() before other threads read.
template <bool kStream, class H>
inline void put(void* p, const H& h) {
#if defined(__AVX512F__)
  if constexpr (kStream && sizeof h == 64)
    return _mm512_stream_si512(static_cast<__m512i*>(p), std::bit_cast<__m512i>(h));
#endif
#if defined(__AVX2__)
  if constexpr (kStream && sizeof h == 32)
    return _mm256_stream_si256(static_cast<__m256i*>(p), std::bit_cast<__m256i>(h));
#endif
#if defined(__SSE2__)
  if constexpr (kStream && sizeof h == 16)
    return _mm_stream_si128(static_cast<__m128i*>(p), std::bit_cast<__m128i>(h));
#endif
  std::memcpy(p, &h, sizeof h);  // also the 8-byte bf16 vectors of the base build
}

inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

template <class A, class U, bool kStream = false>
inline void store(U* p, typename V<A>::type v) {
  if constexpr (std::is_same_v<U, A>)
    put<kStream>(p, v);
  else
    put<kStream>(p, narrow<U>(v));
}

// Partial loads and stores for the last n < W elements of a row (lanes n.. are zero).
// AVX-512 masks them: no element past n is touched and no buffer is needed. (A buffer on the
// stack broke the sanitizer build: GCC 12's AddressSanitizer frame put it 32 bytes off the
// 64-byte alignment its vmovaps load assumed, a fault on AVX-512 machines only.)
template <class A, class U>
inline typename V<A>::type load_n(const U* p, int64_t n) {
#if defined(__AVX512F__)
  const uint32_t k = (uint32_t(1) << n) - 1;
  if constexpr (std::is_same_v<U, float>)
    return (vfloat)_mm512_maskz_loadu_ps(__mmask16(k), p);
  else if constexpr (std::is_same_v<U, double>)
    return (vdouble)_mm512_maskz_loadu_pd(__mmask8(k), p);
  else
    return widen<U>(_mm256_maskz_loadu_epi16(__mmask16(k), p));
#else
  U buf[V<A>::W];
  std::memset(buf, 0, sizeof buf);
  std::memcpy(buf, p, n * sizeof(U));
  return load<A>(buf);
#endif
}

template <class A, class U>
inline void store_n(U* p, typename V<A>::type v, int64_t n) {
#if defined(__AVX512F__)
  const uint32_t k = (uint32_t(1) << n) - 1;
  if constexpr (std::is_same_v<U, float>)
    _mm512_mask_storeu_ps(p, __mmask16(k), (__m512)v);
  else if constexpr (std::is_same_v<U, double>)
    _mm512_mask_storeu_pd(p, __mmask8(k), (__m512d)v);
  else
    _mm256_mask_storeu_epi16(p, __mmask16(k), narrow<U>(v));
#else
  U buf[V<A>::W];
  store<A>(buf, v);
  std::memcpy(p, buf, n * sizeof(U));
#endif
}

}  // namespace FASTLN_ISA
}  // namespace fastln

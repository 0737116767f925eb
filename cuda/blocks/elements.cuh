// Building blocks of the CUDA kernels: element conversions, 16-byte vectors, their loads and
// stores, and the fused residual add's rounding.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../layer_norm_cuda.h"

namespace fastln {
namespace cuda_impl {

// ---------------------------------------------------------------- element conversions
__device__ __forceinline__ float dtof(float v) { return v; }
__device__ __forceinline__ double dtof(double v) { return v; }
__device__ __forceinline__ float dtof(bf16 v) { return __uint_as_float(uint32_t(v.bits) << 16); }
__device__ __forceinline__ float dtof(fp16 v) { return __half2float(__ushort_as_half(v.bits)); }
// PlusOne parameters (layer_norm_cuda.h): 1 + w in float, the CPU kernels' add. Every read of
// gamma goes through dtof (ptoa too), dtof_row, dtof_pinned or elem, each of which adds it.
template <class P>
__device__ __forceinline__ float dtof(PlusOne<P> v) { return 1.0f + dtof(v.v); }

// The forward's conversions of its row and parameters: bf16 -> float in an asm statement that
// the compiler can neither merge nor hoist, so each use converts again (one instruction)
// instead of keeping converted floats live across the reductions: bf16 with 8 vectors a thread
// took 127 registers (one 512-thread CTA per SM) instead of 64 (two). Not in the backward,
// where it costs registers (2 vectors: 113 instead of 61).
template <class T>
__device__ __forceinline__ acc_t<T> dtof_row(T v) {
  if constexpr (kPlusOne<T>) {
    return 1.0f + dtof_row(v.v);
  } else if constexpr (std::is_same_v<T, bf16>) {
    uint32_t u;
    asm volatile("mov.b32 %0, {0, %1};" : "=r"(u) : "h"(v.bits));
    return __uint_as_float(u);
  } else {
    return dtof(v);
  }
}

// The same for parameters held in registers across rows (fwd_staged_kernel), fp16 too: converted
// where used, not kept as floats (16-bit parameters: 128 registers and 64-168 bytes of spill).
template <class T>
__device__ __forceinline__ acc_t<T> dtof_pinned(T v) {
  if constexpr (kPlusOne<T>) {
    return 1.0f + dtof_pinned(v.v);
  } else if constexpr (std::is_same_v<T, fp16>) {
    float f;
    asm volatile("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
    return f;
  } else {
    return dtof_row(v);
  }
}

// The primary template: PlusOne<P>, the value whose 1 + w is v (bwd_staged_kernel fills
// missing gamma with dfrom<P>(1): w = 0). The element types are specialized below.
template <class T>
__device__ __forceinline__ T dfrom(acc_t<T> v) {
  static_assert(kPlusOne<T>, "dfrom: no conversion to this type");
  return T{dfrom<decltype(T::v)>(v - 1.0f)};
}
template <> __device__ __forceinline__ float dfrom<float>(float v) { return v; }
template <> __device__ __forceinline__ double dfrom<double>(double v) { return v; }
template <> __device__ __forceinline__ bf16 dfrom<bf16>(float v) {
  return bf16{__bfloat16_as_ushort(__float2bfloat16_rn(v))};
}
template <> __device__ __forceinline__ fp16 dfrom<fp16>(float v) {
  return fp16{__half_as_ushort(__float2half_rn(v))};
}

// Products that the compiler must not fuse into a later add: dX uses g = dy * gamma twice (in
// the row sums and per element), and both must be the same rounded value, so that dX is
// exactly 0 where it should be (N = 1). Same for xhat.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
// a * b + c, rounded once: where a product feeds a single sum, fusing it is one instruction
// fewer and more accurate.
__device__ __forceinline__ float fma_rn(float a, float b, float c) { return __fmaf_rn(a, b, c); }
__device__ __forceinline__ double fma_rn(double a, double b, double c) { return __fma_rn(a, b, c); }

// The backward's terms, in every backward kernel alike: xhat = (x - mean) * rstd and, with
// g = dy * gamma and the row sums c1 = sum(g) / N, c2 = sum(g * xhat) / N,
// dx = rstd * (g - (xhat * c2 + c1)).
template <class A>
__device__ __forceinline__ A bwd_xhat(A x, A mean, A rstd) {
  return mul_rn(x - mean, rstd);
}
template <class A>
__device__ __forceinline__ A bwd_dx(A g, A xh, A rstd, A c1, A c2) {
  return mul_rn(rstd, g - fma_rn(xh, c2, c1));
}

// Parameter value as the accumulation type A.
template <class A, class P> __device__ __forceinline__ A ptoa(P v) { return A(dtof(v)); }

// A 16-byte vector of T.
template <class T>
struct alignas(16) Pack {
  static constexpr int n = 16 / sizeof(T);
  T v[n];
};
// VEC parameters (VEC = 16 / sizeof(T)): 16 or 32 bytes, loaded as 16-byte pieces.
template <class P, int VEC>
struct alignas(16) PPack {
  P v[VEC];
};

// Element e of a vector (Pack or PPack) as its accumulation type: bf16 with one shift or mask of
// the 32-bit word holding it (dtof takes two instructions for the odd elements, a 16-bit extract
// and a shift: bf16 backward of 65536: 3528 -> 3136 SASS instructions in bwd_reg_kernel).
// PlusOne<bf16> (same bits as bf16): the same trick, then 1 + w.
template <class V>
__device__ __forceinline__ auto elem(const V& p, int e) {
  using T = std::remove_cv_t<std::remove_reference_t<decltype(p.v[0])>>;
  if constexpr (std::is_same_v<T, bf16>) {
    uint32_t w;
    memcpy(&w, &p.v[e & ~1], sizeof(w));
    return __uint_as_float(e & 1 ? w & 0xffff0000u : w << 16);
  } else if constexpr (std::is_same_v<T, PlusOne<bf16>>) {
    uint32_t w;
    memcpy(&w, &p.v[e & ~1], sizeof(w));
    return 1.0f + __uint_as_float(e & 1 ? w & 0xffff0000u : w << 16);
  } else {
    return acc_t<T>(dtof(p.v[e]));
  }
}

template <class T>
__device__ __forceinline__ Pack<T> ld_pack(const T* p) {
  return *reinterpret_cast<const Pack<T>*>(p);
}

// A vector's store. Cluster kernels (kPtx) with 16-bit T: one 16-byte store in PTX, as nvcc
// split the plain struct store (and a uint4 one) there into 2-byte stores: bf16 backward of
// 32768 had 54% of its DRAM sectors in excess (ncu), 55 -> 70% of copy bandwidth with this
// store. Elsewhere the plain store: nvcc makes it one 16-byte store in the one-CTA kernels,
// where the PTX one cost registers (fp16 forward of 4 vectors a thread: 40 -> 53), and for
// 32-bit types in the cluster kernels its 4-byte stores measured faster than the PTX one (fp32
// forward of 65536: 86% against 75%; not understood, docs/cuda.md; the staged fp32 forward with the
// PTX store: 0.98-1.02 of its time, journal 2026-12-06, sessions 22-23).
template <bool kPtx, class T>
__device__ __forceinline__ void st_pack(T* p, const Pack<T>& v) {
  if constexpr (kPtx && sizeof(T) == 2) {
    uint4 u;
    memcpy(&u, &v, sizeof(u));
    asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(__cvta_generic_to_global(p)), "r"(u.x),
                 "r"(u.y), "r"(u.z), "r"(u.w));
  } else {
    *reinterpret_cast<Pack<T>*>(p) = v;
  }
}

// a + b rounded to T, elementwise: the fused residual add (the CPU kernel's rounding).
template <class T>
__device__ __forceinline__ T add_rn(T a, T b) {
  using A = acc_t<T>;
  return dfrom<T>(A(dtof(a)) + A(dtof(b)));
}
template <class V>
__device__ __forceinline__ V add_rn_vec(const V& a, const V& b) {
  V o;
#pragma unroll
  for (int e = 0; e < int(sizeof(a.v) / sizeof(a.v[0])); ++e) o.v[e] = add_rn(a.v[e], b.v[e]);
  return o;
}

// The row's first element (the shift of the moments): of X, or of X + R.
template <bool RES, class T, class P>
__device__ __forceinline__ acc_t<T> first_elem(const FwdParams<T, P>& p, int64_t row) {
  T x0 = p.X[row * p.ldx];
  if constexpr (RES) x0 = add_rn(x0, p.R[row * p.ldr]);
  return acc_t<T>(dtof(x0));
}

// VEC consecutive elements (VEC = 1: any alignment; else VEC divides N and 16 | addresses).
template <class T, int VEC>
struct alignas(sizeof(T) * VEC) VecN {
  T v[VEC];
};

}  // namespace cuda_impl
}  // namespace fastln

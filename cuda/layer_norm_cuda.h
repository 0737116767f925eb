// Torch-free interface of the CUDA kernels (cuda/launch.cu), used by the torch glue
// (cuda/ops_cuda.cpp). Pointers are device pointers; launches go to `stream`.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../src/cpp/kernels/layer_norm.h"

namespace fastln {
namespace cuda_impl {

// A parameter that the kernels read as 1 + its value, formed in float (1.0f + float(w), the
// CPU kernels' add): weight_offset = 1 (Gemma's xhat * (1 + w)) inside the tuned kernels, with
// no prep kernel and no float copy of the weight. P's size and layout (the weight's memory read
// as it is). LayerNorm's bias, of the weight's dtype, is read as the plain W it is (bias_of,
// forward.cuh).
template <class P>
struct PlusOne {
  P v;
};
template <class P> inline constexpr bool kPlusOne = false;
template <class P> inline constexpr bool kPlusOne<PlusOne<P>> = true;
// The plain parameter type of P: W for PlusOne<W>, else P.
template <class P> struct PlainParam { using type = P; };
template <class P> struct PlainParam<PlusOne<P>> { using type = P; };
template <class P> using plain_param_t = typename PlainParam<P>::type;

// The CPU kernels' arguments (layer_norm.h: the norm, the optional fused residual add), plus
// the row count, and what the launcher fills in: n, the row length N as an int (N must be
// < 2^31; the kernels index with n: reading the 64-bit N instead cost registers, in one
// backward kernel 111 instead of 61, half the occupancy), the threads per row, and (backward)
// the cluster slices' rounding (slice_vectors; the plan's slice_align).
template <class T, class P>
struct FwdParams : ForwardArgs<T, P> {
  int64_t M;
  int n = 0;
  int tpr = 0;
};

// BackwardArgs::partial is [nparts][2][N] here (nparts from bwd_num_partials) or null.
template <class T, class P>
struct BwdParams : BackwardArgs<T, P> {
  int n = 0;
  int tpr = 0;
  int slice_align = 1;
};

// vec_ok: N, the row strides and every pointer (X, R, S, Y, gamma, beta) allow 16-byte vectors.
// Returns the first CUDA error of the launches (cudaSuccess when all went well).
template <class T, class P>
cudaError_t launch_fwd(FwdParams<T, P> p, bool vec_ok, cudaStream_t stream);

// Backward: plan first (the number of [2][N] fp32 partial rows the launch needs, fixed by
// (M, N, norm, dtype, device)), then launch with p.partial pointing at that many rows (or null
// when neither dgamma nor dbeta is wanted; dgamma/dbeta may each be null).
// dgamma / dbeta are written as Q: P, or T where a weight offset made the kernels' P the
// accumulation type (launch_offset_params) while the parameters are T, or W for P = PlusOne<W>.
template <class T, class P>
int64_t bwd_num_partials(const BwdParams<T, P>& p, bool vec_ok, int device);
template <class T, class P, class Q = P>
cudaError_t launch_bwd(BwdParams<T, P> p, bool vec_ok, int64_t nparts, Q* dgamma, Q* dbeta,
                       cudaStream_t stream);

// The weight offset (ForwardArgs::weight_offset): out_gamma = offset + gamma and, where beta and
// out_beta are given, out_beta = beta, n elements in A (the accumulation type), by one kernel.
// The norm kernels then run with A parameters (16-bit inputs: their mixed mode): one small
// launch a call, and the norm kernels themselves unchanged.
template <class P, class A>
cudaError_t launch_offset_params(const P* gamma, const P* beta, A offset, A* out_gamma, A* out_beta,
                                 int64_t n, cudaStream_t stream);

// The instantiations: launch.cuh's parts (the launchers) and launch.cu (the offset's).

}  // namespace cuda_impl
}  // namespace fastln

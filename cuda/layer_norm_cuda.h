// Torch-free interface of the CUDA kernels (cuda/layer_norm.cu), used by the torch glue
// (cuda/ops_cuda.cpp). Pointers are device pointers; launches go to `stream`.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../src/cpp/kernels/layer_norm.h"

namespace fastln {
namespace cuda_impl {

template <class T, class P>
struct FwdParams {
  const T* X;
  int64_t ldx;
  const P* gamma;
  const P* beta;
  T* Y;
  acc_t<T>* mean;
  acc_t<T>* rstd;
  int64_t M;
  int N;
  int tpr;
  double eps;
};

template <class T, class P>
struct BwdParams {
  const T* dY;
  int64_t lddy;
  const T* X;
  int64_t ldx;
  const acc_t<T>* mean;
  const acc_t<T>* rstd;
  const P* gamma;
  T* dX;                // null: no grad_input
  acc_t<T>* partial;    // [nparts][2][N] or null
  int64_t M;
  int N;
  int tpr;
};

// vec_ok: N, the row strides and every pointer allow 16-byte vectors. Returns the first
// CUDA error of the launches (cudaSuccess when all went well).
template <class T, class P>
cudaError_t launch_fwd(FwdParams<T, P> p, bool vec_ok, cudaStream_t stream);

// Backward: plan first (the number of [2][N] fp32 partial rows the launch needs, fixed by
// (M, N, dtype, device)), then launch with p.partial pointing at that many rows (or null when
// neither dgamma nor dbeta is wanted; dgamma/dbeta may each be null).
template <class T, class P>
int64_t bwd_num_partials(const BwdParams<T, P>& p, bool vec_ok, int device);
template <class T, class P>
cudaError_t launch_bwd(BwdParams<T, P> p, bool vec_ok, int64_t nparts, P* dgamma, P* dbeta,
                       cudaStream_t stream);

#define FASTLN_CUDA_INSTANTIATE(T, P)                                                          \
  template cudaError_t launch_fwd<T, P>(FwdParams<T, P>, bool, cudaStream_t);                  \
  template int64_t bwd_num_partials<T, P>(const BwdParams<T, P>&, bool, int);                  \
  template cudaError_t launch_bwd<T, P>(BwdParams<T, P>, bool, int64_t, P*, P*, cudaStream_t);

}  // namespace cuda_impl
}  // namespace fastln

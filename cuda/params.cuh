// The weight offset's parameters (launch_offset_params, layer_norm_cuda.h): offset + gamma, and
// beta, in the accumulation type A, for the norm kernels of A parameters. The add is the float
// (double) add the CPU kernels make in registers, so both give the same bits.
#pragma once

#include "blocks/elements.cuh"

namespace fastln {
namespace cuda_impl {

template <class P, class A>
__global__ void __launch_bounds__(256) offset_params_kernel(const P* __restrict__ gamma, const P* __restrict__ beta,
                                                            A offset, A* __restrict__ out_gamma,
                                                            A* __restrict__ out_beta, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    out_gamma[i] = offset + ptoa<A>(gamma[i]);
    if (beta) out_beta[i] = ptoa<A>(beta[i]);
  }
}

}  // namespace cuda_impl
}  // namespace fastln

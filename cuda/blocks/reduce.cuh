// Building blocks of the CUDA kernels: sums over a group of threads.
#pragma once


namespace fastln {
namespace cuda_impl {

// ---------------------------------------------------------------- reductions
// Sum of K values over each group of `tpr` threads, in a fixed order. For tpr <= 32 the
// groups are aligned lane ranges of one warp (xor shuffles stay inside a group); for
// tpr > 32 the block is one group (blockDim.x == tpr) and warps meet in shared memory `red`
// (at least 32 * K elements), and each warp adds the warp sums in one butterfly (kTree: 5
// shuffles a value; a + b is b + a bit for bit, so every lane gets the same sum) or in a chain
// (nw loads and adds). Every thread of the block must call it.
// H100, the tree against the chain: bf16 backward 8192 86.4 -> 91.0% of copy bandwidth, 32768
// 81.9 -> 83.7; bf16 forward of 4 vectors a thread, 16384, 94.6 -> 97.1. The forward kernels of
// 8 vectors a thread keep the chain: with the tree bf16 took 76 registers (one CTA a SM), 32768
// 94.6 -> 80.0%.
template <int K, class A, bool kTree = true>
__device__ __forceinline__ void group_sum(A (&v)[K], int tpr, A* red) {
  const int w = tpr < 32 ? tpr : 32;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    if (o < w) {
#pragma unroll
      for (int k = 0; k < K; ++k) v[k] += __shfl_xor_sync(0xffffffffu, v[k], o);
    }
  }
  if (tpr > 32) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = tpr >> 5;
    __syncthreads();  // the previous call's readers are done with `red`
    if (lane == 0) {
#pragma unroll
      for (int k = 0; k < K; ++k) red[warp * K + k] = v[k];
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < K; ++k) {
      A s = 0;
      if constexpr (kTree) {
        s = lane < nw ? red[lane * K + k] : A(0);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
      } else {
        for (int i = 0; i < nw; ++i) s += red[i * K + k];
      }
      v[k] = s;
    }
  }
}

}  // namespace cuda_impl
}  // namespace fastln

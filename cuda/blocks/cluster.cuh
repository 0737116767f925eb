// Building blocks of the CUDA kernels: thread-block clusters (sm_90): programmatic dependent
// launch, row slices, the PTX of mbarriers, distributed shared memory and bulk copies, rows
// staged in shared memory (StagedRows), and sums over a cluster (ClusterSum).
#pragma once

#include <cooperative_groups.h>

#include <cstdint>

#include "../launch_plan.h"
#include "elements.cuh"

namespace fastln {
namespace cuda_impl {

// ---------------------------------------------------------------- thread-block clusters (sm_90)
// A row too long for one CTA is split over a cluster of CL CTAs along x (CL = 1: no cluster,
// and every helper below is a no-op). Cluster kernels are built for every architecture but
// launched only where clusters_supported() says so: an sm_80 image traps.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
#define FASTLN_CLUSTERS 0
#else
#define FASTLN_CLUSTERS 1
namespace cg = cooperative_groups;
#endif

// Programmatic dependent launch (sm_90; no-ops elsewhere and without the launch attribute): a
// kernel lets the next kernel of its stream, launched with the programmatic-serialization
// attribute (launch_bwd_norm), start on the SMs this one leaves once every CTA of this one has
// called allow_dependent_launch() or exited; that kernel waits for this one's end and its memory
// (wait_prior_grid) before it reads what this one wrote.
__device__ __forceinline__ void allow_dependent_launch() {
#if FASTLN_CLUSTERS
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void wait_prior_grid() {
#if FASTLN_CLUSTERS
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

template <int CL>
__device__ __forceinline__ int cluster_rank() {
#if FASTLN_CLUSTERS
  if constexpr (CL > 1) return int(cg::this_cluster().block_rank());
#else
  if constexpr (CL > 1) __trap();
#endif
  return 0;
}

// The vectors [v0, v0 + n) of a row of nvec that this CTA holds: slices of slice_vectors(nvec,
// CL, align) (launch_plan.h; align: the plan's slice_align, 1 for ceil(nvec / CL)).
struct Slice {
  int v0, n;
};
template <int CL>
__device__ __forceinline__ Slice row_slice(int nvec, int align) {
  if constexpr (CL == 1) return {0, nvec};
  const int per = slice_vectors(nvec, CL, align), v0 = cluster_rank<CL>() * per;
  return {v0, max(0, min(per, nvec - v0))};
}


#if FASTLN_CLUSTERS
// PTX of the cluster sums: shared-memory addresses and their images in another CTA of the
// cluster, mbarriers, and stores into another CTA's shared memory that its mbarrier counts.
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return uint32_t(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ uint32_t remote_addr(uint32_t addr, int rank) {
  uint32_t r;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(addr), "r"(rank));
  return r;
}
__device__ __forceinline__ void mbar_init(uint32_t bar) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  while (!done)
    asm volatile(
        "{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
        : "=r"(done) : "r"(bar), "r"(parity) : "memory");
}
__device__ __forceinline__ void st_async(uint32_t addr, float v, uint32_t bar) {
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.f32 [%0], %1, [%2];" ::"r"(addr),
               "f"(v), "r"(bar) : "memory");
}
// Bulk copy (the TMA unit) of `bytes` (a multiple of 16; 16-byte aligned addresses) from global
// into this CTA's shared memory, counted by its mbarrier `bar`; the calling thread has told the
// mbarrier how many bytes to expect, all copies of a stage together (mbar_arrive_expect_tx).
__device__ __forceinline__ void bulk_copy(uint32_t dst, const void* src, uint32_t bytes, uint32_t bar) {
  constexpr uint32_t kChunk = 16384;
  for (uint32_t off = 0; off < bytes; off += kChunk)
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                 ::"r"(dst + off), "l"(__cvta_generic_to_global(static_cast<const char*>(src) + off)),
                 "r"(min(kChunk, bytes - off)), "r"(bar) : "memory");
}

// The rows a persistent CTA walks, staged in shared memory by the TMA unit (fwd_staged_kernel,
// bwd_staged_kernel): its k-th row's slices of NT tensors (`bytes` each, `per` vectors apart)
// go to buffer k % kRowStages, counted by that buffer's mbarrier in `full`. Thread 0 loads;
// every thread waits for a row before it reads it, and the caller's barrier after its last read
// of a buffer frees it for the load of row k + kRowStages - 1.
template <class T, int NT>
struct StagedRows {
  uint64_t* full;  // [kRowStages], shared memory
  const Pack<T>* bufs;  // [kRowStages][NT][per], shared memory
  int per;
  uint32_t bytes;

  __device__ const Pack<T>* buffer(int64_t k, int j = 0) const {
    return bufs + (NT * int(k % kRowStages) + j) * per;
  }
  // Thread 0, before the barrier (and fence: ClusterSum::start) that publishes the mbarriers.
  __device__ void init() const {
    for (int s = 0; s < kRowStages; ++s) mbar_init(smem_addr(&full[s]));
  }
  // Thread 0: row k, its slices at src, into buffer k % kRowStages.
  __device__ void load(int64_t k, const T* const (&src)[NT]) const {
    const uint32_t bar = smem_addr(&full[k % kRowStages]);
    mbar_arrive_expect_tx(bar, NT * bytes);
#pragma unroll
    for (int j = 0; j < NT; ++j) bulk_copy(smem_addr(buffer(k, j)), src[j], bytes, bar);
  }
  __device__ void wait(int64_t k) const {
    if (bytes) mbar_wait(smem_addr(&full[k % kRowStages]), uint32_t(k / kRowStages) & 1);
  }
};
#endif

// Sum of K values over the CTAs of a cluster, after group_sum (every thread holds its CTA's
// sum). Thread d < CL stores the CTA's values into slot [rank] of CTA d's buffer (distributed
// shared memory, asynchronous stores that CTA d's mbarrier counts); each CTA waits on its own
// mbarrier, then adds slots 0..CL-1 in rank order, so every CTA gets the same bits, run after
// run. No cluster-wide barrier per row: cluster.sync() releases every thread's memory
// operations, so each row waited for the previous row's stores to reach memory (bf16 backward
// at N = 16384 over 2 CTAs: 40% of copy bandwidth, against 71% for one CTA per row).
// NB buffers used in turn (use u: buffer u % NB), each CTA sending use u (send) before it
// receives use u - D (recv), D = NB - 3 or, NB = 2, D = 0 (sum: send, then recv). A CTA writes
// use u into another's buffer only once that one has read use u - NB from it: D = 0: the writer
// has received use u - 1 from every CTA, which each sends only after the __syncthreads() that
// follows its reads of use u - 2; D = 1 (NB = 4): the writer has received use u - 2, which each
// sends after receiving use u - 4. Each CTA receives all the values of its last use before it
// exits, so none is written after. Every thread of the cluster calls start() first,
// wait_started() before the first sum, then send / recv alike.
template <int CL, int K, class A, int NB = 2>
struct ClusterSum {
  static_assert(CL == 1 || sizeof(A) == 4, "cluster kernels are built for float sums");
  static_assert(NB == 2 || NB == 4, "no other depth is proven above");
  uint64_t bar[NB];
  A slot[NB][CL][K];

  // mbarriers set up, then a relaxed arrive: no CTA may store into another before that one
  // has started and set up its mbarriers (wait_started(), once the loads are under way).
  __device__ __forceinline__ void start() {
#if FASTLN_CLUSTERS
    if constexpr (CL > 1) {
      if (threadIdx.x == 0) {
#pragma unroll
        for (int b = 0; b < NB; ++b) mbar_init(smem_addr(&bar[b]));
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
      }
      __cluster_barrier_arrive_relaxed();
    }
#endif
  }
  __device__ __forceinline__ void wait_started() {
#if FASTLN_CLUSTERS
    if constexpr (CL > 1) __cluster_barrier_wait();
#endif
  }

  __device__ __forceinline__ void send(const A (&v)[K], int64_t use) {
    if constexpr (CL > 1) {
#if FASTLN_CLUSTERS
      const uint32_t bar_b = smem_addr(&bar[use % NB]);
      __syncthreads();  // this CTA has read the values of use - 1 (see above)
      if (threadIdx.x == 0) mbar_arrive_expect_tx(bar_b, CL * K * sizeof(A));
      if (threadIdx.x < CL) {
        const uint32_t dst = remote_addr(smem_addr(&slot[use % NB][cluster_rank<CL>()][0]), threadIdx.x);
        const uint32_t dst_bar = remote_addr(bar_b, threadIdx.x);
#pragma unroll
        for (int k = 0; k < K; ++k) st_async(dst + k * sizeof(A), v[k], dst_bar);
      }
#else
      __trap();
#endif
    }
  }
  __device__ __forceinline__ void recv(A (&v)[K], int64_t use) {
    if constexpr (CL > 1) {
#if FASTLN_CLUSTERS
      const int b = int(use % NB);
      mbar_wait(smem_addr(&bar[b]), uint32_t(use / NB) & 1);
#pragma unroll
      for (int k = 0; k < K; ++k) {
        A s = 0;
#pragma unroll
        for (int r = 0; r < CL; ++r) s += slot[b][r][k];
        v[k] = s;
      }
#endif
    }
  }
  __device__ __forceinline__ void sum(A (&v)[K], int& use) {
    static_assert(NB == 2, "NB = 4: send and recv one use apart");
    send(v, use);
    recv(v, use);
    ++use;
  }
};

}  // namespace cuda_impl
}  // namespace fastln

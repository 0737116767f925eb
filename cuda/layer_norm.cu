// CUDA kernels of the fastln LayerNorm ops, and their registration for the CUDA key.
//
// Design (docs/cuda.md has the details and the measurements):
//  * Forward, "register" path: a group of `tpr` threads owns one row; each thread loads NV
//    16-byte vectors of it (coalesced across the group) and keeps them in registers, so the row
//    is read from memory once. Mean (shifted by the row's first element, as the CPU kernel) and
//    variance are two passes over registers, reduced with warp shuffles (tpr <= 32, several
//    rows per warp for small N) or shuffles plus shared memory (tpr > 32, one row per CTA).
//  * Backward, "register" path: a persistent grid; each CTA walks a fixed set of rows (row
//    group blockIdx.x, + gridDim.x, ...), keeps x and dy in registers for dX, and accumulates
//    fp32 per-column sums of dy*xhat and dy for its columns: in registers when a CTA holds
//    several rows (small N; combined in fixed group order at the end), in shared memory when
//    one row fills the CTA. Each CTA writes one [2][N] partial; a second kernel sums the
//    partials over CTAs in a fixed order: dgamma/dbeta are deterministic, no atomics.
//  * Long rows (sm_90): a row is split over a thread-block cluster of CL CTAs, each holding its
//    slice of the row in registers (and, backward, the column sums of its slice in shared
//    memory); the row sums are added across the cluster through distributed shared memory in
//    rank order. CL = 1 is the single-CTA kernel.
//  * Fallback path (N not a multiple of the vector width, misaligned rows, or rows too long
//    for the register path): one CTA per row, 16-byte loads where aligned, the row re-read
//    from L1/L2.
//  * Everything is templated on Norm so RMSNorm is one more instantiation. The forward kernels
//    also take the fused residual add (ForwardArgs::R): the row of X + R, rounded to T, is
//    written to S and normalized in place of X's row, as the CPU kernel.
//
// This file is torch-free (plain pointers, a stream): the torch glue is ops_cuda.cpp, built by
// the host compiler, so no inline function of torch's headers is compiled by two compilers.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cooperative_groups.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <mutex>
#include <type_traits>
#include <vector>

#include "layer_norm_cuda.h"

namespace fastln {
namespace cuda_impl {

// ---------------------------------------------------------------- element conversions
__device__ __forceinline__ float dtof(float v) { return v; }
__device__ __forceinline__ double dtof(double v) { return v; }
__device__ __forceinline__ float dtof(bf16 v) { return __uint_as_float(uint32_t(v.bits) << 16); }
__device__ __forceinline__ float dtof(fp16 v) { return __half2float(__ushort_as_half(v.bits)); }

// The forward's conversions of its row and parameters: bf16 -> float in an asm statement that
// the compiler can neither merge nor hoist, so each use converts again (one instruction)
// instead of keeping converted floats live across the reductions: bf16 with 8 vectors a thread
// took 127 registers (one 512-thread CTA per SM) instead of 64 (two). Not in the backward,
// where it costs registers (2 vectors: 113 instead of 61).
template <class T>
__device__ __forceinline__ acc_t<T> dtof_row(T v) {
  if constexpr (std::is_same_v<T, bf16>) {
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
  if constexpr (std::is_same_v<T, fp16>) {
    float f;
    asm volatile("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
    return f;
  } else {
    return dtof_row(v);
  }
}

template <class T> __device__ __forceinline__ T dfrom(acc_t<T> v);
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
template <class V>
__device__ __forceinline__ auto elem(const V& p, int e) {
  using T = std::remove_cv_t<std::remove_reference_t<decltype(p.v[0])>>;
  if constexpr (std::is_same_v<T, bf16>) {
    uint32_t w;
    memcpy(&w, &p.v[e & ~1], sizeof(w));
    return __uint_as_float(e & 1 ? w & 0xffff0000u : w << 16);
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
// forward of 65536: 86% against 75%; not understood, docs/cuda.md).
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

// The vectors [v0, v0 + n) of a row of nvec that this CTA holds: slices of ceil(nvec / CL).
struct Slice {
  int v0, n;
};
template <int CL>
__device__ __forceinline__ Slice row_slice(int nvec) {
  if constexpr (CL == 1) return {0, nvec};
  const int per = (nvec + CL - 1) / CL, v0 = cluster_rank<CL>() * per;
  return {v0, max(0, min(per, nvec - v0))};
}

// Buffers of the rows staged in shared memory (StagedRows): rows k, k + 1 in use, k + 2 loading.
constexpr int kRowStages = 3;

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

// ---------------------------------------------------------------- forward, register path

// RES: the fused residual add (p.R, p.S set). A template parameter, so that the plain norms
// keep the registers (and the occupancy) of a kernel without it. CL = 1: one row group per CTA
// (grid = row groups). CL > 1: a persistent grid of clusters, cluster b / CL taking rows b / CL,
// + gridDim.x / CL, ..., each CTA one slice of the row (blockDim.x == tpr).
// Cluster CTAs (512 threads, 8 vectors a thread): 2 resident a SM (<= 64 registers; 16-bit
// spills 8-40 bytes, fp32 with the fused add 16-24, 16-bit input with float32 parameters up to
// 240: docs/cuda.md). CL = 1: no minimum (0: as if none given).
constexpr int fwd_min_ctas(int cl) { return cl == 1 ? 0 : 2; }

template <class T, class P, int NV, Norm NORM, bool RES, int CL>
__global__ void __launch_bounds__(512, fwd_min_ctas(CL)) fwd_reg_kernel(FwdParams<T, P> p) {
  using A = acc_t<T>;
  constexpr int VEC = Pack<T>::n;
  __shared__ A red[32 * 2];
  __shared__ ClusterSum<CL, 1, A> csum;
  csum.start();
  const int tpr = p.tpr;
  const int G = blockDim.x / tpr;
  const int grp = threadIdx.x / tpr, t = threadIdx.x % tpr;
  const int N = p.n;
  const Slice sl = row_slice<CL>(N / VEC);
  const int nvec = sl.n, c0 = sl.v0 * VEC;  // this CTA's vectors, its first column
  const A invN = A(1) / A(N);
  int uses = 0;  // of csum
  csum.wait_started();
  // One row group; a lambda, so that CL = 1 compiles to the loop-free kernel it was (a loop
  // around it cost registers and spills there).
  const auto row_group = [&](int64_t rg) {
    const int64_t row = rg * G + grp;
    const bool valid = row < p.M;
    const T* x = p.X + (valid ? row : 0) * p.ldx + c0;

    Pack<T> r[NV];
#pragma unroll
    for (int i = 0; i < NV; ++i) {
      const int v = i * tpr + t;
      if (valid && v < nvec) {
        r[i] = ld_pack(x + int64_t(v) * VEC);
        if constexpr (RES) {  // fused residual add: normalize x + r, rounded, and write it out
          r[i] = add_rn_vec(r[i], ld_pack(p.R + row * p.ldr + c0 + int64_t(v) * VEC));
          st_pack<(CL > 1)>(p.S + row * N + c0 + int64_t(v) * VEC, r[i]);
        }
      }
    }
    A mean = 0;
    if constexpr (NORM == Norm::kLayer) {
      const A x0 = valid ? first_elem<RES>(p, row) : A(0);
      A s[1] = {0};
#pragma unroll
      for (int i = 0; i < NV; ++i)
        if (valid && i * tpr + t < nvec) {
#pragma unroll
          for (int e = 0; e < VEC; ++e) s[0] += A(dtof_row(r[i].v[e])) - x0;
        }
      group_sum<1, A, (NV < 8)>(s, tpr, red);
      csum.sum(s, uses);
      mean = x0 + s[0] * invN;
    }
    A q[1] = {0};
#pragma unroll
    for (int i = 0; i < NV; ++i)
      if (valid && i * tpr + t < nvec) {
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          const A d = A(dtof_row(r[i].v[e])) - mean;
          q[0] += d * d;
        }
      }
    group_sum<1, A, (NV < 8)>(q, tpr, red);
    csum.sum(q, uses);
    const A rstd = A(1) / sqrt(q[0] * invN + A(p.eps));
    if (valid && t == 0 && c0 == 0) {
      p.mean[row] = mean;
      p.rstd[row] = rstd;
    }
    T* y = p.Y + (valid ? row : 0) * int64_t(N) + c0;
#pragma unroll
    for (int i = 0; i < NV; ++i) {
      const int v = i * tpr + t;
      if (valid && v < nvec) {
        PPack<P, VEC> g, b;
        if (p.gamma) g = *reinterpret_cast<const PPack<P, VEC>*>(p.gamma + c0 + v * VEC);
        if (p.beta) b = *reinterpret_cast<const PPack<P, VEC>*>(p.beta + c0 + v * VEC);
        Pack<T> o;
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          const A scale = p.gamma ? rstd * A(dtof_row(g.v[e])) : rstd;
          A out = (A(dtof_row(r[i].v[e])) - mean) * scale;
          if (p.beta) out += A(dtof_row(b.v[e]));
          o.v[e] = dfrom<T>(out);
        }
        st_pack<(CL > 1)>(y + int64_t(v) * VEC, o);
      }
    }
  };
  if constexpr (CL == 1) {
    row_group(blockIdx.x);
  } else {
    const int64_t ngroups = (p.M + G - 1) / G;
    for (int64_t rg = blockIdx.x / CL; rg < ngroups; rg += gridDim.x / CL) row_group(rg);
  }
}

// ---------------------------------------------------------------- forward, staged rows (sm_90)
// Rows split over a cluster (fwd_config), staged in shared memory instead of registers: the TMA
// unit loads each CTA's slice of a row (cp.async.bulk) two rows ahead (StagedRows),
// and each thread holds the gamma and beta of its vectors for all rows. The register kernel of 8
// vectors a thread loads a row only once the last one is written, spills (bf16: 537K
// local-memory requests a call at N = 65536), and re-reads gamma and beta every row.
// H100, % of copy bandwidth, register -> staged: bf16 / fp16 65536 80.5 / 83.8 -> 91.5 / 91.8,
// fp32 32768 90.5 -> 93.3, fp32 65536 86.7 -> 89.8 (over 8 CTAs: staged_cluster).
// A row takes two cluster sums (layer norm: the mean's, then the centred squares'; RMS: the
// squares'), each a wait for the slowest CTA of the cluster. They are pipelined across rows: the
// CTA sends row k + 1's first sums before it waits for row k's squares and writes row k, and
// (layer norm) row k + 1's squares after that, so every wait has a phase of work in front of it
// (ClusterSum over 4 slots, used in the order its comment proves): fp32 65536 89.7 -> 94.9%,
// 32768 93.5 -> 94.5 against one exchange at a time. Thread t takes vectors t,
// t + 512, ... in fwd_reg_kernel's order and adds in its order, so where that kernel also runs
// 512 threads a slice the results are its bits (tested). Plain norms: the fused residual add
// keeps the register kernel.
constexpr int kStagedThreads = 512, kStagedVectors = 8;  // slices of <= kFwdCtaVectors (fwd_config)
template <class T, class P, Norm NORM, int CL>
__global__ void __launch_bounds__(kStagedThreads, 1) fwd_staged_kernel(FwdParams<T, P> p) {
#if FASTLN_CLUSTERS
  static_assert(CL > 1, "rows split over a cluster");
  using A = acc_t<T>;
  constexpr int VEC = Pack<T>::n;
  constexpr bool kLayer = NORM == Norm::kLayer;
  constexpr int kUses = kLayer ? 2 : 1;  // of csum a row: row k's squares are use kUses * k + kUses - 1
  extern __shared__ __align__(16) unsigned char dsmem_raw[];
  __shared__ uint64_t full[kRowStages];
  __shared__ A red[32];
  __shared__ ClusterSum<CL, 1, A, 4> csum;
  const int t = threadIdx.x, N = p.n;
  const Slice sl = row_slice<CL>(N / VEC);
  const int nvec = sl.n, c0 = sl.v0 * VEC;
  const int per = (N / VEC + CL - 1) / CL;  // a buffer's vectors
  const uint32_t bytes = uint32_t(nvec) * 16;
  const A invN = A(1) / A(N);
  const int64_t first = blockIdx.x / CL, stride = gridDim.x / CL;
  const StagedRows<T, 1> rows{full, reinterpret_cast<const Pack<T>*>(dsmem_raw), per, bytes};
  const auto load = [&](int64_t k) {  // the k-th row of this CTA
    const int64_t row = first + k * stride;
    if (t == 0 && row < p.M && bytes) rows.load(k, {p.X + row * p.ldx + c0});
  };
  if (t == 0) rows.init();
  csum.start();  // its fence also publishes these mbarriers' initialization
  __syncthreads();
  load(0);
  load(1);
  csum.wait_started();
  // gamma and beta of this thread's vectors, loaded once: read for every row, they did not stay
  // in L1 beside the buffers (bf16, 2 x 64 KB a slice: 3.6% L1 hits, ncu). 16-byte parameter
  // vectors only (float32 parameters of 16-bit rows would take 128 registers).
  constexpr bool kParamRegs = sizeof(PPack<P, VEC>) == 16;
  PPack<P, VEC> g[kParamRegs ? kStagedVectors : 1], b[kParamRegs ? kStagedVectors : 1];
  if constexpr (kParamRegs) {
#pragma unroll
    for (int i = 0; i < kStagedVectors; ++i) {
      const int v = t + i * kStagedThreads;
      if (v < nvec && p.gamma) g[i] = *reinterpret_cast<const PPack<P, VEC>*>(p.gamma + c0 + v * VEC);
      if (v < nvec && p.beta) b[i] = *reinterpret_cast<const PPack<P, VEC>*>(p.beta + c0 + v * VEC);
    }
  }
  // Layer norm, row k: the CTA's sum of x - x0 (x0: the row's first element, the register
  // kernel's shift), sent as use 2k.
  const auto send_mean_sums = [&](int64_t k, A& x0) {
    x0 = A(dtof(p.X[(first + k * stride) * p.ldx]));
    rows.wait(k);
    const Pack<T>* buf = rows.buffer(k);
    A sum[1] = {0};
    for (int v = t; v < nvec; v += kStagedThreads) {
      const Pack<T> r = buf[v];
#pragma unroll
      for (int e = 0; e < VEC; ++e) sum[0] += A(dtof(r.v[e])) - x0;
    }
    group_sum<1, A, false>(sum, kStagedThreads, red);  // fwd_reg_kernel's sums (8 vectors)
    csum.send(sum, 2 * k);
  };
  // Row k's mean (layer norm: once the cluster's sums of use 2k arrive; RMS: 0), and the CTA's
  // sum of (x - mean)^2, sent as use kUses * k + kUses - 1.
  const auto send_square_sums = [&](int64_t k, A x0) -> A {
    A mean = 0;
    if constexpr (kLayer) {
      A sum[1];
      csum.recv(sum, 2 * k);
      mean = x0 + sum[0] * invN;
    } else {
      rows.wait(k);
    }
    const Pack<T>* buf = rows.buffer(k);
    A q[1] = {0};
    for (int v = t; v < nvec; v += kStagedThreads) {
      const Pack<T> r = buf[v];
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        const A d = A(dtof(r.v[e])) - mean;
        q[0] += d * d;
      }
    }
    group_sum<1, A, false>(q, kStagedThreads, red);
    csum.send(q, kUses * k + kUses - 1);
    return mean;
  };
  // Row k's mean, rstd and output, once the cluster's squares arrive.
  const auto write_row = [&](int64_t k, A mean) {
    const int64_t row = first + k * stride;
    A q[1];
    csum.recv(q, kUses * k + kUses - 1);
    const A rstd = A(1) / sqrt(q[0] * invN + A(p.eps));
    if (t == 0 && c0 == 0) {
      p.mean[row] = mean;
      p.rstd[row] = rstd;
    }
    const Pack<T>* buf = rows.buffer(k);
    T* y = p.Y + row * int64_t(N) + c0;
#pragma unroll
    for (int i = 0; i < kStagedVectors; ++i) {
      const int v = t + i * kStagedThreads;
      if (v < nvec) {
        const Pack<T> r = buf[v];
        if constexpr (!kParamRegs) {
          if (p.gamma) g[0] = *reinterpret_cast<const PPack<P, VEC>*>(p.gamma + c0 + v * VEC);
          if (p.beta) b[0] = *reinterpret_cast<const PPack<P, VEC>*>(p.beta + c0 + v * VEC);
        }
        Pack<T> o;
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          const A scale = p.gamma ? rstd * A(dtof_pinned(g[kParamRegs ? i : 0].v[e])) : rstd;
          A out = (A(dtof(r.v[e])) - mean) * scale;
          if (p.beta) out += A(dtof_pinned(b[kParamRegs ? i : 0].v[e]));
          o.v[e] = dfrom<T>(out);
        }
        st_pack<true>(y + int64_t(v) * VEC, o);
      }
    }
  };
  A x0 = 0, mean = 0;
  if (first < p.M) {
    if constexpr (kLayer) send_mean_sums(0, x0);
    mean = send_square_sums(0, x0);
  }
  int64_t k = 0;
  for (int64_t row = first; row < p.M; row += stride, ++k) {
    // Buffer (k + 2) % 3 held row k - 1, which every thread has written (the barrier below).
    load(k + 2);
    const bool next = row + stride < p.M;
    A x0_next = 0, mean_next = 0;
    if (next) {
      if constexpr (kLayer) send_mean_sums(k + 1, x0_next);
      else send_square_sums(k + 1, 0);
    }
    write_row(k, mean);
    if (kLayer && next) mean_next = send_square_sums(k + 1, x0_next);
    mean = mean_next;
    __syncthreads();  // buffer k % 3 is free for the load issued next iteration
  }
#else
  __trap();
#endif
}

// ---------------------------------------------------------------- fallback path
// VEC consecutive elements (VEC = 1: any alignment; else VEC divides N and 16 | addresses).
template <class T, int VEC>
struct alignas(sizeof(T) * VEC) VecN {
  T v[VEC];
};

template <class T, class P, int VEC, Norm NORM, bool RES>
__global__ void __launch_bounds__(512) fwd_fallback_kernel(FwdParams<T, P> p) {
  using A = acc_t<T>;
  using V = VecN<T, VEC>;
  __shared__ A red[32 * 2];
  const int tpr = blockDim.x;
  const int N = p.n, nv = N / VEC;
  const A invN = A(1) / A(N);
  for (int64_t row = blockIdx.x; row < p.M; row += gridDim.x) {
    const V* x = reinterpret_cast<const V*>(p.X + row * p.ldx);
    if constexpr (RES) {  // fused residual add: write x + r, read it back (each thread its own vectors)
      const V* r = reinterpret_cast<const V*>(p.R + row * p.ldr);
      V* s = reinterpret_cast<V*>(p.S + row * int64_t(N));
      for (int j = threadIdx.x; j < nv; j += tpr) s[j] = add_rn_vec(x[j], r[j]);
      x = s;
    }
    A mean = 0;
    if constexpr (NORM == Norm::kLayer) {
      const A x0 = first_elem<RES>(p, row);
      A s[1] = {0};
      for (int j = threadIdx.x; j < nv; j += tpr) {
        const V a = x[j];
#pragma unroll
        for (int e = 0; e < VEC; ++e) s[0] += A(dtof(a.v[e])) - x0;
      }
      group_sum<1>(s, tpr, red);
      mean = x0 + s[0] * invN;
    }
    A q[1] = {0};
    for (int j = threadIdx.x; j < nv; j += tpr) {
      const V a = x[j];
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        const A d = A(dtof(a.v[e])) - mean;
        q[0] += d * d;
      }
    }
    group_sum<1>(q, tpr, red);
    const A rstd = A(1) / sqrt(q[0] * invN + A(p.eps));
    if (threadIdx.x == 0) {
      p.mean[row] = mean;
      p.rstd[row] = rstd;
    }
    V* y = reinterpret_cast<V*>(p.Y + row * int64_t(N));
    for (int j = threadIdx.x; j < nv; j += tpr) {
      const V a = x[j];
      V o;
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        const int col = j * VEC + e;
        const A scale = p.gamma ? rstd * ptoa<A>(p.gamma[col]) : rstd;
        A out = (A(dtof(a.v[e])) - mean) * scale;
        if (p.beta) out += ptoa<A>(p.beta[col]);
        o.v[e] = dfrom<T>(out);
      }
      y[j] = o;
    }
  }
}

// ---------------------------------------------------------------- backward

// Writes a backward CTA's column sums (column j's at acc[at(j)] and acc[at(j) + cols]) to its
// partial [2][N]. CL > 1: each CTA of the cluster writes its slice of the cluster's partial.
// CL = 1 kernels launched in clusters of pc CTAs (bwd_launch_plan) write one partial per
// cluster, CTA r adding columns [r, r + 1) * cols / pc of the pc CTAs in rank order (distributed
// shared memory): pc times fewer bytes written here and read by reduce_partials_kernel.
template <int CL, class A, class At>
__device__ __forceinline__ void write_partial(const A* acc, int cols, int N, A* partial, int c0, At at) {
  int pc = 1, pr = 0;
#if FASTLN_CLUSTERS
  cg::cluster_group cluster = cg::this_cluster();
  if constexpr (CL == 1 && sizeof(A) == 4)  // float sums: the cluster types (not double)
    pc = int(cluster.num_blocks()), pr = int(cluster.block_rank());
#endif
  if (pc > 1) {
#if FASTLN_CLUSTERS
    cluster.sync();
#endif
  } else {
    __syncthreads();
  }
  A* out = partial + int64_t(blockIdx.x / (CL > 1 ? CL : pc)) * 2 * N + c0;
  for (int j = cols * pr / pc + threadIdx.x; j < cols * (pr + 1) / pc; j += blockDim.x) {
    const int k = at(j);
    const A* a = acc;  // rank 0's sums first (this CTA's without clusters)
#if FASTLN_CLUSTERS
    if (pc > 1) a = cluster.map_shared_rank(acc, 0);
#endif
    A g = a[k], b = a[k + cols];
#if FASTLN_CLUSTERS
    for (int r = 1; r < pc; ++r) {
      a = cluster.map_shared_rank(acc, r);
      g += a[k], b += a[k + cols];
    }
#endif
    out[j] = g;
    out[N + j] = b;
  }
#if FASTLN_CLUSTERS
  if (pc > 1) cluster.sync();  // the others have read this CTA's shared memory
#endif
}

// ACC_SMEM: the CTA is one row group (tpr == blockDim.x) and keeps its column sums in
// dynamic shared memory [2][its columns]; else in registers, combined across groups at the end
// through dynamic shared memory [2][N] in group order. CL > 1 (ACC_SMEM only): a persistent
// grid of clusters; cluster b / CL walks row groups b / CL, + gridDim.x / CL, ..., each CTA its
// slice of the row and the column sums of that slice, and the cluster writes one [2][N] partial.
// ROWS: rows a CTA (cluster) takes per iteration (row groups ROWS * it, ... + ROWS - 1; odd M:
// the last iteration's second row is past the end). ROWS = 2 holds both rows in registers,
// adds both rows' column sums to shared memory in one load and store, loads gamma once for
// both, and sums the four row sums in one group_sum and one cluster exchange: half the
// exchanges a row, whose waits were what held 16-bit cluster rows back (bf16 65536: 65 -> 80%
// of copy bandwidth). Built for 16-bit cluster slices (bwd_two_rows); in one 512-thread CTA a
// row (bf16 16384, 128 registers) it measured 2.5 points slower than one row (docs/cuda.md).
// (The kernel follows the helpers for its launch bounds.)

// Threads and resident CTAs a backward CTA is built for. Clusters: 16-bit slices of <= 1024
// vectors in <= 256 threads, 3 CTAs a SM (<= 80 registers: 81, allocated as 88, allowed 2),
// or 2 with ROWS = 2 (<= 128); 32-bit in <= 512 threads, 2 a SM. CL = 1: 512 threads, no
// minimum (0: as if none given), or, MINB = 2, 384 threads twice a SM (16-bit rows of 4
// vectors a thread whose column sums fit twice: N = 12288 took 91 registers, one CTA a SM).
constexpr int kBwdTwoCtaThreads = 384;
constexpr int bwd_max_threads(int cl, int elem_size, int minb = 0) {
  return minb == 2 ? kBwdTwoCtaThreads : cl > 1 && elem_size == 2 ? 256 : 512;
}
constexpr int bwd_min_ctas(int cl, int elem_size, int minb, int rows) {
  return cl == 1 ? minb : elem_size == 2 ? (rows == 2 ? 2 : 3) : 2;
}
// The kernels built with ROWS = 2.
template <class T>
constexpr bool bwd_two_rows(int nv, int cl) {
  return sizeof(T) == 2 && nv == 4 && cl > 1;
}

template <class T, class P, int NV, Norm NORM, bool ACC_SMEM, int CL, int MINB = 0, int ROWS = 1>
__global__ void __launch_bounds__(bwd_max_threads(CL, sizeof(T), MINB), bwd_min_ctas(CL, sizeof(T), MINB, ROWS))
    bwd_reg_kernel(BwdParams<T, P> p) {
  static_assert(CL == 1 || ACC_SMEM, "a cluster's CTA holds one row slice");
  static_assert(ROWS == 1 || bwd_two_rows<T>(NV, CL), "ROWS = 2 is built for these only");
  allow_dependent_launch();  // reduce_partials_kernel: its CTAs wait on the SMs this grid leaves
  using A = acc_t<T>;
  constexpr int VEC = Pack<T>::n;
  extern __shared__ __align__(16) unsigned char dsmem_raw[];
  A* acc = reinterpret_cast<A*>(dsmem_raw);
  // ACC_SMEM: column sums [2][Q][nvec] in 16-byte pieces, piece q of vector v holding the sums
  // of its columns v * VEC + q * AQ + [0, AQ): a thread adds a vector's sums with Q 16-byte
  // loads and stores each, not VEC scalar ones (16-bit backward was bound by issue slots).
  constexpr int AQ = 16 / sizeof(A), Q = VEC / AQ;
  struct alignas(16) Acc16 { A v[AQ]; };
  Acc16* acc16 = reinterpret_cast<Acc16*>(dsmem_raw);
  __shared__ A red[32 * 2 * ROWS];
  __shared__ ClusterSum<CL, 2 * ROWS, A> csum;
  csum.start();
  const int tpr = p.tpr;
  const int G = blockDim.x / tpr;
  const int grp = threadIdx.x / tpr, t = threadIdx.x % tpr;
  const int N = p.n;
  const Slice sl = row_slice<CL>(N / VEC);
  // This CTA's vectors, columns and first column of each row (CL = 1: the whole row; cols = N
  // there, as the compiler cannot tell: nv = 2 bf16 took 112 registers instead of 61).
  const int nvec = sl.n, cols = CL == 1 ? N : nvec * VEC, c0 = sl.v0 * VEC;
  const bool params = p.partial != nullptr;
  const A invN = A(1) / A(N);

  A ag[ACC_SMEM ? 1 : NV][VEC], ab[ACC_SMEM ? 1 : NV][VEC];
  if constexpr (ACC_SMEM) {
    if (params)
      for (int j = threadIdx.x; j < 2 * cols; j += blockDim.x) acc[j] = 0;
    // Each thread touches only its own columns below: no barrier needed until the end.
  } else {
#pragma unroll
    for (int i = 0; i < NV; ++i)
#pragma unroll
      for (int e = 0; e < VEC; ++e) ag[i][e] = ab[i][e] = 0;
  }
  if constexpr (ACC_SMEM) __syncthreads();
  csum.wait_started();

  const int64_t iters = (p.M + G * ROWS - 1) / (G * ROWS);
  int uses = 0;  // of csum
  for (int64_t it = blockIdx.x / CL; it < iters; it += gridDim.x / CL) {
    // Row r of this iteration: row group it * ROWS + r (ROWS = 2, odd M: the last one's second
    // row is past the end).
    int64_t row[ROWS];
    bool valid[ROWS];
    Pack<T> rx[ROWS][NV], rd[ROWS][NV];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      row[r] = (it * ROWS + r) * G + grp;
      valid[r] = row[r] < p.M;
      const T* x = p.X + (valid[r] ? row[r] : 0) * p.ldx + c0;
      const T* dy = p.dY + (valid[r] ? row[r] : 0) * p.lddy + c0;
#pragma unroll
      for (int i = 0; i < NV; ++i) {
        const int v = i * tpr + t;
        if (valid[r] && v < nvec) {
          rx[r][i] = ld_pack(x + int64_t(v) * VEC);
          rd[r][i] = ld_pack(dy + int64_t(v) * VEC);
        }
      }
    }
    A mean[ROWS], rstd[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      mean[r] = (valid[r] && NORM == Norm::kLayer) ? p.mean[row[r]] : A(0);
      rstd[r] = valid[r] ? p.rstd[row[r]] : A(0);
    }
    A c[2 * ROWS];  // row r: c[2r] = sum g, c[2r + 1] = sum g * xhat
#pragma unroll
    for (int k = 0; k < 2 * ROWS; ++k) c[k] = 0;
#pragma unroll
    for (int i = 0; i < NV; ++i) {
      const int v = i * tpr + t;
      if (valid[0] && v < nvec) {  // valid[0]: some row of the iteration is
        PPack<P, VEC> g;
        if (p.gamma) g = *reinterpret_cast<const PPack<P, VEC>*>(p.gamma + c0 + v * VEC);
        // Q pieces of AQ columns: a piece's products of every row, then its column sums
        // (dgamma += dy * xhat, dbeta += dy; rows in order) with one shared-memory load and
        // store; only a piece's values are live at a time.
#pragma unroll
        for (int q = 0; q < Q; ++q) {
          A xh[ROWS][AQ], d[ROWS][AQ];
#pragma unroll
          for (int r = 0; r < ROWS; ++r) {
            if (!valid[r]) continue;
#pragma unroll
            for (int k = 0; k < AQ; ++k) {
              const int e = q * AQ + k;
              xh[r][k] = bwd_xhat(A(elem(rx[r][i], e)), mean[r], rstd[r]);
              d[r][k] = A(elem(rd[r][i], e));
              const A gg = p.gamma ? mul_rn(d[r][k], A(elem(g, e))) : d[r][k];
              c[2 * r] += gg;
              c[2 * r + 1] = fma_rn(gg, xh[r][k], c[2 * r + 1]);
            }
          }
          if constexpr (ACC_SMEM) {
            if (params) {
              Acc16 sg = acc16[q * nvec + v], sb = acc16[(Q + q) * nvec + v];
#pragma unroll
              for (int r = 0; r < ROWS; ++r) {
                if (!valid[r]) continue;
#pragma unroll
                for (int k = 0; k < AQ; ++k) {
                  sg.v[k] = fma_rn(d[r][k], xh[r][k], sg.v[k]);
                  sb.v[k] += d[r][k];
                }
              }
              acc16[q * nvec + v] = sg, acc16[(Q + q) * nvec + v] = sb;
            }
          } else {
#pragma unroll
            for (int k = 0; k < AQ; ++k) {
              ag[i][q * AQ + k] = fma_rn(d[0][k], xh[0][k], ag[i][q * AQ + k]);
              ab[i][q * AQ + k] += d[0][k];
            }
          }
        }
      }
    }
    if (p.dX) {
      group_sum<2 * ROWS>(c, tpr, red);
      csum.sum(c, uses);
      A c1[ROWS], c2[ROWS];
      T* dx[ROWS];
#pragma unroll
      for (int r = 0; r < ROWS; ++r) {
        c1[r] = NORM == Norm::kLayer ? mul_rn(c[2 * r], invN) : A(0);
        c2[r] = mul_rn(c[2 * r + 1], invN);
        dx[r] = p.dX + (valid[r] ? row[r] : 0) * int64_t(N) + c0;
      }
#pragma unroll
      for (int i = 0; i < NV; ++i) {
        const int v = i * tpr + t;
        if (valid[0] && v < nvec) {
          PPack<P, VEC> g;
          if (p.gamma) g = *reinterpret_cast<const PPack<P, VEC>*>(p.gamma + c0 + v * VEC);
#pragma unroll
          for (int r = 0; r < ROWS; ++r) {
            if (!valid[r]) continue;
            Pack<T> o;
#pragma unroll
            for (int e = 0; e < VEC; ++e) {
              const A xh = bwd_xhat(A(elem(rx[r][i], e)), mean[r], rstd[r]);
              const A d = A(elem(rd[r][i], e));
              const A gg = p.gamma ? mul_rn(d, A(elem(g, e))) : d;
              o.v[e] = dfrom<T>(bwd_dx(gg, xh, rstd[r], c1[r], c2[r]));
            }
            st_pack<(CL > 1)>(dx[r] + int64_t(v) * VEC, o);
          }
        }
      }
    }
  }
  if (!params) return;
  if constexpr (!ACC_SMEM) {
    for (int j = threadIdx.x; j < 2 * N; j += blockDim.x) acc[j] = 0;
    __syncthreads();
    for (int gi = 0; gi < G; ++gi) {  // fixed group order: deterministic
      if (grp == gi) {
#pragma unroll
        for (int i = 0; i < NV; ++i) {
          const int v = i * tpr + t;
          if (v < nvec) {
#pragma unroll
            for (int e = 0; e < VEC; ++e) {
              acc[v * VEC + e] += ag[i][e];
              acc[N + v * VEC + e] += ab[i][e];
            }
          }
        }
      }
      __syncthreads();
    }
  }
  // Column j's sums: acc[at(j)] and acc[at(j) + cols].
  write_partial<CL>(acc, cols, N, p.partial, c0, [&](int j) {
    if constexpr (ACC_SMEM) {
      const int e = j % VEC;
      return ((e / AQ) * nvec + j / VEC) * AQ + e % AQ;
    } else {
      return j;
    }
  });
}

// ---------------------------------------------------------------- backward, staged rows (sm_90)
// Rows of bwd_staged_plan (fp32 rows of 256 vectors and more) on sm_90: a persistent grid whose
// CTA (CL = 1), or cluster of CL CTAs each a slice, walks rows first, first + stride, ... as
// fwd_staged_kernel does, the TMA unit loading x and dy two rows ahead into shared memory
// (StagedRows). Each thread takes kBwdStagedVectors vectors of the slice (t,
// t + blockDim.x) and holds their gamma and their dgamma / dbeta column sums in registers for all
// its rows: shared memory holds only the staged rows, and the column sums are written once, at
// the end, into the cluster's partial (the CTA's slice of it). The row sums are pipelined: the
// CTA adds row k + 1's and sends them to the cluster before it waits for row k's and writes row
// k's dx, so the cluster's exchange does not leave the SM idle (CTAs of up to 1024 threads, one
// a SM; without that pipelining, fp32 12288 over 2 CTAs: 84.8% of copy bandwidth, 99.0 with it).
constexpr int kBwdStagedVectors = 2, kBwdStagedThreads = 1024;

template <class T, class P, Norm NORM, int CL>
__global__ void __launch_bounds__(kBwdStagedThreads, 1) bwd_staged_kernel(BwdParams<T, P> p) {
#if FASTLN_CLUSTERS
  allow_dependent_launch();  // as bwd_reg_kernel
  using A = acc_t<T>;
  constexpr int VEC = Pack<T>::n, NVT = kBwdStagedVectors;
  extern __shared__ __align__(16) unsigned char dsmem_raw[];
  __shared__ uint64_t full[kRowStages];
  __shared__ A red[32 * 2];
  __shared__ ClusterSum<CL, 2, A, 4> csum;
  const int t = threadIdx.x, nt = blockDim.x, N = p.n;
  const Slice sl = row_slice<CL>(N / VEC);
  const int nvec = sl.n, c0 = sl.v0 * VEC;
  const int per = (N / VEC + CL - 1) / CL;
  const uint32_t bytes = uint32_t(nvec) * 16;
  const A invN = A(1) / A(N);
  const int64_t first = blockIdx.x / CL, stride = gridDim.x / CL;
  // Row k's slice of x at rows.buffer(k, 0), of dy at rows.buffer(k, 1).
  const StagedRows<T, 2> rows{full, reinterpret_cast<const Pack<T>*>(dsmem_raw), per, bytes};
  const auto load = [&](int64_t k) {  // the k-th row of this CTA
    const int64_t row = first + k * stride;
    if (t == 0 && row < p.M && bytes) rows.load(k, {p.X + row * p.ldx + c0, p.dY + row * p.lddy + c0});
  };
  if (t == 0) rows.init();
  csum.start();  // its fence also publishes these mbarriers' initialization
  __syncthreads();
  load(0);
  load(1);
  csum.wait_started();
  // gamma of this thread's vectors (ones without gamma: dy * 1 is dy), in registers when they
  // are 16-byte vectors (float32 parameters of 16-bit rows are read per row).
  constexpr bool kParamRegs = sizeof(PPack<P, VEC>) == 16;
  PPack<P, VEC> g[kParamRegs ? NVT : 1];
  if constexpr (kParamRegs) {
#pragma unroll
    for (int i = 0; i < NVT; ++i) {
      const int v = t + i * nt;
#pragma unroll
      for (int e = 0; e < VEC; ++e) g[i].v[e] = p.gamma && v < nvec ? p.gamma[c0 + v * VEC + e] : P(dfrom<P>(1));
    }
  }
  const auto gamma = [&](int i, int v, int e) -> A {
    if constexpr (kParamRegs) {
      return A(dtof_pinned(g[i].v[e]));
    } else {
      return p.gamma ? A(dtof(p.gamma[c0 + v * VEC + e])) : A(1);
    }
  };
  A ag[NVT][VEC], ab[NVT][VEC];  // dgamma, dbeta of this thread's columns
#pragma unroll
  for (int i = 0; i < NVT; ++i)
#pragma unroll
    for (int e = 0; e < VEC; ++e) ag[i][e] = ab[i][e] = 0;
  // The first half of row k: its mean and rstd, and its sums c (sum g, sum g * xhat) over the
  // CTA, sent to the cluster as use k of csum.
  const auto row_sums = [&](int64_t k, A& mean, A& rstd, A (&c)[2]) {
    const int64_t row = first + k * stride;
    mean = NORM == Norm::kLayer ? p.mean[row] : A(0);
    rstd = p.rstd[row];
    rows.wait(k);
    const Pack<T>* bx = rows.buffer(k);
    c[0] = c[1] = 0;
#pragma unroll
    for (int i = 0; i < NVT; ++i) {
      const int v = t + i * nt;
      if (v < nvec) {
        const Pack<T> x = bx[v], d = bx[per + v];
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          const A xh = bwd_xhat(elem(x, e), mean, rstd), dy = elem(d, e);
          const A gg = mul_rn(dy, gamma(i, v, e));
          c[0] += gg;
          c[1] = fma_rn(gg, xh, c[1]);
          ag[i][e] = fma_rn(dy, xh, ag[i][e]);
          ab[i][e] += dy;
        }
      }
    }
    if (p.dX) {
      group_sum<2>(c, nt, red);
      csum.send(c, k);
    }
  };
  A mean = 0, rstd = 0, c[2] = {0, 0};
  if (first < p.M) row_sums(0, mean, rstd, c);
  int64_t k = 0;
  for (int64_t row = first; row < p.M; row += stride, ++k) {
    // Buffer (k + 2) % 3 held row k - 1, whose dx every thread has written (the barrier below).
    load(k + 2);
    A mean_next = 0, rstd_next = 0, c_next[2] = {0, 0};
    if (row + stride < p.M) row_sums(k + 1, mean_next, rstd_next, c_next);
    if (p.dX) {
      csum.recv(c, k);  // CL = 1: c stays the CTA's sums
      const A c1 = NORM == Norm::kLayer ? mul_rn(c[0], invN) : A(0), c2 = mul_rn(c[1], invN);
      const Pack<T>* bx = rows.buffer(k);
      T* dx = p.dX + row * int64_t(N) + c0;
#pragma unroll
      for (int i = 0; i < NVT; ++i) {
        const int v = t + i * nt;
        if (v < nvec) {
          const Pack<T> x = bx[v], d = bx[per + v];
          Pack<T> o;
#pragma unroll
          for (int e = 0; e < VEC; ++e) {
            const A xh = bwd_xhat(elem(x, e), mean, rstd);
            o.v[e] = dfrom<T>(bwd_dx(mul_rn(elem(d, e), gamma(i, v, e)), xh, rstd, c1, c2));
          }
          st_pack<true>(dx + int64_t(v) * VEC, o);
        }
      }
    }
    mean = mean_next, rstd = rstd_next, c[0] = c_next[0], c[1] = c_next[1];
    __syncthreads();  // buffer k % 3 is free for the load issued next iteration
  }
  if (!p.partial) return;
  A* out = p.partial + int64_t(blockIdx.x / CL) * 2 * N + c0;
#pragma unroll
  for (int i = 0; i < NVT; ++i) {
    const int v = t + i * nt;
    if (v < nvec) {
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        out[v * VEC + e] = ag[i][e];
        out[N + v * VEC + e] = ab[i][e];
      }
    }
  }
#else
  __trap();
#endif
}

// Fallback dX: one CTA per row, the row re-read (from L1/L2).
template <class T, class P, int VEC, Norm NORM>
__global__ void __launch_bounds__(512) bwd_fallback_dx_kernel(BwdParams<T, P> p) {
  using A = acc_t<T>;
  using V = VecN<T, VEC>;
  __shared__ A red[32 * 2];
  const int tpr = blockDim.x, N = p.n, nv = N / VEC;
  const A invN = A(1) / A(N);
  for (int64_t row = blockIdx.x; row < p.M; row += gridDim.x) {
    const V* x = reinterpret_cast<const V*>(p.X + row * p.ldx);
    const V* dy = reinterpret_cast<const V*>(p.dY + row * p.lddy);
    const A mean = NORM == Norm::kLayer ? p.mean[row] : A(0), rstd = p.rstd[row];
    A c[2] = {0, 0};
    for (int j = threadIdx.x; j < nv; j += tpr) {
      const V a = x[j], b = dy[j];
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        const A xh = bwd_xhat(A(dtof(a.v[e])), mean, rstd);
        const A d = A(dtof(b.v[e]));
        const A gg = p.gamma ? mul_rn(d, ptoa<A>(p.gamma[j * VEC + e])) : d;
        c[0] += gg;
        c[1] = fma_rn(gg, xh, c[1]);
      }
    }
    group_sum<2>(c, tpr, red);
    const A c1 = NORM == Norm::kLayer ? mul_rn(c[0], invN) : A(0), c2 = mul_rn(c[1], invN);
    V* dx = reinterpret_cast<V*>(p.dX + row * int64_t(N));
    for (int j = threadIdx.x; j < nv; j += tpr) {
      const V a = x[j], b = dy[j];
      V o;
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        const A xh = bwd_xhat(A(dtof(a.v[e])), mean, rstd);
        const A d = A(dtof(b.v[e]));
        const A gg = p.gamma ? mul_rn(d, ptoa<A>(p.gamma[j * VEC + e])) : d;
        o.v[e] = dfrom<T>(bwd_dx(gg, xh, rstd, c1, c2));
      }
      dx[j] = o;
    }
  }
}

// Fallback column sums: CTA (blockIdx.x, blockIdx.y) sums columns [256 x, 256 x + 256) over
// row chunk y of gridDim.y fixed chunks into partial[y].
template <class T, class P, Norm NORM>
__global__ void __launch_bounds__(256) bwd_fallback_cols_kernel(BwdParams<T, P> p) {
  using A = acc_t<T>;
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t chunks = gridDim.y;
  const int64_t r0 = p.M * blockIdx.y / chunks, r1 = p.M * (blockIdx.y + 1) / chunks;
  if (j >= p.n) return;
  A sg = 0, sb = 0;
  for (int64_t r = r0; r < r1; ++r) {
    const A mean = NORM == Norm::kLayer ? p.mean[r] : A(0), rstd = p.rstd[r];
    const A xh = bwd_xhat(A(dtof(p.X[r * p.ldx + j])), mean, rstd);
    const A d = A(dtof(p.dY[r * p.lddy + j]));
    sg += d * xh;
    sb += d;
  }
  A* out = p.partial + int64_t(blockIdx.y) * 2 * int64_t(p.n);
  out[j] = sg;
  out[p.n + j] = sb;
}

// dgamma[j] = sum_k partial[k][0][j], dbeta[j] = sum_k partial[k][1][j], in a fixed order:
// thread (tx, ty) sums k = ty, ty + RY, ...; then ty = 0 adds the RY sums in order. RY = 32
// rows of threads from kManyPartials partials on, else 8, so that each thread still keeps loads
// in flight (bf16 65536: 45 partials of 2 * 65536 took 17 us over 32 rows, 12 over 8). A
// template parameter: a runtime blockDim.y doubled the time of 4096 partials (8 -> 18 us).
// W: columns a thread, j .. j + W - 1 (N % W == 0), loaded W at a time (16 bytes for W = 4),
// each column summed in the same order whatever W.
constexpr int64_t kManyPartials = 256;
template <class A, class P, int RY, int W>
__global__ void __launch_bounds__(32 * RY) reduce_partials_kernel(const A* partial, int64_t nparts, int N,
                                                                  P* dgamma, P* dbeta) {
  wait_prior_grid();  // the partials are the kernel before's
  struct alignas(sizeof(A) * W) Cols {
    A v[W];
  };
  __shared__ A sm[RY][2][W][33];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t j = (int64_t(blockIdx.x) * 32 + tx) * W;
  Cols sg{}, sb{};
  if (j < N) {
    // W > 1: U partials' loads issued together, then their adds. `#pragma unroll 8` alone
    // does that only for threads with 8 partials or more; with fewer (30 partials over RY = 8:
    // 3-4 a thread) its remainder loop loads and adds one partial at a time (SASS). W = 1 keeps
    // the unrolled loop: batched as well, it took (4096, 1024) fp16's reduction 3.2 -> 4.9 us.
    constexpr int U = W > 1 ? 4 : 1;
#pragma unroll(W > 1 ? 1 : 8)
    for (int64_t k0 = ty; k0 < nparts; k0 += U * RY) {
      Cols g[U], b[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t k = k0 + u * RY;
        if (k < nparts) {
          g[u] = *reinterpret_cast<const Cols*>(partial + k * 2 * N + j);
          b[u] = *reinterpret_cast<const Cols*>(partial + k * 2 * N + N + j);
        }
      }
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (k0 + u * RY < nparts)
#pragma unroll
          for (int w = 0; w < W; ++w) sg.v[w] += g[u].v[w], sb.v[w] += b[u].v[w];
    }
  }
#pragma unroll
  for (int w = 0; w < W; ++w) sm[ty][0][w][tx] = sg.v[w], sm[ty][1][w][tx] = sb.v[w];
  __syncthreads();
  if (ty == 0 && j < N) {
#pragma unroll
    for (int w = 0; w < W; ++w) {
      A g = 0, b = 0;
      for (int i = 0; i < RY; ++i) {
        g += sm[i][0][w][tx];
        b += sm[i][1][w][tx];
      }
      if (dgamma) dgamma[j + w] = dfrom<P>(g);
      if (dbeta) dbeta[j + w] = dfrom<P>(b);
    }
  }
}

// ---------------------------------------------------------------- host side: one dispatch point
// An empty kernel: its attributes say which of this file's images the device runs.
__global__ void arch_probe_kernel() {}

namespace {

int round_up(int v, int m) { return (v + m - 1) / m * m; }
int pow2_ceil(int v) {
  int p = 1;
  while (p < v) p <<= 1;
  return p;
}
int nv_class(int nv) { return nv <= 1 ? 1 : nv <= 2 ? 2 : nv <= 4 ? 4 : nv <= 8 ? 8 : 16; }

// A device attribute, read once per device: queries cost host time, which small problems see.
template <cudaDeviceAttr ATTR>
int device_attr(int device, int fallback) {
  static int cache[64] = {0};
  if (device >= 0 && device < 64 && cache[device]) return cache[device];
  int v = 0;
  if (cudaDeviceGetAttribute(&v, ATTR, device) != cudaSuccess || v <= 0) {
    cudaGetLastError();  // clear it: a query failure is no launch failure
    v = fallback;
  }
  if (device >= 0 && device < 64) cache[device] = v;
  return v;
}
int num_sms(int device) { return device_attr<cudaDevAttrMultiProcessorCount>(device, 132); }
// Dynamic shared memory a CTA may have (the kernels' static shared memory is < 1 KB).
size_t max_dyn_smem(int device) {
  return size_t(device_attr<cudaDevAttrMaxSharedMemoryPerBlockOptin>(device, 48 * 1024)) - 1024;
}

// Thread-block clusters run: a device that launches them, running this file's sm_90 (or
// newer) image, not a JIT-compiled older one (whose cluster kernels trap).
bool clusters_supported(int device) {
  static int cache[64] = {0};  // 0: not asked yet, 1: no, 2: yes
  if (device >= 0 && device < 64 && cache[device]) return cache[device] == 2;
  int launch = 0;
  cudaFuncAttributes a{};
  const bool ok = cudaDeviceGetAttribute(&launch, cudaDevAttrClusterLaunch, device) == cudaSuccess &&
                  launch && cudaFuncGetAttributes(&a, arch_probe_kernel) == cudaSuccess &&
                  a.ptxVersion >= 90;
  if (!ok) cudaGetLastError();
  if (device >= 0 && device < 64) cache[device] = ok ? 2 : 1;
  return ok;
}

// The cluster kernels built (so the only ones the configs may pick; build time): 16- and
// 32-bit types, forward 8 vectors a thread, backward 4.
constexpr int kMaxCluster = 8;  // the portable cluster size
template <class T>
constexpr bool kClusterType = sizeof(T) <= 4;
constexpr bool fwd_cluster_nv(int nv) { return nv == 8; }
constexpr bool bwd_cluster_nv(int nv) { return nv == 4; }

cudaLaunchAttribute cluster_attr(int cl) {
  cudaLaunchAttribute a{};
  a.id = cudaLaunchAttributeClusterDimension;
  a.val.clusterDim.x = unsigned(cl);
  a.val.clusterDim.y = a.val.clusterDim.z = 1;
  return a;
}

// Clusters of cl CTAs of `kernel` (cl = 1: CTAs) resident on the device at once: the
// persistent grid. Cached: the queries cost microseconds of host time, which small problems
// would see. Sets the kernel's dynamic shared-memory limit (the device's) on its first query.
// Clusters: at most the CTAs resident per SM times the SMs over cl, and at most what
// cudaOccupancyMaxActiveClusters says (clusters live inside a GPC: H100, 256 threads, 64 KB,
// 3 CTAs a SM: 45 clusters of 8, not 49). Both count the launch's shared memory, not the
// kernel's limit (checked on the device).
int64_t resident_clusters(const void* kernel, int block, size_t smem, int cl, int device) {
  struct Entry {
    const void* kernel;
    int block;
    size_t smem;
    int cl, device;
    int64_t n;
  };
  static std::mutex mu;
  static std::vector<Entry> cache;
  const std::lock_guard<std::mutex> lock(mu);
  for (const Entry& e : cache)
    if (e.kernel == kernel && e.block == block && e.smem == smem && e.cl == cl && e.device == device)
      return e.n;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(max_dyn_smem(device)));
  int occ = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kernel, block, smem) != cudaSuccess) {
    cudaGetLastError();  // clear it: a query failure is no launch failure
    occ = 1;
  }
  int64_t n = int64_t(std::max(occ, 1)) * num_sms(device) / cl;
  if (cl > 1) {
    cudaLaunchAttribute attr = cluster_attr(cl);
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(unsigned(cl));
    cfg.blockDim = dim3(unsigned(block));
    cfg.dynamicSmemBytes = smem;
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
    int clusters = 0;
    if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg) == cudaSuccess && clusters > 0)
      n = std::min<int64_t>(n, clusters);
    else
      cudaGetLastError();
  }
  n = std::max<int64_t>(n, 1);
  if (cache.size() < 4096) cache.push_back({kernel, block, smem, cl, device, n});
  return n;
}

// Launches `kernel` on grid CTAs (a multiple of cl), in clusters of cl CTAs along x if cl > 1.
template <class... Args>
cudaError_t launch(void (*kernel)(Args...), int64_t grid, int block, size_t smem, int cl,
                   cudaStream_t s, const Args&... args) {
  if (grid >= (int64_t(1) << 31)) return cudaErrorInvalidConfiguration;
  if (cl == 1) {
    kernel<<<unsigned(grid), block, smem, s>>>(args...);
    return cudaGetLastError();
  }
  cudaLaunchAttribute attr = cluster_attr(cl);
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(unsigned(grid));
  cfg.blockDim = dim3(unsigned(block));
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, kernel, args...);
}

// f.template operator()<V>() for the V among Vs equal to v (the last if none is): a runtime
// choice to a template parameter.
template <int V, int... Vs, class F>
auto pick(int v, F&& f) {
  if constexpr (sizeof...(Vs) > 0)
    if (v != V) return pick<Vs...>(v, f);
  return f.template operator()<V>();
}

// A row configuration: threads per row (tpr), 16-byte vectors per thread (nv), block, and the
// CTAs a row is split over (cl > 1: a thread-block cluster, each CTA a slice of the row).
struct Config {
  bool reg = false;  // false: fallback path
  int tpr = 0, nv = 0, block = 0, cl = 1;
};

constexpr int kMaxRowThreads = 512;

// Rows of nvec 16-byte vectors. Small rows (nvec <= 128): tpr <= 32, a power of two giving
// up to 4 vectors a thread, several rows to a CTA of small_block threads. Larger rows: one row
// (or, cl > 1, one slice of ceil(nvec / cl) vectors) per CTA, the first nv of `nvs` for which
// <= max_threads threads suffice.
Config row_config(int nvec, int small_block, std::initializer_list<int> nvs, int cl = 1,
                  int max_threads = kMaxRowThreads) {
  Config c;
  if (cl == 1 && nvec <= 128) {
    c.tpr = pow2_ceil((nvec + 3) / 4);
    c.nv = nv_class((nvec + c.tpr - 1) / c.tpr);
    c.block = std::max(small_block, c.tpr);
    c.reg = true;
    return c;
  }
  const int slice = (nvec + cl - 1) / cl;
  for (int nv : nvs) {
    if ((slice + nv - 1) / nv <= max_threads) {
      c.tpr = round_up((slice + nv - 1) / nv, 32);
      c.nv = nv_class((slice + c.tpr - 1) / c.tpr);
      c.block = c.tpr;
      c.cl = cl;
      c.reg = true;
      return c;
    }
  }
  return c;
}

// Tuning knob (benchmark sweeps): FASTLN_CUDA_CLUSTER_FWD / FASTLN_CUDA_CLUSTER_BWD = 1, 2, 4
// or 8 set the CTAs per row for rows of more than 128 vectors where clusters run. Unset: the
// choices below.
int forced_cluster(const char* var) {
  const char* v = std::getenv(var);
  const int cl = v ? std::atoi(v) : 0;
  return cl == 1 || cl == 2 || cl == 4 || cl == 8 ? cl : 0;
}

// Forward: small rows 256 threads a CTA; larger rows 4 vectors a thread, then 8, then 16.
// Where clusters run, rows that would need 16 vectors a thread (one CTA of 512 threads per SM:
// loads and stores of consecutive rows never overlapped; bf16 N = 65536 at 55% of copy
// bandwidth) are split over the fewest CTAs of 8 vectors a thread: fewer, larger CTAs wait
// less on each other (H100, bench/cluster_sweep.py: bf16 65536 over 2 CTAs 77%, over 4 of 4
// vectors 75%; fp32 65536 over 4 86%, over 8 of 4 vectors 79%). Rows longer than a cluster of
// 8 can hold take the fallback. launch_fwd_norm may then trade 4 vectors a thread for 8 where
// the kernels' registers leave more warps resident that way (it knows the kernels).
constexpr int kFwdCtaVectors = 8 * kMaxRowThreads;  // a cluster CTA's slice, at most
Config fwd_config(int nvec, bool clusters) {
  static const int forced = forced_cluster("FASTLN_CUDA_CLUSTER_FWD");
  int cl = 1;
  if (clusters && nvec > 128) {
    cl = forced;
    if (!cl && nvec > 8 * kMaxRowThreads) {
      cl = 2;
      while (cl < kMaxCluster && (nvec + cl - 1) / cl > kFwdCtaVectors) cl *= 2;
    }
    cl = std::max(cl, 1);
  }
  return cl == 1 ? row_config(nvec, 256, {4, 8, 16}) : row_config(nvec, 256, {8}, cl);
}

// Backward: small rows keep column sums in registers; larger rows keep them in shared memory
// [2][the CTA's columns]. Small CTAs for small rows: a CTA's row groups add their column sums
// in group order at the end, so that step grows with the groups a CTA holds. H100, bf16
// backward: (4096, 1024) 55 -> 32 us with 128 threads instead of 512, (131072, 1024) 324 ->
// 305 us, (524288, 256) 375 -> 310 us with 64 (docs/cuda.md). 16-bit rows: 2 vectors (16
// elements) a thread first, for more warps in flight per SM. Where clusters run, rows are split
// over the fewest CTAs whose sums fit kBwdCtaSmem: 32-bit rows whose sums pass it (fp32 16384:
// 90% of copy bandwidth in one CTA, 94% over 2), 16-bit rows that one CTA would hold only once
// a SM (N > 12288), their clusters taking two rows an iteration (bwd_launch_plan; H100, bf16 /
// fp16: 16384 over 2 87.8 / 89.1% against 82.4 / 83.8 in one CTA; 32768 over 4 82.1 / 83.7,
// over 8 77.8 / 79.9; 65536 over 8 80.2 / 82.1; 12288 stays in one CTA: 86.0%, over 2 82.9).
// Without clusters, rows whose sums do not fit take the fallback (it reads x and dy twice: ~40%).
constexpr size_t kBwdCtaSmem = 64 * 1024;
constexpr size_t kBwdMaxSmem = 200 * 1024;
Config bwd_config(int nvec, int vec, size_t acc_size, bool half_width, bool clusters, size_t max_smem) {
  const int nv0 = half_width ? 2 : 4;
  if (nvec <= 128) return row_config(nvec, nvec <= 32 ? 64 : 128, {nv0, 4, 8});
  static const int forced = forced_cluster("FASTLN_CUDA_CLUSTER_BWD");
  const size_t fits = std::min(kBwdMaxSmem, max_smem);
  const auto smem = [&](int cl) { return size_t(2) * ((nvec + cl - 1) / cl) * vec * acc_size; };
  int cl = 1;
  if (clusters) {
    cl = forced;
    if (!cl && (!half_width || nvec > 4 * kBwdTwoCtaThreads)) {
      cl = 1;
      while (cl < kMaxCluster && smem(cl) > kBwdCtaSmem) cl *= 2;
    }
    cl = std::max(cl, 1);
  }
  if (smem(cl) > fits) return Config{};
  if (cl == 1) return row_config(nvec, 128, {nv0, 4, 8});
  // 4 vectors a thread, not 2: a bf16 slice of 1024 vectors in 512 threads of 2 vectors took
  // 98 registers (one CTA per SM).
  return row_config(nvec, 128, {4}, cl, bwd_max_threads(cl, half_width ? 2 : 4));
}

// Clusters for T: where they run, and for the types the cluster kernels are built for.
template <class T>
bool clusters_for(int device) {
  return kClusterType<T> && clusters_supported(device);
}

template <class T>
Config fwd_config_for(int N, bool vec_ok, int device) {
  constexpr int VEC = Pack<T>::n;
  return vec_ok ? fwd_config(N / VEC, clusters_for<T>(device)) : Config{};
}

template <class T>
Config bwd_config_for(int N, bool vec_ok, int device) {
  constexpr int VEC = Pack<T>::n;
  return vec_ok ? bwd_config(N / VEC, VEC, sizeof(acc_t<T>), sizeof(T) == 2, clusters_for<T>(device),
                             max_dyn_smem(device))
                : Config{};
}

int fallback_block(int n) { return n >= 4096 ? 512 : n >= 512 ? 128 : 32; }

// A fallback kernel: one CTA per row (grid-stride over rows), VEC-wide loads when vec_ok.
template <int VEC, class Params>
void launch_fallback_rows(void (*vec_kernel)(Params), void (*scalar_kernel)(Params), Params& p,
                          bool vec_ok, cudaStream_t s) {
  const int N = int(p.N);
  const int block = fallback_block(vec_ok ? N / VEC : N);
  p.tpr = block;
  const unsigned grid = unsigned(std::min<int64_t>(p.M, int64_t(1) << 30));
  (vec_ok ? vec_kernel : scalar_kernel)<<<grid, block, 0, s>>>(p);
}

// FASTLN_CUDA_FWD_STAGED = 0 runs the register kernel on cluster rows instead of the staged
// forward (a tuning knob, as above).
bool fwd_staged() {
  static const bool on = [] {
    const char* e = std::getenv("FASTLN_CUDA_FWD_STAGED");
    return !(e && std::atoi(e) == 0);
  }();
  return on;
}

template <class T>
size_t staged_smem(int N, int cl) {
  return size_t(kRowStages) * ((N / Pack<T>::n + cl - 1) / cl) * 16;
}

// The staged forward's cluster size: the config's (the fewest CTAs of <= 4096 vectors), or twice
// that where its clusters would leave SMs idle. Clusters live inside a GPC: H100 places 30
// clusters of 4 CTAs of 128 KB (one a SM), 120 of its 132 SMs: fp32 N = 65536 81.7% of copy
// bandwidth over 4, 89.8% over 8 (two buffers then; one CTA a SM by its 98 registers). Clusters
// of 2 fill all 132.
template <class T, class P, Norm NORM>
int staged_cluster(int cl, int N, int device) {
  if (cl >= kMaxCluster) return cl;
  const int64_t ctas = pick<2, 4, 8>(cl, [&]<int CL>() -> int64_t {
    const void* k = reinterpret_cast<const void*>(fwd_staged_kernel<T, P, NORM, CL>);
    return resident_clusters(k, kStagedThreads, staged_smem<T>(N, CL), CL, device) * CL;
  });
  return ctas < num_sms(device) ? 2 * cl : cl;
}

// CL = 1: a CTA per row group. Clusters: persistent (launching a cluster per row cost ~20% of
// copy bandwidth at bf16 N = 16384 against one CTA per row).
template <class T, class P, Norm NORM, bool RES>
cudaError_t launch_fwd_reg(const Config& c, const FwdParams<T, P>& p, int device, cudaStream_t s) {
  const int G = c.block / c.tpr;
  const int64_t ngroups = (p.M + G - 1) / G;
  return pick<1, 2, 4, 8, 16>(c.nv, [&]<int NV>() {
    return pick<1, 2, 4, 8>(c.cl, [&]<int CL>() -> cudaError_t {
      if constexpr (CL > 1 && !(kClusterType<T> && fwd_cluster_nv(NV))) {
        return cudaErrorInvalidConfiguration;  // not built, and fwd_config never picks it
      } else {
        if constexpr (CL > 1 && !RES) {
          if (fwd_staged()) {
            const auto kernel = fwd_staged_kernel<T, P, NORM, CL>;
            const size_t smem = staged_smem<T>(p.n, CL);
            const int64_t grid = std::min(p.M, resident_clusters(reinterpret_cast<const void*>(kernel),
                                                                 kStagedThreads, smem, CL, device)) * CL;
            return launch(kernel, grid, kStagedThreads, smem, CL, s, p);
          }
        }
        const auto kernel = fwd_reg_kernel<T, P, NV, NORM, RES, CL>;
        const int64_t grid =
            CL == 1 ? ngroups
                    : std::min(ngroups, resident_clusters(reinterpret_cast<const void*>(kernel),
                                                          c.block, 0, CL, device)) * CL;
        return launch(kernel, grid, c.block, 0, CL, s, p);
      }
    });
  });
}

template <class T, class P, Norm NORM, bool RES>
cudaError_t launch_fwd_norm(FwdParams<T, P> p, bool vec_ok, cudaStream_t s) {
  constexpr int VEC = Pack<T>::n;
  int device = 0;
  cudaGetDevice(&device);
  Config c = fwd_config_for<T>(int(p.N), vec_ok, device);
  if (c.reg && c.cl == 1 && c.nv == 4 && c.tpr == c.block) {
    // A row a CTA at 4 vectors a thread can leave a SM fewer resident warps than 8 vectors a
    // thread in CTAs half the size: bf16 N = 12288 takes 384 threads of 58 registers, 2 CTAs a
    // SM (24 warps), against 192 threads of 64 registers, 5 CTAs (30 warps). Take the one
    // with more.
    const Config c8 = row_config(int(p.N) / VEC, 256, {8});
    const auto warps = [&](const Config& k, const void* kernel) {
      return resident_clusters(kernel, k.block, 0, 1, device) * k.block;
    };
    if (c8.reg && warps(c8, reinterpret_cast<const void*>(fwd_reg_kernel<T, P, 8, NORM, RES, 1>)) >
                      warps(c, reinterpret_cast<const void*>(fwd_reg_kernel<T, P, 4, NORM, RES, 1>)))
      c = c8;
  }
  if constexpr (kClusterType<T> && !RES) {
    static const bool forced = forced_cluster("FASTLN_CUDA_CLUSTER_FWD") != 0;
    if (c.reg && c.cl > 1 && fwd_staged() && !forced) c.cl = staged_cluster<T, P, NORM>(c.cl, p.n, device);
  }
  if (c.reg) {
    p.tpr = c.tpr;
    return launch_fwd_reg<T, P, NORM, RES>(c, p, device, s);
  }
  launch_fallback_rows<VEC>(fwd_fallback_kernel<T, P, VEC, NORM, RES>,
                            fwd_fallback_kernel<T, P, 1, NORM, RES>, p, vec_ok, s);
  return cudaGetLastError();
}

// The backward kernel of a config, its grid (persistent: as many CTAs, or clusters, as are
// resident at once, at most one per row group), its clusters and its dynamic shared memory.
template <class T, class P>
struct BwdLaunch {
  void (*kernel)(BwdParams<T, P>) = nullptr;  // bwd_reg_kernel or bwd_staged_kernel
  int64_t grid = 0;  // CTAs, a multiple of the cluster size; grid / cluster partials
  int block = 0;
  int cluster = 1;   // CTAs a cluster: the row's slices, or CTAs sharing a partial (cl = 1)
  int rows = 1;      // rows a CTA takes per iteration (bwd_reg_kernel's ROWS)
  size_t smem = 0;
};

// CTAs with a row each and a partial each: where the partials (16 N bytes a CTA, written then
// read) would pass 1/8 of the rows' bytes (3 M N sizeof(T)), at most 16 warps a SM. H100, fp32
// (bwd_reg_kernel, 64-thread CTAs, 32 a SM): (4096, 1024) 40.8 -> 37.7 us, (8192, 768) 48.9 ->
// 45.3, (16384, 1024) 96.9 -> 94.2; rows of 2^27 elements, where it does not apply, moved by
// -0.9 (N = 1000) to +2.8% (768) under the same cap (docs/cuda.md).
int64_t cap_partials(int64_t grid, int64_t M, int block, int elem_size, int device) {
  if (grid * 128 <= 3 * M * elem_size) return grid;
  return std::min<int64_t>(grid, std::max(1, 16 * num_sms(device) / std::max(1, block / 32)));
}

// The staged backward (bwd_staged_kernel) on sm_90, for 32-bit rows of at least kBwdStagedFrom
// vectors (past the several-rows-a-CTA configs of row_config): slices of at most
// kBwdStagedThreads * kBwdStagedVectors vectors over the fewest CTAs, or twice as many where
// those clusters would leave SMs idle (as staged_cluster). H100, % of copy bandwidth against
// bwd_reg_kernel: fp32 768 92.4 -> 93.5, 1000 88.2 -> 93.4, 8192 93.8 -> 96.3, 12288 93.5 -> 99.0,
// 65536 90.0 -> 93.1; (4096, 1024) 37.7 -> 32.4 us. 16-bit rows keep bwd_reg_kernel: twice the
// elements a byte, the staged kernel is bound by its instructions there (bf16 16384: 77 against
// 89%; docs/cuda.md). Tuning knob: FASTLN_CUDA_BWD_STAGED = 0 keeps bwd_reg_kernel everywhere,
// = V > 0 takes rows of at least V vectors, 16-bit ones too.
constexpr int kBwdStagedFrom = 129;
template <class T, class P, Norm NORM>
BwdLaunch<T, P> bwd_staged_plan(const Config& c, int N, int64_t M, int device) {
  constexpr int kSlice = kBwdStagedThreads * kBwdStagedVectors;
  static const int forced = forced_cluster("FASTLN_CUDA_CLUSTER_BWD");
  static const int knob = [] {
    const char* e = std::getenv("FASTLN_CUDA_BWD_STAGED");
    return e ? std::atoi(e) : -1;
  }();
  BwdLaunch<T, P> l;
  const int nvec = N / Pack<T>::n;
  const int from = knob >= 0 ? knob : sizeof(T) == 4 ? kBwdStagedFrom : 0;
  if constexpr (!kClusterType<T>) return l;  // not built
  if (!from || nvec < from || !c.reg || !clusters_for<T>(device)) return l;
  int cl = std::max(forced, 1);
  while (cl < kMaxCluster && (nvec + cl - 1) / cl > kSlice) cl *= 2;
  const auto plan = [&](int cl) -> int64_t {
    const int per = (nvec + cl - 1) / cl;
    l.cluster = cl;
    l.block = round_up((per + kBwdStagedVectors - 1) / kBwdStagedVectors, 32);
    l.smem = size_t(kRowStages) * 2 * per * 16;
    l.kernel = pick<1, 2, 4, 8>(cl, [&]<int CL>() {
      if constexpr (kClusterType<T>) return bwd_staged_kernel<T, P, NORM, CL>;
      return decltype(l.kernel)(nullptr);
    });
    return resident_clusters(reinterpret_cast<const void*>(l.kernel), l.block, l.smem, cl, device);
  };
  int64_t clusters = plan(cl);
  if (!forced && cl < kMaxCluster && clusters * cl < num_sms(device)) clusters = plan(2 * cl);
  if (l.block > kBwdStagedThreads || l.smem > max_dyn_smem(device)) return BwdLaunch<T, P>{};
  l.grid = std::min<int64_t>(M, clusters) * l.cluster;
  if (l.cluster == 1) l.grid = cap_partials(l.grid, M, l.block, sizeof(T), device);
  return l;
}

// CTAs a cluster for a one-CTA-per-row backward kernel (cl = 1), whose clusters share one
// partial: the largest of 8, 4, 2 that leaves as many CTAs resident as without clusters
// (clusters live inside a GPC: 1 CTA a SM in clusters of 8 would leave SMs idle). H100, bf16
// backward: 2048-16384 gain 1-2.5% of copy bandwidth (12288: 83.7 -> 86.2%). Not for CTAs of
// several short rows (bwd_launch_plan): the cluster's wait at the end cost them about what the
// smaller reduction saved (524288 x 256: +4.7 us in the kernel; (4096, 1024): +1.9 us).
// FASTLN_CUDA_PARTIAL_CLUSTER = 1, 2, 4 or 8 forces it (a tuning knob, as above).
int partial_cluster(const void* kernel, int block, size_t smem, int device) {
  static const int forced = forced_cluster("FASTLN_CUDA_PARTIAL_CLUSTER");
  if (forced) return forced;
  const int64_t resident = resident_clusters(kernel, block, smem, 1, device);
  for (int pc : {8, 4, 2})
    if (resident_clusters(kernel, block, smem, pc, device) * pc >= resident) return pc;
  return 1;
}

template <class T, class P, Norm NORM>
BwdLaunch<T, P> bwd_launch_plan(const Config& c, int N, int64_t M, int device) {
  using A = acc_t<T>;
  using Kernel = void (*)(BwdParams<T, P>);
  constexpr int VEC = Pack<T>::n;
  if (BwdLaunch<T, P> st = bwd_staged_plan<T, P, NORM>(c, N, M, device); st.kernel) return st;
  BwdLaunch<T, P> l;
  l.block = c.block;
  // Two rows an iteration for a cluster's slices of 16-bit rows. FASTLN_CUDA_BWD_ROWS = 1
  // keeps one (a tuning knob, as above).
  static const bool one_row = [] {
    const char* v = std::getenv("FASTLN_CUDA_BWD_ROWS");
    return v && std::atoi(v) == 1;
  }();
  l.rows = bwd_two_rows<T>(c.nv, c.cl) && !one_row ? 2 : 1;
  l.kernel = pick<1, 2, 4, 8>(c.nv, [&]<int NV>() {
    return pick<1, 2, 4, 8>(c.cl, [&]<int CL>() -> Kernel {
      if constexpr (CL > 1) {
        if constexpr (kClusterType<T> && bwd_cluster_nv(NV)) {
          if constexpr (bwd_two_rows<T>(NV, CL))
            if (l.rows == 2) return bwd_reg_kernel<T, P, NV, NORM, true, CL, 0, 2>;
          return bwd_reg_kernel<T, P, NV, NORM, true, CL>;
        }
        return nullptr;  // not built, and bwd_config never picks it
      } else if constexpr (NV == 8) {
        return bwd_reg_kernel<T, P, 8, NORM, true, 1>;  // 8 vectors a thread: rows fill a CTA
      } else {
        if constexpr (NV == 4 && sizeof(T) == 2)
          if (c.tpr > 32 && c.tpr <= kBwdTwoCtaThreads) return bwd_reg_kernel<T, P, 4, NORM, true, 1, 2>;
        if (c.tpr > 32) return bwd_reg_kernel<T, P, NV, NORM, true, 1>;
        return bwd_reg_kernel<T, P, NV, NORM, false, 1>;
      }
    });
  });
  if (!l.kernel) return l;
  l.smem = size_t(2) * ((N / VEC + c.cl - 1) / c.cl) * VEC * sizeof(A);
  const int G = c.block / c.tpr;
  const int64_t ngroups = (M + G * l.rows - 1) / (G * l.rows);  // row groups, or pairs of them
  const void* kernel = reinterpret_cast<const void*>(l.kernel);
  l.cluster = c.cl;
  if (c.cl == 1 && c.tpr == c.block && clusters_for<T>(device))
    l.cluster = partial_cluster(kernel, c.block, l.smem, device);
  // Clusters wanted: one per iteration's rows for row slices, else a CTA per iteration's rows.
  const int64_t wanted = c.cl > 1 ? ngroups : (ngroups + l.cluster - 1) / l.cluster;
  l.grid = std::min<int64_t>(wanted, resident_clusters(kernel, c.block, l.smem, l.cluster, device)) * l.cluster;
  // A row a CTA and a partial each (no partial clusters).
  if (l.cluster == 1 && c.cl == 1 && c.tpr == c.block) l.grid = cap_partials(l.grid, M, c.block, sizeof(T), device);
  return l;
}

int64_t fallback_num_partials(int N, int64_t M, int device) {
  const int64_t tiles = (N + 255) / 256;
  return std::max<int64_t>(1, std::min<int64_t>(M, std::max<int64_t>(1, 8 * num_sms(device) / tiles)));
}

template <class T, class P, Norm NORM>
int64_t bwd_num_partials_norm(const BwdParams<T, P>& p, bool vec_ok, int device) {
  const Config c = bwd_config_for<T>(int(p.N), vec_ok, device);
  if (c.reg) {
    const BwdLaunch<T, P> l = bwd_launch_plan<T, P, NORM>(c, int(p.N), p.M, device);
    return l.grid / l.cluster;
  }
  return fallback_num_partials(int(p.N), p.M, device);
}

template <class T, class P, Norm NORM>
cudaError_t launch_bwd_norm(BwdParams<T, P> p, bool vec_ok, int64_t nparts, P* dgamma, P* dbeta,
                            cudaStream_t s) {
  using A = acc_t<T>;
  constexpr int VEC = Pack<T>::n;
  const int N = int(p.N);
  int device = 0;
  cudaGetDevice(&device);
  const Config c = bwd_config_for<T>(N, vec_ok, device);
  if (c.reg) {
    p.tpr = c.tpr;
    const BwdLaunch<T, P> l = bwd_launch_plan<T, P, NORM>(c, N, p.M, device);
    if (!l.kernel || (p.partial && l.grid / l.cluster != nparts))
      return cudaErrorInvalidValue;  // plan and launch disagree
    if (cudaError_t e = launch(l.kernel, l.grid, l.block, l.smem, l.cluster, s, p); e != cudaSuccess) return e;
  } else {
    if (p.dX) {
      launch_fallback_rows<VEC>(bwd_fallback_dx_kernel<T, P, VEC, NORM>,
                                bwd_fallback_dx_kernel<T, P, 1, NORM>, p, vec_ok, s);
      if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
    }
    if (p.partial) {
      dim3 grid(unsigned((N + 255) / 256), unsigned(nparts));
      bwd_fallback_cols_kernel<T, P, NORM><<<grid, 256, 0, s>>>(p);
    }
  }
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  if (p.partial) {
    // A programmatic dependent of the kernel before (sm_90): launched while that one's last CTAs
    // run, not after its end (H100: (4096, 1024) backward 32.0 -> 31.0 us, fp32 and fp16; 16-bit
    // 32768 / 65536 +0.1-0.4 points). FASTLN_CUDA_PDL = 0 launches it after (a knob, as above:
    // bench/cuda_kernel_times.py, whose profile would otherwise count the wait as its time).
    static const bool pdl = [] {
      const char* e = std::getenv("FASTLN_CUDA_PDL");
      return !(e && std::atoi(e) == 0);
    }();
    cudaLaunchAttribute attr{};
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(unsigned((N + 31) / 32));
    cfg.stream = s;
    cfg.attrs = &attr;
    cfg.numAttrs = pdl && clusters_supported(device) ? 1 : 0;
    const A* partial = p.partial;
    if (nparts >= kManyPartials) {
      cfg.blockDim = dim3(32, 32);
      return cudaLaunchKernelEx(&cfg, reduce_partials_kernel<A, P, 32, 1>, partial, nparts, N, dgamma, dbeta);
    }
    cfg.blockDim = dim3(32, 8);
    // 4 float columns a thread (16-byte loads) where that still leaves a CTA a SM (N >= 16896 on
    // an H100): bf16 65536 (30 partials) 7.1 -> 5.1 us, fp16 32768 7.1 -> 6.2, fp32 65536 4.5 -> 3.9.
    if constexpr (sizeof(A) == 4) {
      if (N % 4 == 0 && N / 128 >= num_sms(device)) {
        cfg.gridDim = dim3(unsigned((N + 127) / 128));
        return cudaLaunchKernelEx(&cfg, reduce_partials_kernel<A, P, 8, 4>, partial, nparts, N, dgamma, dbeta);
      }
    }
    return cudaLaunchKernelEx(&cfg, reduce_partials_kernel<A, P, 8, 1>, partial, nparts, N, dgamma, dbeta);
  }
  return cudaGetLastError();
}

}  // namespace

// The one point where the runtime Norm (and, forward, the residual) picks the kernels'.
template <class T, class P>
cudaError_t launch_fwd(FwdParams<T, P> p, bool vec_ok, cudaStream_t s) {
  p.n = int(p.N);
  if (p.R)
    return p.norm == Norm::kRms ? launch_fwd_norm<T, P, Norm::kRms, true>(p, vec_ok, s)
                                : launch_fwd_norm<T, P, Norm::kLayer, true>(p, vec_ok, s);
  return p.norm == Norm::kRms ? launch_fwd_norm<T, P, Norm::kRms, false>(p, vec_ok, s)
                              : launch_fwd_norm<T, P, Norm::kLayer, false>(p, vec_ok, s);
}

template <class T, class P>
int64_t bwd_num_partials(const BwdParams<T, P>& p, bool vec_ok, int device) {
  return p.norm == Norm::kRms ? bwd_num_partials_norm<T, P, Norm::kRms>(p, vec_ok, device)
                              : bwd_num_partials_norm<T, P, Norm::kLayer>(p, vec_ok, device);
}

template <class T, class P>
cudaError_t launch_bwd(BwdParams<T, P> p, bool vec_ok, int64_t nparts, P* dgamma, P* dbeta,
                       cudaStream_t s) {
  p.n = int(p.N);
  return p.norm == Norm::kRms
             ? launch_bwd_norm<T, P, Norm::kRms>(p, vec_ok, nparts, dgamma, dbeta, s)
             : launch_bwd_norm<T, P, Norm::kLayer>(p, vec_ok, nparts, dgamma, dbeta, s);
}

FASTLN_FOR_EACH_TYPE_PAIR(FASTLN_CUDA_INSTANTIATE)

}  // namespace cuda_impl
}  // namespace fastln

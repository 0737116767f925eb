// Forward kernels: the register path (fwd_reg_kernel), rows staged in shared memory over a
// cluster (fwd_staged_kernel, sm_90) and the fallback (fwd_fallback_kernel). Their launch
// settings come from launch_plan.cpp; launch.cu instantiates them.
#pragma once

#include "blocks/cluster.cuh"
#include "blocks/elements.cuh"
#include "blocks/reduce.cuh"
#include "launch_plan.h"

namespace fastln {
namespace cuda_impl {

// Whether a kernel reads a bias: LayerNorm's. RMSNorm has none (launch.cu refuses one), and code
// for a bias that is always null held registers anyway (RMSNorm bf16 with float parameters, 4
// vectors a thread: 50 against 40; PlusOne: 55 against 40) and made cluster kernels spill (bf16
// with float parameters: 72 / 84 bytes against none).
template <Norm NORM>
inline constexpr bool kBias = NORM == Norm::kLayer;
// The bias as it is stored: with PlusOne<W> parameters the weight is read as 1 + w, the bias as
// the plain W it is.
template <class T, class P>
__device__ __forceinline__ const plain_param_t<P>* bias_of(const FwdParams<T, P>& p) {
  return reinterpret_cast<const plain_param_t<P>*>(p.beta);
}

// ---------------------------------------------------------------- forward, register path

// RES: the fused residual add (p.R, p.S set). A template parameter, so that the plain norms
// keep the registers (and the occupancy) of a kernel without it. CL = 1: one row group per CTA
// (grid = row groups). CL > 1: a persistent grid of clusters, cluster b / CL taking rows b / CL,
// + gridDim.x / CL, ..., each CTA one slice of the row (blockDim.x == tpr).

template <class T, class P, int NV, Norm NORM, bool RES, int CL, bool HOIST = false>
__global__ void __launch_bounds__(512, fwd_min_ctas(CL)) fwd_reg_kernel(FwdParams<T, P> p) {
  static_assert(!HOIST || (CL == 1 && NV <= 4), "HOIST: one-CTA kernels of <= 4 vectors a thread");
  using A = acc_t<T>;
  constexpr int VEC = Pack<T>::n;
  __shared__ A red[32 * 2];
  __shared__ ClusterSum<CL, 1, A> csum;
  csum.start();
  const int tpr = p.tpr;
  const int G = blockDim.x / tpr;
  const int grp = threadIdx.x / tpr, t = threadIdx.x % tpr;
  const int N = p.n;
  const Slice sl = row_slice<CL>(N / VEC, 1);
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
    if constexpr (HOIST) {
      // The parameters of all NV vectors loaded, then the outputs stored. Below, a vector's gamma
      // and beta are loaded beside its store, and as a store may alias them (no __restrict__)
      // each load stays after the store before it: NV L2 round trips in a row at the CTA's end
      // (sm_90a SASS), which launches of one or two waves wait for. Costs registers (fp32: 40 ->
      // 64, fewer CTAs a SM), so the plan takes it for 16-bit rows only (launch_plan.cpp,
      // fwd_plan); the else branch keeps the other kernels' code and registers as they were.
      PPack<P, VEC> g[NV];
      PPack<plain_param_t<P>, VEC> b[NV];
#pragma unroll
      for (int i = 0; i < NV; ++i) {
        const int v = i * tpr + t;
        if (valid && v < nvec) {
          if (p.gamma) g[i] = *reinterpret_cast<const PPack<P, VEC>*>(p.gamma + c0 + v * VEC);
          if constexpr (kBias<NORM>)
            if (p.beta) b[i] = *reinterpret_cast<const PPack<plain_param_t<P>, VEC>*>(bias_of(p) + c0 + v * VEC);
        }
      }
#pragma unroll
      for (int i = 0; i < NV; ++i) {
        const int v = i * tpr + t;
        if (valid && v < nvec) {
          Pack<T> o;
#pragma unroll
          for (int e = 0; e < VEC; ++e) {
            const A scale = p.gamma ? rstd * A(dtof_row(g[i].v[e])) : rstd;
            A out = (A(dtof_row(r[i].v[e])) - mean) * scale;
            if constexpr (kBias<NORM>)
              if (p.beta) out += A(dtof_row(b[i].v[e]));
            o.v[e] = dfrom<T>(out);
          }
          st_pack<(CL > 1)>(y + int64_t(v) * VEC, o);
        }
      }
    } else {
#pragma unroll
      for (int i = 0; i < NV; ++i) {
        const int v = i * tpr + t;
        if (valid && v < nvec) {
          PPack<P, VEC> g;
          PPack<plain_param_t<P>, VEC> b;
          if (p.gamma) g = *reinterpret_cast<const PPack<P, VEC>*>(p.gamma + c0 + v * VEC);
          if constexpr (kBias<NORM>)
            if (p.beta) b = *reinterpret_cast<const PPack<plain_param_t<P>, VEC>*>(bias_of(p) + c0 + v * VEC);
          Pack<T> o;
#pragma unroll
          for (int e = 0; e < VEC; ++e) {
            const A scale = p.gamma ? rstd * A(dtof_row(g.v[e])) : rstd;
            A out = (A(dtof_row(r[i].v[e])) - mean) * scale;
            if constexpr (kBias<NORM>)
              if (p.beta) out += A(dtof_row(b.v[e]));
            o.v[e] = dfrom<T>(out);
          }
          st_pack<(CL > 1)>(y + int64_t(v) * VEC, o);
        }
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
// ONE_ROW (an experiment, PlanOverrides::fwd_persist = false): a cluster a row, launched M * CL
// CTAs (launch_plan.cpp), one buffer; the parameters read at the stores, not held in registers
// for rows to come, so that two CTAs or more fit a SM (fp32 LayerNorm: 38 registers against
// 106). The same slices and order of addition: the same bits.
template <class T, class P, Norm NORM, int CL, bool ONE_ROW = false>
__global__ void __launch_bounds__(kStagedThreads, ONE_ROW ? 2 : 1) fwd_staged_kernel(FwdParams<T, P> p) {
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
  const Slice sl = row_slice<CL>(N / VEC, 1);
  const int nvec = sl.n, c0 = sl.v0 * VEC;
  const int per = slice_vectors(N / VEC, CL);  // a buffer's vectors
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
  if constexpr (!ONE_ROW) load(1);
  csum.wait_started();
  // gamma and beta of this thread's vectors, loaded once: read for every row, they did not stay
  // in L1 beside the buffers (bf16, 2 x 64 KB a slice: 3.6% L1 hits, ncu). 16-byte parameter
  // vectors only (float32 parameters of 16-bit rows would take 128 registers).
  constexpr bool kParamRegs = sizeof(PPack<P, VEC>) == 16 && !ONE_ROW;
  using B = plain_param_t<P>;  // the bias's type (bias_of)
  PPack<P, VEC> g[kParamRegs ? kStagedVectors : 1];
  PPack<B, VEC> b[kParamRegs ? kStagedVectors : 1];
  if constexpr (kParamRegs) {
#pragma unroll
    for (int i = 0; i < kStagedVectors; ++i) {
      const int v = t + i * kStagedThreads;
      if (v < nvec && p.gamma) g[i] = *reinterpret_cast<const PPack<P, VEC>*>(p.gamma + c0 + v * VEC);
      if constexpr (kBias<NORM>)
        if (v < nvec && p.beta) b[i] = *reinterpret_cast<const PPack<B, VEC>*>(bias_of(p) + c0 + v * VEC);
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
          if constexpr (kBias<NORM>)
            if (p.beta) b[0] = *reinterpret_cast<const PPack<B, VEC>*>(bias_of(p) + c0 + v * VEC);
        }
        Pack<T> o;
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          const A scale = p.gamma ? rstd * A(dtof_pinned(g[kParamRegs ? i : 0].v[e])) : rstd;
          A out = (A(dtof(r.v[e])) - mean) * scale;
          if constexpr (kBias<NORM>)
            if (p.beta) out += A(dtof_pinned(b[kParamRegs ? i : 0].v[e]));
          o.v[e] = dfrom<T>(out);
        }
        st_pack<true, T>(y + int64_t(v) * VEC, o);
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
    if constexpr (!ONE_ROW) load(k + 2);
    const bool next = !ONE_ROW && row + stride < p.M;
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
        if constexpr (kBias<NORM>)
          if (p.beta) out += ptoa<A>(bias_of(p)[col]);
        o.v[e] = dfrom<T>(out);
      }
      y[j] = o;
    }
  }
}

}  // namespace cuda_impl
}  // namespace fastln

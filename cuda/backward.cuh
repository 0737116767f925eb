// Backward kernels: the register path (bwd_reg_kernel), rows staged in shared memory
// (bwd_staged_kernel, sm_90), the fallback (bwd_fallback_dx_kernel, bwd_fallback_cols_kernel),
// and the sum of the partials into dgamma / dbeta (reduce_partials_kernel). Their launch
// settings come from launch_plan.cpp; launch.cu instantiates them.
#pragma once

#include "blocks/cluster.cuh"
#include "blocks/elements.cuh"
#include "blocks/reduce.cuh"
#include "launch_plan.h"

namespace fastln {
namespace cuda_impl {

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
template <class T, class P, int NV, Norm NORM, bool ACC_SMEM, int CL, int MINB = 0, int ROWS = 1, bool LINES = false>
__global__ void __launch_bounds__(bwd_max_threads(CL, sizeof(T), MINB), bwd_min_ctas(CL, sizeof(T), MINB, ROWS))
    bwd_reg_kernel(BwdParams<T, P> p) {
  static_assert(CL == 1 || ACC_SMEM, "a cluster's CTA holds one row slice");
  static_assert(ROWS == 1 || bwd_two_rows(sizeof(T), NV, CL), "ROWS = 2 is built for these only");
  static_assert(!LINES || ROWS == 2, "LINES is built for two rows an iteration");
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
  const Slice sl = row_slice<CL>(N / VEC, p.slice_align);
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

  // LINES (PlanOverrides::bwd_lines; ROWS = 2, cluster slices, so G = 1): an iteration's slots
  // start sh vectors before the slice, sh the slice's start in x's 128-byte line for the
  // iteration's first row, so that each warp's 512-byte loads span 4 lines, not 5 (bf16 N =
  // 20000: 330 -> 317 us, session 30). The rows are paired by parity (4j and 4j + 2, then 4j + 1
  // and 4j + 3), which share that start where two rows span whole lines (20000: rows of 312.5
  // lines). The slots move from iteration to iteration: group_sum's barrier orders one
  // iteration's column sums before the next's.
  const bool lines = LINES && p.dX && tpr > 32;  // group_sum's barriers below (the plan takes LINES only so)
  const int64_t iters = lines ? 2 * ((p.M + 3) / 4) : (p.M + G * ROWS - 1) / (G * ROWS);
  // v < nvec, and v >= 0 where the slots are shifted
  const auto in_slice = [&](int v) { return LINES ? unsigned(v) < unsigned(nvec) : v < nvec; };
  int uses = 0;  // of csum
  for (int64_t it = blockIdx.x / CL; it < iters; it += gridDim.x / CL) {
    // Row r of this iteration: row group it * ROWS + r (ROWS = 2, odd M: the last one's second
    // row is past the end; LINES: the pairs above).
    int64_t row[ROWS];
    bool valid[ROWS];
    // fp16 LINES kernels hold the vectors as 32-bit words, unpacked where used: as halves, nvcc
    // merged each predicated load into its register half by half (PRMT; 295 of them against 42,
    // 3600 instructions against 3184) and its LINES kernel ran 3-7 % slower than the plain one
    // (session 30); as words, 50 PRMT and 3360 instructions, and 20000's backward 331 -> 326 us
    // (session 31). The other kernels are unchanged.
    constexpr bool kWords = LINES && std::is_same_v<T, fp16>;
    using Held = std::conditional_t<kWords, Pack<uint32_t>, Pack<T>>;
    const auto unpack = [](const Held& h) -> decltype(auto) {
      if constexpr (kWords) {
        Pack<T> p;
        memcpy(&p, &h, sizeof(p));
        return p;
      } else {
        return h;
      }
    };
    Held rx[ROWS][NV], rd[ROWS][NV];
    int sh = 0;  // vectors the slots start before the slice (LINES)
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      row[r] = lines ? (it & ~int64_t(1)) * 2 + (it & 1) + 2 * r : (it * ROWS + r) * G + grp;
      valid[r] = row[r] < p.M;
      const T* x = p.X + (valid[r] ? row[r] : 0) * p.ldx + c0;
      const T* dy = p.dY + (valid[r] ? row[r] : 0) * p.lddy + c0;
      if (lines && r == 0) sh = int(reinterpret_cast<uintptr_t>(x) >> 4) & 7;
#pragma unroll
      for (int i = 0; i < NV; ++i) {
        const int v = i * tpr + t - sh;
        if (valid[r] && in_slice(v)) {
          rx[r][i] = *reinterpret_cast<const Held*>(x + int64_t(v) * VEC);
          rd[r][i] = *reinterpret_cast<const Held*>(dy + int64_t(v) * VEC);
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
      const int v = i * tpr + t - sh;
      if (valid[0] && in_slice(v)) {  // valid[0]: some row of the iteration is
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
              xh[r][k] = bwd_xhat(A(elem(unpack(rx[r][i]), e)), mean[r], rstd[r]);
              d[r][k] = A(elem(unpack(rd[r][i]), e));
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
        const int v = i * tpr + t - sh;
        if (valid[0] && in_slice(v)) {
          PPack<P, VEC> g;
          if (p.gamma) g = *reinterpret_cast<const PPack<P, VEC>*>(p.gamma + c0 + v * VEC);
#pragma unroll
          for (int r = 0; r < ROWS; ++r) {
            if (!valid[r]) continue;
            Pack<T> o;
#pragma unroll
            for (int e = 0; e < VEC; ++e) {
              const A xh = bwd_xhat(A(elem(unpack(rx[r][i]), e)), mean[r], rstd[r]);
              const A d = A(elem(unpack(rd[r][i]), e));
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
// (StagedRows). Each thread takes NVT vectors of the slice (t, t + blockDim.x, ...: NVT =
// kBwdStagedVectors, 4 for 16-bit rows and parameters: bwd_staged_launch) and holds their gamma and their dgamma / dbeta column sums in registers for all
// its rows: shared memory holds only the staged rows, and the column sums are written once, at
// the end, into the cluster's partial (the CTA's slice of it). The row sums are pipelined: the
// CTA adds row k + 1's and sends them to the cluster before it waits for row k's and writes row
// k's dx, so the cluster's exchange does not leave the SM idle (CTAs of up to 1024 threads, one
// a SM; without that pipelining, fp32 12288 over 2 CTAs: 84.8% of copy bandwidth, 99.0 with it).

template <class T, class P, Norm NORM, int CL, int NVT = kBwdStagedVectors>
__global__ void __launch_bounds__(bwd_staged_threads(NVT), 1) bwd_staged_kernel(BwdParams<T, P> p) {
#if FASTLN_CLUSTERS
  allow_dependent_launch();  // as bwd_reg_kernel
  using A = acc_t<T>;
  constexpr int VEC = Pack<T>::n;
  extern __shared__ __align__(16) unsigned char dsmem_raw[];
  __shared__ uint64_t full[kRowStages];
  __shared__ A red[32 * 2];
  __shared__ ClusterSum<CL, 2, A, 4> csum;
  const int t = threadIdx.x, nt = blockDim.x, N = p.n;
  const Slice sl = row_slice<CL>(N / VEC, p.slice_align);
  const int nvec = sl.n, c0 = sl.v0 * VEC;
  const int per = slice_vectors(N / VEC, CL, p.slice_align);
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

}  // namespace cuda_impl
}  // namespace fastln

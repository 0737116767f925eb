// CUDA launchers of the fastln LayerNorm ops: each launch computes its plan (launch_plan.cpp,
// host-only) and executes it; this header maps a plan's KernelId to a kernel of forward.cuh /
// backward.cuh and launches it. The kernels compile in parts, one nvcc each (parts.cu.in: one
// direction, one input type), in parallel; launch.cu answers the runtime's questions (device
// attributes, occupancy: one cache for all parts) and compiles the kernels every part shares.
// The ops and their registration for the CUDA key are ops_cuda.cpp.
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
//  * The weight offset (zero-centred gamma) is not in the norm kernels (in them it cost
//    registers: docs/journal.md): params.cuh forms offset + gamma in the accumulation type first,
//    and the kernels of float parameters run with it. An offset of 1 (Gemma) is a parameter
//    type instead, PlusOne<T> (layer_norm_cuda.h), read as 1 + w: kernels of their own, the
//    others' code unchanged.
//
// Layout: blocks/ (element conversions and vectors, group sums, clusters and their PTX),
// forward.cuh and backward.cuh (the kernels), launch_plan.h / .cpp (which kernel, grid, block,
// clusters and shared memory: a value, tested without a GPU), this header (executes plans),
// parts.cu.in (the kernels, a part a file), launch.cu (the runtime's answers).
//
// These files are torch-free (plain pointers, a stream): the torch glue is ops_cuda.cpp, built by
// the host compiler, so no inline function of torch's headers is compiled by two compilers.
#pragma once

#include <cstdint>
#include <type_traits>

#include "backward.cuh"
#include "forward.cuh"
#include "launch_plan.h"
#include "layer_norm_cuda.h"

namespace fastln {
namespace cuda_impl {

// ---------------------------------------------------------------- answered by launch.cu
DeviceProps device_props(int device);
// Clusters of cl CTAs of `kernel` (cl = 1: CTAs) resident on the device at once: the
// persistent grid (occupancy_resident). Cached: the queries cost microseconds of host time,
// which small problems would see. Sets the kernel's dynamic shared-memory limit (the device's)
// on its first query, before any launch of it with more than 48 KB: a plan asks about every
// kernel it launches with dynamic shared memory. Both queries count the launch's shared memory,
// not the kernel's limit (checked on the device).
int64_t resident_clusters(const void* kernel, int block, size_t smem, int cl, int device);
// The partials' sum into dgamma / dbeta (reduce_partials_kernel, l.kernel's RY and W): the
// backward of every part shares these kernels, so one file compiles them.
template <class A, class Q>
cudaError_t launch_reduce(const Launch& l, cudaStream_t s, const A* partial, int64_t nparts, int n, Q* dgamma,
                          Q* dbeta);

template <class T>
constexpr bool kClusterType = cluster_type(sizeof(T));

inline cudaLaunchAttribute cluster_attr(int cl) {
  cudaLaunchAttribute a{};
  a.id = cudaLaunchAttributeClusterDimension;
  a.val.clusterDim.x = unsigned(cl);
  a.val.clusterDim.y = a.val.clusterDim.z = 1;
  return a;
}

// f.template operator()<V>() for the V among Vs equal to v (the last if none is): a runtime
// choice to a template parameter.
template <int V, int... Vs, class F>
auto pick(int v, F&& f) {
  if constexpr (sizeof...(Vs) > 0)
    if (v != V) return pick<Vs...>(v, f);
  return f.template operator()<V>();
}

// ---------------------------------------------------------------- a plan's kernels
// The kernel of a KernelId, among the instantiations built (null: none, which no plan picks).
template <class T, class P, Norm NORM, bool RES>
auto fwd_kernel(const KernelId& k) {
  using Kernel = void (*)(FwdParams<T, P>);
  constexpr int VEC = Pack<T>::n;
  switch (k.kind) {
    case KernelKind::kFwdReg:
      return pick<1, 2, 4, 8, 16>(k.nv, [&]<int NV>() {
        return pick<1, 2, 4, 8>(k.cl, [&]<int CL>() -> Kernel {
          if constexpr (CL > 1 && !(kClusterType<T> && fwd_cluster_nv(NV))) {
            return nullptr;  // not built
          } else {
            if constexpr (CL == 1 && NV <= 4)
              if (k.hoist) return fwd_reg_kernel<T, P, NV, NORM, RES, 1, true>;
            return fwd_reg_kernel<T, P, NV, NORM, RES, CL>;
          }
        });
      });
    case KernelKind::kFwdStaged:
      if constexpr (kClusterType<T> && !RES)
        return pick<2, 4, 8>(k.cl, [&]<int CL>() -> Kernel {
          return k.one_row ? Kernel(fwd_staged_kernel<T, P, NORM, CL, true>) : Kernel(fwd_staged_kernel<T, P, NORM, CL>);
        });
      return Kernel(nullptr);
    case KernelKind::kFwdFallback:
      return k.nv == 1 ? Kernel(fwd_fallback_kernel<T, P, 1, NORM, RES>) : Kernel(fwd_fallback_kernel<T, P, VEC, NORM, RES>);
    default:
      return Kernel(nullptr);
  }
}

template <class T, class P, Norm NORM>
auto bwd_kernel(const KernelId& k) {
  using Kernel = void (*)(BwdParams<T, P>);
  constexpr int VEC = Pack<T>::n;
  switch (k.kind) {
    case KernelKind::kBwdReg:
      return pick<1, 2, 4, 8>(k.nv, [&]<int NV>() {
        return pick<1, 2, 4, 8>(k.cl, [&]<int CL>() -> Kernel {
          if constexpr (CL > 1) {
            if constexpr (kClusterType<T> && bwd_cluster_nv(NV)) {
              if constexpr (bwd_two_rows(sizeof(T), NV, CL))
                if (k.rows == 2) {
                  if constexpr (sizeof(plain_param_t<P>) == 2)  // bwd_lines (launch_plan.cpp)
                    if (k.lines) return bwd_reg_kernel<T, P, NV, NORM, true, CL, 0, 2, true>;
                  return bwd_reg_kernel<T, P, NV, NORM, true, CL, 0, 2>;
                }
              return bwd_reg_kernel<T, P, NV, NORM, true, CL>;
            }
            return nullptr;  // not built
          } else if constexpr (NV == 8) {
            return bwd_reg_kernel<T, P, 8, NORM, true, 1>;  // 8 vectors a thread: rows fill a CTA
          } else {
            if constexpr (NV == 4 && sizeof(T) == 2)
              if (k.minb == 2) return bwd_reg_kernel<T, P, 4, NORM, true, 1, 2>;
            if (k.acc_smem) return bwd_reg_kernel<T, P, NV, NORM, true, 1>;
            return bwd_reg_kernel<T, P, NV, NORM, false, 1>;
          }
        });
      });
    case KernelKind::kBwdStaged:
      if constexpr (kClusterType<T>)
        return pick<1, 2, 4, 8>(k.cl, [&]<int CL>() -> Kernel {
          if constexpr (sizeof(T) == 2 && sizeof(plain_param_t<P>) == 2)
            if (k.nv == 4) return bwd_staged_kernel<T, P, NORM, CL, 4>;  // bwd_staged_nv = 4
          return bwd_staged_kernel<T, P, NORM, CL>;
        });
      return Kernel(nullptr);
    case KernelKind::kBwdFallbackDx:
      return k.nv == 1 ? Kernel(bwd_fallback_dx_kernel<T, P, 1, NORM>) : Kernel(bwd_fallback_dx_kernel<T, P, VEC, NORM>);
    case KernelKind::kBwdFallbackCols:
      return Kernel(bwd_fallback_cols_kernel<T, P, NORM>);
    default:
      return Kernel(nullptr);
  }
}

// The plans' occupancy questions, answered for the kernels of one problem's types and norm.
// PlusOne<W> kernels are planned by their plain twin's answers (W parameters): the same grids, so
// the same order of additions and bits as the call with the weight 1 + w. The kernel launched is
// asked first all the same: that query sets its shared-memory limit (resident_clusters). Where a
// PlusOne kernel holds more registers than its twin (RMSNorm's by at most 2; LayerNorm's one-CTA
// forward kernels, which read the bias beside 1 + w, by up to 16, as many as the float-parameter
// kernels the offset ran on before: docs/journal's register tables), a grid may have a CTA more a
// SM than run at once: slower, not wrong (no kernel waits on another CTA of its grid; PDL's
// dependents start once every CTA has started).
template <class T, class P, Norm NORM, bool RES>
struct FwdOccupancy final : Occupancy {
  int device;
  explicit FwdOccupancy(int d) : device(d) {}
  int64_t resident(const KernelId& k, int block, size_t smem, int cl) const override {
    const void* own = reinterpret_cast<const void*>(fwd_kernel<T, P, NORM, RES>(k));
    const void* twin = reinterpret_cast<const void*>(fwd_kernel<T, plain_param_t<P>, NORM, RES>(k));
    const int64_t n = resident_clusters(own, block, smem, cl, device);
    return own == twin ? n : resident_clusters(twin, block, smem, cl, device);
  }
};
template <class T, class P, Norm NORM>
struct BwdOccupancy final : Occupancy {
  int device;
  explicit BwdOccupancy(int d) : device(d) {}
  int64_t resident(const KernelId& k, int block, size_t smem, int cl) const override {
    const void* own = reinterpret_cast<const void*>(bwd_kernel<T, P, NORM>(k));
    const void* twin = reinterpret_cast<const void*>(bwd_kernel<T, plain_param_t<P>, NORM>(k));
    const int64_t n = resident_clusters(own, block, smem, cl, device);
    return own == twin ? n : resident_clusters(twin, block, smem, cl, device);
  }
};

template <class T, class P>
Problem problem(int n, int64_t m, bool residual, bool vec_ok, bool dx = true) {
  Problem pb;
  pb.n = n;
  pb.m = m;
  pb.elem_size = int(sizeof(T));
  pb.plus_one = !std::is_same_v<P, plain_param_t<P>>;
  pb.param_size = int(sizeof(plain_param_t<P>));
  pb.residual = residual;
  pb.vec_ok = vec_ok;
  pb.dx = dx;
  return pb;
}

// ---------------------------------------------------------------- executing a plan
// Launches `kernel` as l says: grid CTAs (a multiple of the cluster size), in clusters along x
// where l.cluster > 1, and as a programmatic dependent of the kernel before where l.pdl.
template <class... Args>
cudaError_t launch(void (*kernel)(Args...), const Launch& l, cudaStream_t s, const Args&... args) {
  if (l.grid >= (int64_t(1) << 31)) return cudaErrorInvalidConfiguration;
  const dim3 grid(unsigned(l.grid), unsigned(l.grid_y)), block(unsigned(l.block), unsigned(l.block_y));
  if (l.cluster == 1 && !l.pdl) {
    kernel<<<grid, block, l.smem, s>>>(args...);
    return cudaGetLastError();
  }
  cudaLaunchAttribute attrs[2];
  unsigned n = 0;
  if (l.cluster > 1) attrs[n++] = cluster_attr(l.cluster);
  if (l.pdl) {
    attrs[n] = cudaLaunchAttribute{};
    attrs[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attrs[n++].val.programmaticStreamSerializationAllowed = 1;
  }
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = l.smem;
  cfg.stream = s;
  cfg.attrs = attrs;
  cfg.numAttrs = n;
  return cudaLaunchKernelEx(&cfg, kernel, args...);
}

template <class T, class P, Norm NORM, bool RES>
cudaError_t launch_fwd_norm(FwdParams<T, P> p, bool vec_ok, cudaStream_t s) {
  int device = 0;
  cudaGetDevice(&device);
  const FwdPlan plan =
      fwd_plan(problem<T, P>(p.n, p.M, RES, vec_ok), device_props(device), FwdOccupancy<T, P, NORM, RES>(device), plan_overrides());
  const auto kernel = fwd_kernel<T, P, NORM, RES>(plan.main.kernel);
  if (!kernel) return cudaErrorInvalidConfiguration;  // not built, and no plan picks it
  p.tpr = plan.tpr;
  return launch(kernel, plan.main, s, p);
}

template <class T, class P, Norm NORM>
int64_t bwd_num_partials_norm(const BwdParams<T, P>& p, bool vec_ok, int device) {
  return bwd_plan(problem<T, P>(p.n, p.M, false, vec_ok, p.dX != nullptr), device_props(device), BwdOccupancy<T, P, NORM>(device), plan_overrides())
      .nparts;
}

template <class T, class P, class Q, Norm NORM>
cudaError_t launch_bwd_norm(BwdParams<T, P> p, bool vec_ok, int64_t nparts, Q* dgamma, Q* dbeta, cudaStream_t s) {
  using A = acc_t<T>;
  int device = 0;
  cudaGetDevice(&device);
  const BwdPlan plan =
      bwd_plan(problem<T, P>(p.n, p.M, false, vec_ok, p.dX != nullptr), device_props(device), BwdOccupancy<T, P, NORM>(device), plan_overrides());
  p.tpr = plan.tpr;
  p.slice_align = plan.slice_align;
  const auto kernel = bwd_kernel<T, P, NORM>(plan.main.kernel);
  if (plan.main.kernel.kind != KernelKind::kBwdFallbackDx) {
    if (!kernel || (p.partial && plan.nparts != nparts)) return cudaErrorInvalidValue;  // plan and launch disagree
    if (cudaError_t e = launch(kernel, plan.main, s, p); e != cudaSuccess) return e;
  } else {
    if (p.dX)
      if (cudaError_t e = launch(kernel, plan.main, s, p); e != cudaSuccess) return e;
    if (p.partial) {
      Launch cols = plan.cols;
      cols.grid_y = int(nparts);  // the partials allocated (plan.nparts, unless the glue disagrees)
      if (cudaError_t e = launch(bwd_kernel<T, P, NORM>(cols.kernel), cols, s, p); e != cudaSuccess) return e;
    }
  }
  if (!p.partial) return cudaGetLastError();
  return launch_reduce<A, Q>(plan.reduce, s, p.partial, nparts, p.n, dgamma, dbeta);
}

// The one point where the runtime Norm (and, forward, the residual) picks the kernels'.
template <class T, class P>
cudaError_t launch_fwd(FwdParams<T, P> p, bool vec_ok, cudaStream_t s) {
  p.n = int(p.N);
  if (p.norm == Norm::kRms && p.beta) return cudaErrorInvalidValue;  // RMSNorm's kernels read no bias
  if (p.R)
    return p.norm == Norm::kRms ? launch_fwd_norm<T, P, Norm::kRms, true>(p, vec_ok, s)
                                : launch_fwd_norm<T, P, Norm::kLayer, true>(p, vec_ok, s);
  return p.norm == Norm::kRms ? launch_fwd_norm<T, P, Norm::kRms, false>(p, vec_ok, s)
                              : launch_fwd_norm<T, P, Norm::kLayer, false>(p, vec_ok, s);
}

template <class T, class P>
int64_t bwd_num_partials(const BwdParams<T, P>& p, bool vec_ok, int device) {
  BwdParams<T, P> q = p;
  q.n = int(p.N);
  return q.norm == Norm::kRms ? bwd_num_partials_norm<T, P, Norm::kRms>(q, vec_ok, device)
                              : bwd_num_partials_norm<T, P, Norm::kLayer>(q, vec_ok, device);
}

template <class T, class P, class Q>
cudaError_t launch_bwd(BwdParams<T, P> p, bool vec_ok, int64_t nparts, Q* dgamma, Q* dbeta,
                       cudaStream_t s) {
  p.n = int(p.N);
  return p.norm == Norm::kRms ? launch_bwd_norm<T, P, Q, Norm::kRms>(p, vec_ok, nparts, dgamma, dbeta, s)
                              : launch_bwd_norm<T, P, Q, Norm::kLayer>(p, vec_ok, nparts, dgamma, dbeta, s);
}

// ---------------------------------------------------------------- the parts
// parts.cu.in, configured once per part (cuda/CMakeLists.txt), instantiates the launchers of one
// direction, one row type and one parameter type: the PlusOne<P> launchers beside the plain P
// ones, whose kernels they ask about (FwdOccupancy), so no kernel is compiled by two parts.
// The FASTLN_CUDA_PART_<name> macros below are the list of parts: cuda/CMakeLists.txt reads their
// names from this file (one #define a line).
#define FASTLN_CUDA_FWD(T, P) template cudaError_t launch_fwd<T, P>(FwdParams<T, P>, bool, cudaStream_t);
#define FASTLN_CUDA_NPARTS(T, P) template int64_t bwd_num_partials<T, P>(const BwdParams<T, P>&, bool, int);
#define FASTLN_CUDA_BWD(T, P, Q) \
  template cudaError_t launch_bwd<T, P, Q>(BwdParams<T, P>, bool, int64_t, Q*, Q*, cudaStream_t);
// Parameters P, and P read as 1 + P (the weight offset of 1), the gradients in P.
#define FASTLN_CUDA_FWD_PAIR(T, P) FASTLN_CUDA_FWD(T, P) FASTLN_CUDA_FWD(T, PlusOne<P>)
#define FASTLN_CUDA_BWD_PAIR(T, P) \
  FASTLN_CUDA_NPARTS(T, P) FASTLN_CUDA_BWD(T, P, P) FASTLN_CUDA_NPARTS(T, PlusOne<P>) FASTLN_CUDA_BWD(T, PlusOne<P>, P)
#define FASTLN_CUDA_PART_fwd_float FASTLN_CUDA_FWD_PAIR(float, float)
#define FASTLN_CUDA_PART_bwd_float FASTLN_CUDA_BWD_PAIR(float, float)
#define FASTLN_CUDA_PART_fwd_double FASTLN_CUDA_FWD(double, double)
#define FASTLN_CUDA_PART_bwd_double FASTLN_CUDA_NPARTS(double, double) FASTLN_CUDA_BWD(double, double, double)
#define FASTLN_CUDA_PART_fwd_bf16 FASTLN_CUDA_FWD_PAIR(bf16, bf16)
#define FASTLN_CUDA_PART_bwd_bf16 FASTLN_CUDA_BWD_PAIR(bf16, bf16)
#define FASTLN_CUDA_PART_fwd_fp16 FASTLN_CUDA_FWD_PAIR(fp16, fp16)
#define FASTLN_CUDA_PART_bwd_fp16 FASTLN_CUDA_BWD_PAIR(fp16, fp16)
// 16-bit rows with float parameters (mixed precision); their backward also writes 16-bit
// gradients: the weight offset of 16-bit weights runs the float-parameter kernels
// (launch_offset_params).
#define FASTLN_CUDA_PART_fwd_bf16_mixed FASTLN_CUDA_FWD_PAIR(bf16, float)
#define FASTLN_CUDA_PART_bwd_bf16_mixed FASTLN_CUDA_BWD_PAIR(bf16, float) FASTLN_CUDA_BWD(bf16, float, bf16)
#define FASTLN_CUDA_PART_fwd_fp16_mixed FASTLN_CUDA_FWD_PAIR(fp16, float)
#define FASTLN_CUDA_PART_bwd_fp16_mixed FASTLN_CUDA_BWD_PAIR(fp16, float) FASTLN_CUDA_BWD(fp16, float, fp16)

}  // namespace cuda_impl
}  // namespace fastln

// CUDA launchers of the fastln LayerNorm ops: each launch computes its plan (launch_plan.cpp,
// host-only) and executes it; this file maps a plan's KernelId to a kernel of forward.cuh /
// backward.cuh, and answers the plan's occupancy questions from the CUDA runtime. The ops and
// their registration for the CUDA key are ops_cuda.cpp.
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
// clusters and shared memory: a value, tested without a GPU), this file (executes plans).
//
// This file is torch-free (plain pointers, a stream): the torch glue is ops_cuda.cpp, built by
// the host compiler, so no inline function of torch's headers is compiled by two compilers.
#include <algorithm>
#include <mutex>
#include <vector>

#include "backward.cuh"
#include "forward.cuh"
#include "params.cuh"
#include "launch_plan.h"
#include "layer_norm_cuda.h"

namespace fastln {
namespace cuda_impl {

// An empty kernel: its attributes say which of this file's images the device runs.
__global__ void arch_probe_kernel() {}

namespace {

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

DeviceProps device_props(int device) {
  DeviceProps d;
  d.sm_count = num_sms(device);
  d.max_dyn_smem = max_dyn_smem(device);
  d.clusters = clusters_supported(device);
  return d;
}

template <class T>
constexpr bool kClusterType = cluster_type(sizeof(T));

cudaLaunchAttribute cluster_attr(int cl) {
  cudaLaunchAttribute a{};
  a.id = cudaLaunchAttributeClusterDimension;
  a.val.clusterDim.x = unsigned(cl);
  a.val.clusterDim.y = a.val.clusterDim.z = 1;
  return a;
}

// Clusters of cl CTAs of `kernel` (cl = 1: CTAs) resident on the device at once: the
// persistent grid (occupancy_resident). Cached: the queries cost microseconds of host time,
// which small problems would see. Sets the kernel's dynamic shared-memory limit (the device's)
// on its first query, before any launch of it with more than 48 KB: a plan asks about every
// kernel it launches with dynamic shared memory. Both queries count the launch's shared memory,
// not the kernel's limit (checked on the device).
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
  int clusters = 0;
  if (cl > 1) {
    cudaLaunchAttribute attr = cluster_attr(cl);
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(unsigned(cl));
    cfg.blockDim = dim3(unsigned(block));
    cfg.dynamicSmemBytes = smem;
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
    if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg) != cudaSuccess) {
      cudaGetLastError();
      clusters = 0;
    }
  }
  const int64_t n = occupancy_resident(occ, num_sms(device), cl, clusters);
  if (cache.size() < 4096) cache.push_back({kernel, block, smem, cl, device, n});
  return n;
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
          if constexpr (sizeof(T) == 4)
            if (k.st16) return fwd_staged_kernel<T, P, NORM, CL, true>;
          return fwd_staged_kernel<T, P, NORM, CL>;
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
                if (k.rows == 2) return bwd_reg_kernel<T, P, NV, NORM, true, CL, 0, 2>;
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
        return pick<1, 2, 4, 8>(k.cl, [&]<int CL>() -> Kernel { return bwd_staged_kernel<T, P, NORM, CL>; });
      return Kernel(nullptr);
    case KernelKind::kBwdFallbackDx:
      return k.nv == 1 ? Kernel(bwd_fallback_dx_kernel<T, P, 1, NORM>) : Kernel(bwd_fallback_dx_kernel<T, P, VEC, NORM>);
    case KernelKind::kBwdFallbackCols:
      return Kernel(bwd_fallback_cols_kernel<T, P, NORM>);
    default:
      return Kernel(nullptr);
  }
}

template <class A, class P>
auto reduce_kernel(const KernelId& k) {
  using Kernel = void (*)(const A*, int64_t, int, P*, P*);
  if (k.ry == 32) return Kernel(reduce_partials_kernel<A, P, 32, 1>);
  if constexpr (sizeof(A) == 4)
    if (k.w == 4) return Kernel(reduce_partials_kernel<A, P, 8, 4>);
  return Kernel(reduce_partials_kernel<A, P, 8, 1>);
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
Problem problem(int n, int64_t m, bool residual, bool vec_ok) {
  Problem pb;
  pb.n = n;
  pb.m = m;
  pb.elem_size = int(sizeof(T));
  pb.param_size = int(sizeof(plain_param_t<P>));
  pb.residual = residual;
  pb.vec_ok = vec_ok;
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
  return bwd_plan(problem<T, P>(p.n, p.M, false, vec_ok), device_props(device), BwdOccupancy<T, P, NORM>(device), plan_overrides())
      .nparts;
}

template <class T, class P, class Q, Norm NORM>
cudaError_t launch_bwd_norm(BwdParams<T, P> p, bool vec_ok, int64_t nparts, Q* dgamma, Q* dbeta, cudaStream_t s) {
  using A = acc_t<T>;
  int device = 0;
  cudaGetDevice(&device);
  const BwdPlan plan =
      bwd_plan(problem<T, P>(p.n, p.M, false, vec_ok), device_props(device), BwdOccupancy<T, P, NORM>(device), plan_overrides());
  p.tpr = plan.tpr;
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
  const A* partial = p.partial;
  return launch(reduce_kernel<A, Q>(plan.reduce.kernel), plan.reduce, s, partial, nparts, p.n, dgamma, dbeta);
}

}  // namespace

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

template <class P, class A>
cudaError_t launch_offset_params(const P* gamma, const P* beta, A offset, A* out_gamma, A* out_beta,
                                 int64_t n, cudaStream_t s) {
  constexpr int kBlock = 256;
  const int64_t grid = std::min<int64_t>((n + kBlock - 1) / kBlock, 1024);
  offset_params_kernel<P, A><<<unsigned(grid), kBlock, 0, s>>>(gamma, beta, offset, out_gamma, out_beta, n);
  return cudaGetLastError();
}

FASTLN_FOR_EACH_TYPE_PAIR(FASTLN_CUDA_INSTANTIATE)
FASTLN_CUDA_INSTANTIATE_OFFSET(float, float)
FASTLN_CUDA_INSTANTIATE_OFFSET(double, double)
FASTLN_CUDA_INSTANTIATE_OFFSET(bf16, float)
FASTLN_CUDA_INSTANTIATE_OFFSET(fp16, float)
FASTLN_CUDA_INSTANTIATE_OFFSET_BWD(bf16)
FASTLN_CUDA_INSTANTIATE_OFFSET_BWD(fp16)
FASTLN_CUDA_INSTANTIATE_PLUS_ONE(float, float)
FASTLN_CUDA_INSTANTIATE_PLUS_ONE(bf16, bf16)
FASTLN_CUDA_INSTANTIATE_PLUS_ONE(fp16, fp16)
FASTLN_CUDA_INSTANTIATE_PLUS_ONE(bf16, float)
FASTLN_CUDA_INSTANTIATE_PLUS_ONE(fp16, float)

}  // namespace cuda_impl
}  // namespace fastln

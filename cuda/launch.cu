// The launchers' answers from the CUDA runtime, once for all parts of the kernels (launch.cuh):
// the device's attributes and which image it runs, the occupancy of a kernel (cached), and the
// kernels that every part's backward shares (the partials' sum) or that stand apart (the weight
// offset's parameters).
#include <algorithm>
#include <mutex>
#include <vector>

#include "launch.cuh"
#include "params.cuh"

namespace fastln {
namespace cuda_impl {

// An empty kernel: its attributes say which image the device runs (this file's; every part of the
// kernels is built for the same architectures).
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

// Thread-block clusters run: a device that launches them, running the sm_90 (or newer) image,
// not a JIT-compiled older one (whose cluster kernels trap).
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

}  // namespace

DeviceProps device_props(int device) {
  DeviceProps d;
  d.sm_count = num_sms(device);
  d.max_dyn_smem = max_dyn_smem(device);
  d.clusters = clusters_supported(device);
  return d;
}

// One cache for every part's kernels (launch.cuh says what it answers).
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

namespace {

template <class A, class P>
auto reduce_kernel(const KernelId& k) {
  using Kernel = void (*)(const A*, int64_t, int, P*, P*);
  if (k.ry == 32) return Kernel(reduce_partials_kernel<A, P, 32, 1>);
  if constexpr (sizeof(A) == 4)
    if (k.w == 4) return Kernel(reduce_partials_kernel<A, P, 8, 4>);
  return Kernel(reduce_partials_kernel<A, P, 8, 1>);
}

}  // namespace

template <class A, class Q>
cudaError_t launch_reduce(const Launch& l, cudaStream_t s, const A* partial, int64_t nparts, int n, Q* dgamma,
                          Q* dbeta) {
  return launch(reduce_kernel<A, Q>(l.kernel), l, s, partial, nparts, n, dgamma, dbeta);
}

template <class P, class A>
cudaError_t launch_offset_params(const P* gamma, const P* beta, A offset, A* out_gamma, A* out_beta,
                                 int64_t n, cudaStream_t s) {
  constexpr int kBlock = 256;
  const int64_t grid = std::min<int64_t>((n + kBlock - 1) / kBlock, 1024);
  offset_params_kernel<P, A><<<unsigned(grid), kBlock, 0, s>>>(gamma, beta, offset, out_gamma, out_beta, n);
  return cudaGetLastError();
}

// The partials' sums of every backward: A, the accumulation type, to Q, the gradients' type.
#define FASTLN_CUDA_REDUCE(A, Q)                                                                        \
  template cudaError_t launch_reduce<A, Q>(const Launch&, cudaStream_t, const A*, int64_t, int, Q*, Q*);
FASTLN_CUDA_REDUCE(float, float)
FASTLN_CUDA_REDUCE(float, bf16)
FASTLN_CUDA_REDUCE(float, fp16)
FASTLN_CUDA_REDUCE(double, double)
#define FASTLN_CUDA_OFFSET(P, A) \
  template cudaError_t launch_offset_params<P, A>(const P*, const P*, A, A*, A*, int64_t, cudaStream_t);
FASTLN_CUDA_OFFSET(float, float)
FASTLN_CUDA_OFFSET(double, double)
FASTLN_CUDA_OFFSET(bf16, float)
FASTLN_CUDA_OFFSET(fp16, float)

}  // namespace cuda_impl
}  // namespace fastln

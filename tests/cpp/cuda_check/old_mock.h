// The CUDA runtime, as far as the launch code of cuda/layer_norm.cu before the split (commit
// ecbef91) uses it, answered by plan_model.h: gen_old.py compiles that code's host part against
// this and records every launch it makes. Host-only; no GPU.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <mutex>
#include <map>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "../plan_model.h"
#include "layer_norm_cuda.h"  // this directory's stub of cuda_runtime.h first

namespace mock {
namespace pm = fastln_plan_model;
inline std::vector<const pm::DeviceModel*> devices = {&pm::h100(), &pm::a100()};
inline int current = 0;
inline std::map<const void*, std::string>& names() {
  static std::map<const void*, std::string> m;
  return m;
}
inline bool add(const void* f, std::string name) {
  names()[f] = std::move(name);
  return true;
}
inline const std::string& name(const void* f) {
  auto it = names().find(f);
  if (it == names().end()) {
    std::fprintf(stderr, "unregistered kernel\n");
    std::abort();
  }
  return it->second;
}
inline std::vector<std::string> launches;
inline int tpr = -1;

template <class T> constexpr const char* tname() {
  if constexpr (std::is_same_v<T, float>) return "float";
  else if constexpr (std::is_same_v<T, double>) return "double";
  else if constexpr (std::is_same_v<T, fastln::bf16>) return "bf16";
  else return "fp16";
}
template <class... Ts> std::string tlist(Ts... v) {
  std::ostringstream s;
  bool first = true;
  ((s << (first ? "" : ",") << v, first = false), ...);
  return s.str();
}
}  // namespace mock

namespace fastln {
namespace cuda_impl {
template <class T> struct Pack { static constexpr int n = 16 / sizeof(T); };

// The kernels: host functions registered under their canonical names (plan_model.h) when
// their address is taken (instantiated).
#define MOCK_KERNEL(NAME, TPARAMS, TARGS, SIG, STR)                                   \
  template <TPARAMS> void NAME SIG;                                                    \
  template <TPARAMS> inline const bool NAME##_reg =                                    \
      mock::add(reinterpret_cast<const void*>(&NAME<TARGS>), std::string(#NAME "<") + STR + ">"); \
  template <TPARAMS> void NAME SIG { (void)NAME##_reg<TARGS>; }
#define COMMA ,
MOCK_KERNEL(fwd_reg_kernel, class T COMMA class P COMMA int NV COMMA Norm NORM COMMA bool RES COMMA int CL,
            T COMMA P COMMA NV COMMA NORM COMMA RES COMMA CL, (FwdParams<T COMMA P>),
            mock::tlist(mock::tname<T>(), mock::tname<P>(), NV, int(NORM), int(RES), CL))
MOCK_KERNEL(fwd_staged_kernel, class T COMMA class P COMMA Norm NORM COMMA int CL, T COMMA P COMMA NORM COMMA CL,
            (FwdParams<T COMMA P>), mock::tlist(mock::tname<T>(), mock::tname<P>(), int(NORM), CL))
MOCK_KERNEL(fwd_fallback_kernel, class T COMMA class P COMMA int VEC COMMA Norm NORM COMMA bool RES,
            T COMMA P COMMA VEC COMMA NORM COMMA RES, (FwdParams<T COMMA P>),
            mock::tlist(mock::tname<T>(), mock::tname<P>(), VEC, int(NORM), int(RES)))
template <class T, class P, int NV, Norm NORM, bool ACC_SMEM, int CL, int MINB = 0, int ROWS = 1>
void bwd_reg_kernel(BwdParams<T, P>);
MOCK_KERNEL(bwd_reg_kernel,
            class T COMMA class P COMMA int NV COMMA Norm NORM COMMA bool ACC_SMEM COMMA int CL COMMA int MINB COMMA int ROWS,
            T COMMA P COMMA NV COMMA NORM COMMA ACC_SMEM COMMA CL COMMA MINB COMMA ROWS, (BwdParams<T COMMA P>),
            mock::tlist(mock::tname<T>(), mock::tname<P>(), NV, int(NORM), int(ACC_SMEM), CL, MINB, ROWS))
MOCK_KERNEL(bwd_staged_kernel, class T COMMA class P COMMA Norm NORM COMMA int CL, T COMMA P COMMA NORM COMMA CL,
            (BwdParams<T COMMA P>), mock::tlist(mock::tname<T>(), mock::tname<P>(), int(NORM), CL))
MOCK_KERNEL(bwd_fallback_dx_kernel, class T COMMA class P COMMA int VEC COMMA Norm NORM, T COMMA P COMMA VEC COMMA NORM,
            (BwdParams<T COMMA P>), mock::tlist(mock::tname<T>(), mock::tname<P>(), VEC, int(NORM)))
MOCK_KERNEL(bwd_fallback_cols_kernel, class T COMMA class P COMMA Norm NORM, T COMMA P COMMA NORM,
            (BwdParams<T COMMA P>), mock::tlist(mock::tname<T>(), mock::tname<P>(), int(NORM)))
MOCK_KERNEL(reduce_partials_kernel, class A COMMA class P COMMA int RY COMMA int W, A COMMA P COMMA RY COMMA W,
            (const A*, int64_t, int, P*, P*), mock::tlist(mock::tname<A>(), mock::tname<P>(), RY, W))
#undef MOCK_KERNEL
}  // namespace cuda_impl
}  // namespace fastln

// ---------------------------------------------------------------- the runtime
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaGetDevice(int* d) { *d = mock::current; return cudaSuccess; }
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int device) {
  const auto& d = *mock::devices[device];
  switch (a) {
    case cudaDevAttrMultiProcessorCount: *v = d.sms; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = d.smem_optin; break;
    case cudaDevAttrClusterLaunch: *v = d.clusters; break;
  }
  return cudaSuccess;
}
inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* a, void (*)()) {
  a->ptxVersion = mock::devices[mock::current]->ptx_version;
  return cudaSuccess;
}
inline cudaError_t cudaFuncSetAttribute(const void*, cudaFuncAttribute, int) { return cudaSuccess; }
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, const void* k, int block, size_t smem) {
  *n = fastln_plan_model::blocks_per_sm(*mock::devices[mock::current], mock::name(k), block, smem);
  return cudaSuccess;
}
inline cudaError_t cudaOccupancyMaxActiveClusters(int* n, const void* k, const cudaLaunchConfig_t* cfg) {
  *n = fastln_plan_model::active_clusters(*mock::devices[mock::current], mock::name(k), int(cfg->blockDim.x),
                                          cfg->dynamicSmemBytes, int(cfg->attrs[0].val.clusterDim.x));
  return cudaSuccess;
}

namespace mock {
template <class A0, class... Args>
void record_tpr(const A0& a0, const Args&...) {
  if constexpr (requires { a0.tpr; }) tpr = a0.tpr;
}
template <class K, class... Args>
void record(K kernel, dim3 g, dim3 b, size_t smem, int cl, bool pdl, const Args&... args) {
  record_tpr(args...);
  launches.push_back(fastln_plan_model::launch_line(name(reinterpret_cast<const void*>(kernel)), g.x, g.y, b.x, b.y,
                                                    smem, cl, pdl));
}
}  // namespace mock

template <class... KArgs, class... Args>
cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t* cfg, void (*kernel)(KArgs...), const Args&... args) {
  int cl = 1;
  bool pdl = false;
  for (unsigned i = 0; i < cfg->numAttrs; ++i) {
    if (cfg->attrs[i].id == cudaLaunchAttributeClusterDimension) cl = int(cfg->attrs[i].val.clusterDim.x);
    if (cfg->attrs[i].id == cudaLaunchAttributeProgrammaticStreamSerialization) pdl = true;
  }
  mock::record(kernel, cfg->gridDim, cfg->blockDim, cfg->dynamicSmemBytes, cl, pdl, args...);
  return cudaSuccess;
}
// kernel<<<grid, block, smem, stream>>>(args...), rewritten by gen_old.py.
template <class... KArgs, class... Args>
void mock_launch(void (*kernel)(KArgs...), dim3 g, dim3 b, size_t smem, cudaStream_t, const Args&... args) {
  mock::record(kernel, g, b, smem, 1, false, args...);
}

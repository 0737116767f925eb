// The staged forward's fp32 output stores, A/B without the extension (session 21): the plan's
// launches of fwd_staged_kernel<float, float, NORM, CL> (tests/cpp/launch_plans.txt, H100 rows of
// M * N ~ 2^27) with the plain store (four 4-byte STG a vector) and with ST16 (one 16-byte STG),
// on the same tensors. Checks that both give the same bits (y, mean, rstd), then times them in
// turn: 15 rounds of A then B, each round the median of 20 launches by CUDA events; reports the
// minimum and median over rounds, and % of a device-to-device copy measured in the same run.
// ST16 was removed after this A/B (session 23): build it at commit cb1822f, where
// fwd_staged_kernel still takes its ST16 parameter.
// Build (here or there; nvcc 13.0, sm_90a), repository root:
//   nvcc -std=c++20 -O3 -arch=sm_90a --expt-relaxed-constexpr -Icuda -Isrc/cpp -Isrc/cpp/kernels \
//     -o st16_ab docs/journal/scripts/st16_ab.cu
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "forward.cuh"

using namespace fastln;
using namespace fastln::cuda_impl;

#define CK(x)                                                                        \
  do {                                                                               \
    cudaError_t e_ = (x);                                                            \
    if (e_ != cudaSuccess) {                                                         \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
      std::exit(1);                                                                  \
    }                                                                                \
  } while (0)

struct Case {
  int n;
  int64_t m;
  int cl, grid;
  size_t smem;
};

template <Norm NORM, int CL, bool ST16>
cudaError_t launch(const FwdParams<float, float>& p, const Case& c) {
  auto kernel = fwd_staged_kernel<float, float, NORM, CL, ST16>;
  static bool attr = false;
  if (!attr) {
    // The device's opt-in limit less the kernel's static shared memory, as launch.cu's
    // max_dyn_smem (227 KB itself was refused: "invalid argument", session 22).
    int optin = 0;
    CK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
    CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, optin - 1024));
    attr = true;
  }
  cudaLaunchAttribute a{};
  a.id = cudaLaunchAttributeClusterDimension;
  a.val.clusterDim.x = CL;
  a.val.clusterDim.y = 1;
  a.val.clusterDim.z = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(c.grid);
  cfg.blockDim = dim3(kStagedThreads);
  cfg.dynamicSmemBytes = c.smem;
  cfg.attrs = &a;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, kernel, p);
}

template <Norm NORM, int CL>
cudaError_t launch_any(const FwdParams<float, float>& p, const Case& c, bool st16) {
  return st16 ? launch<NORM, CL, true>(p, c) : launch<NORM, CL, false>(p, c);
}

template <Norm NORM>
cudaError_t launch_cl(const FwdParams<float, float>& p, const Case& c, bool st16) {
  switch (c.cl) {
    case 2: return launch_any<NORM, 2>(p, c, st16);
    case 4: return launch_any<NORM, 4>(p, c, st16);
    default: return launch_any<NORM, 8>(p, c, st16);
  }
}

float time_us(const FwdParams<float, float>& p, const Case& c, Norm norm, bool st16, int reps) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  std::vector<float> t;
  for (int r = 0; r < reps; ++r) {
    CK(cudaEventRecord(a));
    CK(norm == Norm::kLayer ? launch_cl<Norm::kLayer>(p, c, st16) : launch_cl<Norm::kRms>(p, c, st16));
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms * 1000);
  }
  std::sort(t.begin(), t.end());
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  return t[t.size() / 2];
}

int main() {
  // 1 GiB device-to-device copy: bytes read + written over its time.
  const size_t cb = size_t(1) << 30;
  void *s, *d;
  CK(cudaMalloc(&s, cb));
  CK(cudaMalloc(&d, cb));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  float best = 1e9;
  for (int r = 0; r < 10; ++r) {
    CK(cudaEventRecord(e0));
    CK(cudaMemcpyAsync(d, s, cb, cudaMemcpyDeviceToDevice));
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    best = std::min(best, ms);
  }
  const double copy_gbps = 2.0 * cb / (best * 1e-3) / 1e9;
  CK(cudaFree(s));
  CK(cudaFree(d));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("%s, copy %.0f GB/s (best of 10, 1 GiB)\n", prop.name, copy_gbps);

  // launch_plans.txt, H100 float,float fwd r0: grid, cluster, dynamic shared memory
  const Case cases[] = {{20000, 6711, 2, 132, 120000},
                        {24576, 5461, 2, 132, 147456},
                        {32768, 4096, 2, 132, 196608},
                        {49152, 2731, 4, 120, 147456},
                        {65536, 2048, 8, 112, 98304}};
  std::printf("%-6s %6s %7s %2s | %9s %9s | %9s %9s | %6s %6s | %s\n", "norm", "N", "M", "CL", "plain min",
              "ST16 min", "plain med", "ST16 med", "%copy", "%copy", "ST16/plain (median of rounds)");
  std::mt19937 rng(0);
  std::normal_distribution<float> nd;
  for (const Case& c : cases) {
    const size_t elems = size_t(c.m) * c.n;
    std::vector<float> hx(elems), hg(c.n), hb(c.n);
    for (auto& v : hx) v = nd(rng) + 3.0f;
    for (int i = 0; i < c.n; ++i) hg[i] = 1.0f + 0.1f * nd(rng), hb[i] = 0.1f * nd(rng);
    float *x, *g, *b, *y[2], *mean[2], *rstd[2];
    CK(cudaMalloc(&x, elems * 4));
    CK(cudaMalloc(&g, c.n * 4));
    CK(cudaMalloc(&b, c.n * 4));
    CK(cudaMemcpy(x, hx.data(), elems * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(g, hg.data(), c.n * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(b, hb.data(), c.n * 4, cudaMemcpyHostToDevice));
    for (int i = 0; i < 2; ++i) {
      CK(cudaMalloc(&y[i], elems * 4));
      CK(cudaMalloc(&mean[i], c.m * 4));
      CK(cudaMalloc(&rstd[i], c.m * 4));
    }
    for (Norm norm : {Norm::kLayer, Norm::kRms}) {
      FwdParams<float, float> p[2];
      for (int i = 0; i < 2; ++i) {
        std::memset(static_cast<void*>(&p[i]), 0, sizeof(p[i]));
        p[i].X = x;
        p[i].ldx = c.n;
        p[i].gamma = g;
        p[i].beta = norm == Norm::kLayer ? b : nullptr;
        p[i].Y = y[i];
        p[i].mean = mean[i];
        p[i].rstd = rstd[i];
        p[i].N = c.n;
        p[i].eps = 1e-5;
        p[i].norm = norm;
        p[i].M = c.m;
        p[i].n = c.n;
        p[i].tpr = kStagedThreads;
      }
      for (int i = 0; i < 2; ++i) {
        CK(cudaMemset(y[i], 0xff, elems * 4));
        CK(norm == Norm::kLayer ? launch_cl<Norm::kLayer>(p[i], c, i == 1) : launch_cl<Norm::kRms>(p[i], c, i == 1));
      }
      CK(cudaDeviceSynchronize());
      bool same = true;
      {
        std::vector<float> a(elems), bb(elems);
        CK(cudaMemcpy(a.data(), y[0], elems * 4, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(bb.data(), y[1], elems * 4, cudaMemcpyDeviceToHost));
        same = std::memcmp(a.data(), bb.data(), elems * 4) == 0;
        std::vector<float> ma(c.m), mb(c.m);
        for (float* const* arr : {mean, rstd}) {
          CK(cudaMemcpy(ma.data(), arr[0], c.m * 4, cudaMemcpyDeviceToHost));
          CK(cudaMemcpy(mb.data(), arr[1], c.m * 4, cudaMemcpyDeviceToHost));
          same = same && std::memcmp(ma.data(), mb.data(), c.m * 4) == 0;
        }
      }
      for (int w = 0; w < 5; ++w) time_us(p[0], c, norm, false, 5), time_us(p[1], c, norm, true, 5);
      std::vector<float> ta, tb, ratio;
      for (int r = 0; r < 15; ++r) {
        ta.push_back(time_us(p[0], c, norm, false, 20));
        tb.push_back(time_us(p[1], c, norm, true, 20));
        ratio.push_back(tb.back() / ta.back());
      }
      std::sort(ta.begin(), ta.end());
      std::sort(tb.begin(), tb.end());
      std::sort(ratio.begin(), ratio.end());
      const double bytes = 2.0 * elems * 4;
      const auto pct = [&](float us) { return 100.0 * bytes / (us * 1e-6) / 1e9 / copy_gbps; };
      std::printf("%-6s %6d %7lld %2d | %9.1f %9.1f | %9.1f %9.1f | %6.1f %6.1f | %.4f (%.4f-%.4f)%s\n",
                  norm == Norm::kLayer ? "layer" : "rms", c.n, (long long)c.m, c.cl, ta[0], tb[0], ta[7], tb[7],
                  pct(ta[7]), pct(tb[7]), ratio[7], ratio[0], ratio.back(), same ? "" : "  BITS DIFFER");
    }
    for (int i = 0; i < 2; ++i) {
      CK(cudaFree(y[i]));
      CK(cudaFree(mean[i]));
      CK(cudaFree(rstd[i]));
    }
    CK(cudaFree(x));
    CK(cudaFree(g));
    CK(cudaFree(b));
  }
  return 0;
}

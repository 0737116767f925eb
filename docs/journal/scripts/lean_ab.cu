// A record: builds only at 868bc0f (LEAN was taken out in session 29, measured: fp32 0.2-0.7 %
// faster, bf16 0.4-0.8 % slower; journal.md, data/2026-12-07-h100-o/lean_ab.txt; the change:
// docs/journal/2026-12-07-cuda-lean-barriers.diff).
// The staged forward with 5 block barriers a row (fwd_staged_kernel LEAN) against its 7, A/B
// without the extension (journal.md, session 28), by st16_ab.cu's method and much of its code
// (that one builds only at cb1822f, a record of session 23's run): the plans' launches of the H100 rows of M * N ~
// 2^27 where the staged forward runs (tests/cpp/launch_plans.txt: fp32 20000-65536, bf16 49152
// and 65536; fp32 49152 a cluster a row), on the same tensors. Checks that both give the same
// bits (y, mean, rstd), then times them in turn: 15 rounds of A then B, each round the median of
// 20 launches by CUDA events; reports the minimum and median over rounds, and % of a
// device-to-device copy measured in the same run. `lean_ab --check`: the bit checks alone (one
// launch of each), for `compute-sanitizer --tool racecheck ./lean_ab --check`. Built here (no GPU
// needed) and carried to the device as a binary:
//   nvcc -std=c++20 -O3 -arch=sm_90a --expt-relaxed-constexpr -Icuda -Isrc/cpp -Isrc/cpp/kernels \
//     -o lean_ab docs/journal/scripts/lean_ab.cu
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "forward.cuh"

using namespace fastln;
using namespace fastln::cuda_impl;

#define CK(x)                                                                               \
  do {                                                                                      \
    cudaError_t e_ = (x);                                                                   \
    if (e_ != cudaSuccess) {                                                                \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__);  \
      std::exit(1);                                                                         \
    }                                                                                       \
  } while (0)

struct Case {
  int n;
  int64_t m;
  int cl, grid;
  size_t smem;
  bool one_row;
};

template <class T, Norm NORM, int CL, bool ONE_ROW, bool LEAN>
cudaError_t launch(const FwdParams<T, T>& p, const Case& c) {
  auto kernel = fwd_staged_kernel<T, T, NORM, CL, ONE_ROW, LEAN>;
  static bool attr = false;
  if (!attr) {
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

template <class T, Norm NORM>
cudaError_t launch_any(const FwdParams<T, T>& p, const Case& c, bool lean) {
  const auto go = [&]<int CL, bool ONE_ROW>() {
    return lean ? launch<T, NORM, CL, ONE_ROW, true>(p, c) : launch<T, NORM, CL, ONE_ROW, false>(p, c);
  };
  if (c.one_row) return c.cl == 4 ? go.template operator()<4, true>() : go.template operator()<2, true>();
  switch (c.cl) {
    case 2: return go.template operator()<2, false>();
    case 4: return go.template operator()<4, false>();
    default: return go.template operator()<8, false>();
  }
}

template <class T>
cudaError_t launch_norm(const FwdParams<T, T>& p, const Case& c, bool lean) {
  return p.norm == Norm::kLayer ? launch_any<T, Norm::kLayer>(p, c, lean) : launch_any<T, Norm::kRms>(p, c, lean);
}

template <class T>
float time_us(const FwdParams<T, T>& p, const Case& c, bool lean, int reps) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  std::vector<float> t;
  for (int r = 0; r < reps; ++r) {
    CK(cudaEventRecord(a));
    CK(launch_norm(p, c, lean));
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

// The host's image of T: float as is, bf16 rounded to nearest even.
template <class T>
std::vector<unsigned char> device_bytes(const std::vector<float>& v) {
  std::vector<unsigned char> out(v.size() * sizeof(T));
  for (size_t i = 0; i < v.size(); ++i) {
    if constexpr (sizeof(T) == 4) {
      std::memcpy(&out[i * 4], &v[i], 4);
    } else {
      uint32_t u;
      std::memcpy(&u, &v[i], 4);
      const uint16_t h = uint16_t((u + 0x7fff + ((u >> 16) & 1)) >> 16);
      std::memcpy(&out[i * 2], &h, 2);
    }
  }
  return out;
}

template <class T>
void run(const char* type, const Case& c, double copy_gbps, std::mt19937& rng, bool check_only) {
  using A = acc_t<T>;
  const size_t elems = size_t(c.m) * c.n;
  std::normal_distribution<float> nd;
  std::vector<float> hx(elems), hg(c.n), hb(c.n);
  for (auto& v : hx) v = nd(rng) + 3.0f;
  for (int i = 0; i < c.n; ++i) hg[i] = 1.0f + 0.1f * nd(rng), hb[i] = 0.1f * nd(rng);
  T *x, *g, *b, *y[2];
  A *mean[2], *rstd[2];
  const auto upload = [](T** d, const std::vector<float>& h) {
    const auto bytes = device_bytes<T>(h);
    CK(cudaMalloc(d, bytes.size()));
    CK(cudaMemcpy(*d, bytes.data(), bytes.size(), cudaMemcpyHostToDevice));
  };
  upload(&x, hx);
  upload(&g, hg);
  upload(&b, hb);
  for (int i = 0; i < 2; ++i) {
    CK(cudaMalloc(&y[i], elems * sizeof(T)));
    CK(cudaMalloc(&mean[i], c.m * sizeof(A)));
    CK(cudaMalloc(&rstd[i], c.m * sizeof(A)));
  }
  for (Norm norm : {Norm::kLayer, Norm::kRms}) {
    FwdParams<T, T> p[2];
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
      CK(cudaMemset(y[i], 0xff, elems * sizeof(T)));
      CK(launch_norm(p[i], c, i == 1));
    }
    CK(cudaDeviceSynchronize());
    bool same = true;
    {
      std::vector<unsigned char> a(elems * sizeof(T)), bb(elems * sizeof(T));
      CK(cudaMemcpy(a.data(), y[0], a.size(), cudaMemcpyDeviceToHost));
      CK(cudaMemcpy(bb.data(), y[1], bb.size(), cudaMemcpyDeviceToHost));
      same = a == bb;
      std::vector<A> ma(c.m), mb(c.m);
      for (A* const* arr : {mean, rstd}) {
        CK(cudaMemcpy(ma.data(), arr[0], c.m * sizeof(A), cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(mb.data(), arr[1], c.m * sizeof(A), cudaMemcpyDeviceToHost));
        same = same && std::memcmp(ma.data(), mb.data(), c.m * sizeof(A)) == 0;
      }
    }
    if (check_only) {
      std::printf("%-5s %-6s %6d %5lld %2d%s | %s\n", type, norm == Norm::kLayer ? "layer" : "rms", c.n,
                  (long long)c.m, c.cl, c.one_row ? "r" : " ", same ? "same bits" : "BITS DIFFER");
      continue;
    }
    for (int w = 0; w < 5; ++w) time_us(p[0], c, false, 5), time_us(p[1], c, true, 5);
    std::vector<float> ta, tb, ratio;
    for (int r = 0; r < 15; ++r) {
      ta.push_back(time_us(p[0], c, false, 20));
      tb.push_back(time_us(p[1], c, true, 20));
      ratio.push_back(tb.back() / ta.back());
    }
    std::sort(ta.begin(), ta.end());
    std::sort(tb.begin(), tb.end());
    std::sort(ratio.begin(), ratio.end());
    const double bytes = 2.0 * elems * sizeof(T);
    const auto pct = [&](float us) { return 100.0 * bytes / (us * 1e-6) / 1e9 / copy_gbps; };
    std::printf("%-5s %-6s %6d %5lld %2d%s | %8.1f %8.1f | %8.1f %8.1f | %5.1f %5.1f | %.4f (%.4f-%.4f)%s\n", type,
                norm == Norm::kLayer ? "layer" : "rms", c.n, (long long)c.m, c.cl, c.one_row ? "r" : " ", ta[0], tb[0],
                ta[7], tb[7], pct(ta[7]), pct(tb[7]), ratio[7], ratio[0], ratio.back(), same ? "" : "  BITS DIFFER");
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

int main(int argc, char** argv) {
  const bool check_only = argc > 1 && std::strcmp(argv[1], "--check") == 0;
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
  std::printf("%-5s %-6s %6s %5s %3s | %8s %8s | %8s %8s | %5s %5s | %s\n", "type", "norm", "N", "M", "CL", "7 min",
              "5 min", "7 med", "5 med", "%copy", "%copy", "5/7 (median of rounds, range)");
  // H100 plans (launch_plans.txt): grid, shared memory; fp32 49152 a cluster of 4 a row.
  const Case fp32[] = {{20000, 6711, 2, 132, 120000, false}, {24576, 5461, 2, 132, 147456, false},
                       {32768, 4096, 2, 132, 196608, false}, {49152, 2731, 4, 2731 * 4, 49152, true},
                       {65536, 2048, 8, 112, 98304, false}};
  const Case b16[] = {{49152, 2731, 2, 132, 147456, false}, {65536, 2048, 2, 132, 196608, false}};
  std::mt19937 rng(0);
  for (const Case& c : fp32) run<float>("fp32", c, copy_gbps, rng, check_only);
  for (const Case& c : b16) run<bf16>("bf16", c, copy_gbps, rng, check_only);
  return 0;
}

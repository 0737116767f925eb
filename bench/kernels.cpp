// The CPU kernels alone, one thread, no torch: forward and backward (dX, dgamma, dbeta) time
// per call and per row, minimum over repeated batches (a busy machine only inflates times).
// Built with the native tests (target fastln_kernel_bench):
//   ./build/tests/fastln_kernel_bench            # the benchmark grid, float32 and bfloat16
//   ./build/tests/fastln_kernel_bench 100 512    # one shape
// FASTLN_ISA=base|avx2 picks a lower kernel build, as for the extension.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <utility>
#include <vector>

#include "layer_norm.h"

using namespace fastln;

namespace {

// 64-byte aligned storage, as torch allocates it: std::vector's 16-byte alignment splits every
// other 32-byte and every 64-byte access across two cache lines (fp32 (8192, 768)
// backward_blocks, one thread: 3.2 ms avx2 / 3.9 ms avx512 from std::vector, 2.3 / 2.3 aligned).
template <class T>
struct AlignedAlloc {
  using value_type = T;
  AlignedAlloc() = default;
  template <class U>
  AlignedAlloc(const AlignedAlloc<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(std::aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64)); }
  void deallocate(T* p, size_t) { std::free(p); }
  bool operator==(const AlignedAlloc&) const { return true; }
};
template <class T>
using Buffer = std::vector<T, AlignedAlloc<T>>;

template <class T>
void bench(int64_t M, int64_t N, const char* name) {
  std::mt19937 gen(1);
  std::normal_distribution<float> normal;
  auto randn = [&](int64_t n) {
    Buffer<T> v(n);
    for (auto& e : v) e = from_float<T>(normal(gen));
    return v;
  };
  const Buffer<T> X = randn(M * N), dY = randn(M * N), gamma = randn(N), beta = randn(N);
  Buffer<T> Y(M * N), dX(M * N), dgamma(N), dbeta(N);
  Buffer<float> mean(M), rstd(M);
  const BlockPlan plan = plan_blocks(M, N);
  Buffer<float> partial(plan.nblocks * 2 * N);
  const ForwardArgs<T, T> fa{X.data(), N, gamma.data(), beta.data(), Y.data(), mean.data(),
                             rstd.data(), N, 1e-5, Norm::kLayer};
  const BackwardArgs<T, T> ba{dY.data(), N, X.data(), N, mean.data(), rstd.data(), gamma.data(),
                              dX.data(), partial.data(), M, N, Norm::kLayer};
  using clock = std::chrono::steady_clock;
  const int reps = int(std::max<int64_t>(1, 20'000'000 / std::max<int64_t>(M * N, 1)));
  double tf = 1e30, tb = 1e30;
  for (int round = 0; round < 15; ++round) {
    const auto t0 = clock::now();
    for (int r = 0; r < reps; ++r) forward(fa, 0, M);
    const auto t1 = clock::now();
    for (int r = 0; r < reps; ++r) {
      backward_blocks(ba, plan, 0, plan.nblocks);
      reduce_partials<T, T>(partial.data(), plan.nblocks, N, dgamma.data(), dbeta.data(), 0, N);
    }
    const auto t2 = clock::now();
    tf = std::min(tf, std::chrono::duration<double>(t1 - t0).count() / reps);
    tb = std::min(tb, std::chrono::duration<double>(t2 - t1).count() / reps);
  }
  const double bytes = double(M) * N * sizeof(T);  // fwd: 2x (x read, y written); bwd: 3x
  std::printf("%-5s (%6lld,%6lld)  fwd %9.1f us %6.1f ns/row %5.1f GB/s   bwd %9.1f us %6.1f ns/row %5.1f GB/s\n",
              name, (long long)M, (long long)N, tf * 1e6, tf * 1e9 / M, 2 * bytes / tf / 1e9,
              tb * 1e6, tb * 1e9 / M, 3 * bytes / tb / 1e9);
}

}  // namespace

int main(int argc, char** argv) {
  std::printf("kernel build: %s\n", isa_name(active_isa()));
  std::vector<std::pair<int64_t, int64_t>> shapes = {
      {100, 512}, {1000, 1024}, {5000, 256}, {8192, 768}, {2048, 4096}, {256, 16384}, {32768, 128}};
  if (argc == 3) shapes = {{std::atoll(argv[1]), std::atoll(argv[2])}};
  for (auto [M, N] : shapes) bench<float>(M, N, "fp32");
  for (auto [M, N] : shapes) bench<bf16>(M, N, "bf16");
}

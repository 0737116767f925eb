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
//  * Fallback path (N not a multiple of the vector width, misaligned rows, or rows too long
//    for the register path): scalar loads, one CTA per row, the row re-read from L1/L2.
//  * Everything is templated on Norm so RMSNorm is one more instantiation.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <torch/library.h>

#include <limits>

#include "../src/cpp/torch/common.h"

namespace fastln {
namespace cuda_impl {

// ---------------------------------------------------------------- element conversions
__device__ __forceinline__ float dtof(float v) { return v; }
__device__ __forceinline__ double dtof(double v) { return v; }
__device__ __forceinline__ float dtof(bf16 v) { return __uint_as_float(uint32_t(v.bits) << 16); }
__device__ __forceinline__ float dtof(fp16 v) { return __half2float(__ushort_as_half(v.bits)); }

template <class T> __device__ __forceinline__ T dfrom(acc_t<T> v);
template <> __device__ __forceinline__ float dfrom<float>(float v) { return v; }
template <> __device__ __forceinline__ double dfrom<double>(double v) { return v; }
template <> __device__ __forceinline__ bf16 dfrom<bf16>(float v) {
  return bf16{__bfloat16_as_ushort(__float2bfloat16_rn(v))};
}
template <> __device__ __forceinline__ fp16 dfrom<fp16>(float v) {
  return fp16{__half_as_ushort(__float2half_rn(v))};
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

template <class T>
__device__ __forceinline__ Pack<T> ld_pack(const T* p) {
  return *reinterpret_cast<const Pack<T>*>(p);
}

// ---------------------------------------------------------------- reductions
// Sum of K values over each group of `tpr` threads, in a fixed order. For tpr <= 32 the
// groups are aligned lane ranges of one warp (xor shuffles stay inside a group); for
// tpr > 32 the block is one group (blockDim.x == tpr) and warps meet in shared memory `red`
// (at least 32 * K elements). Every thread of the block must call it.
template <int K, class A>
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
      for (int i = 0; i < nw; ++i) s += red[i * K + k];
      v[k] = s;
    }
  }
}

// ---------------------------------------------------------------- forward, register path
template <class T, class P>
struct FwdParams {
  const T* X;
  int64_t ldx;
  const P* gamma;
  const P* beta;
  T* Y;
  acc_t<T>* mean;
  acc_t<T>* rstd;
  int64_t M;
  int N;
  int tpr;
  double eps;
};

template <class T, class P, int NV, Norm NORM>
__global__ void __launch_bounds__(1024) fwd_reg_kernel(FwdParams<T, P> p) {
  using A = acc_t<T>;
  constexpr int VEC = Pack<T>::n;
  __shared__ A red[32 * 2];
  const int tpr = p.tpr;
  const int G = blockDim.x / tpr;
  const int grp = threadIdx.x / tpr, t = threadIdx.x % tpr;
  const int64_t row = int64_t(blockIdx.x) * G + grp;
  const bool valid = row < p.M;
  const int nvec = p.N / VEC;
  const T* x = p.X + (valid ? row : 0) * p.ldx;

  Pack<T> r[NV];
#pragma unroll
  for (int i = 0; i < NV; ++i) {
    const int v = i * tpr + t;
    if (valid && v < nvec) r[i] = ld_pack(x + int64_t(v) * VEC);
  }
  const A invN = A(1) / A(p.N);
  A mean = 0;
  if constexpr (NORM == Norm::kLayer) {
    const A x0 = valid ? A(dtof(x[0])) : A(0);
    A s[1] = {0};
#pragma unroll
    for (int i = 0; i < NV; ++i)
      if (valid && i * tpr + t < nvec) {
#pragma unroll
        for (int e = 0; e < VEC; ++e) s[0] += A(dtof(r[i].v[e])) - x0;
      }
    group_sum<1>(s, tpr, red);
    mean = x0 + s[0] * invN;
  }
  A q[1] = {0};
#pragma unroll
  for (int i = 0; i < NV; ++i)
    if (valid && i * tpr + t < nvec) {
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        const A d = A(dtof(r[i].v[e])) - mean;
        q[0] += d * d;
      }
    }
  group_sum<1>(q, tpr, red);
  const A rstd = A(1) / sqrt(q[0] * invN + A(p.eps));
  if (valid && t == 0) {
    p.mean[row] = mean;
    p.rstd[row] = rstd;
  }
  T* y = p.Y + (valid ? row : 0) * int64_t(p.N);
#pragma unroll
  for (int i = 0; i < NV; ++i) {
    const int v = i * tpr + t;
    if (valid && v < nvec) {
      PPack<P, VEC> g, b;
      if (p.gamma) g = *reinterpret_cast<const PPack<P, VEC>*>(p.gamma + v * VEC);
      if (p.beta) b = *reinterpret_cast<const PPack<P, VEC>*>(p.beta + v * VEC);
      Pack<T> o;
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        const A scale = p.gamma ? rstd * ptoa<A>(g.v[e]) : rstd;
        A out = (A(dtof(r[i].v[e])) - mean) * scale;
        if (p.beta) out += ptoa<A>(b.v[e]);
        o.v[e] = dfrom<T>(out);
      }
      *reinterpret_cast<Pack<T>*>(y + int64_t(v) * VEC) = o;
    }
  }
}

// ---------------------------------------------------------------- forward, fallback path
template <class T, class P, Norm NORM>
__global__ void __launch_bounds__(512) fwd_fallback_kernel(FwdParams<T, P> p) {
  using A = acc_t<T>;
  __shared__ A red[32 * 2];
  const int tpr = blockDim.x;
  const int N = p.N;
  const A invN = A(1) / A(N);
  for (int64_t row = blockIdx.x; row < p.M; row += gridDim.x) {
    const T* x = p.X + row * p.ldx;
    A mean = 0;
    if constexpr (NORM == Norm::kLayer) {
      const A x0 = A(dtof(x[0]));
      A s[1] = {0};
      for (int j = threadIdx.x; j < N; j += tpr) s[0] += A(dtof(x[j])) - x0;
      group_sum<1>(s, tpr, red);
      mean = x0 + s[0] * invN;
    }
    A q[1] = {0};
    for (int j = threadIdx.x; j < N; j += tpr) {
      const A d = A(dtof(x[j])) - mean;
      q[0] += d * d;
    }
    group_sum<1>(q, tpr, red);
    const A rstd = A(1) / sqrt(q[0] * invN + A(p.eps));
    if (threadIdx.x == 0) {
      p.mean[row] = mean;
      p.rstd[row] = rstd;
    }
    T* y = p.Y + row * int64_t(N);
    for (int j = threadIdx.x; j < N; j += tpr) {
      const A scale = p.gamma ? rstd * ptoa<A>(p.gamma[j]) : rstd;
      A out = (A(dtof(x[j])) - mean) * scale;
      if (p.beta) out += ptoa<A>(p.beta[j]);
      y[j] = dfrom<T>(out);
    }
  }
}

// ---------------------------------------------------------------- backward
template <class T, class P>
struct BwdParams {
  const T* dY;
  int64_t lddy;
  const T* X;
  int64_t ldx;
  const acc_t<T>* mean;
  const acc_t<T>* rstd;
  const P* gamma;
  T* dX;                // null: no grad_input
  acc_t<T>* partial;    // [nparts][2][N] or null
  int64_t M;
  int N;
  int tpr;
};

// ACC_SMEM: the CTA is one row group (tpr == blockDim.x) and keeps its column sums in
// dynamic shared memory [2][N]; else in registers, combined across groups at the end through
// dynamic shared memory [2][N] in group order.
template <class T, class P, int NV, Norm NORM, bool ACC_SMEM>
__global__ void __launch_bounds__(512) bwd_reg_kernel(BwdParams<T, P> p) {
  using A = acc_t<T>;
  constexpr int VEC = Pack<T>::n;
  extern __shared__ __align__(16) unsigned char dsmem_raw[];
  A* acc = reinterpret_cast<A*>(dsmem_raw);
  __shared__ A red[32 * 2];
  const int tpr = p.tpr;
  const int G = blockDim.x / tpr;
  const int grp = threadIdx.x / tpr, t = threadIdx.x % tpr;
  const int N = p.N, nvec = N / VEC;
  const bool params = p.partial != nullptr;
  const A invN = A(1) / A(N);

  A ag[ACC_SMEM ? 1 : NV][VEC], ab[ACC_SMEM ? 1 : NV][VEC];
  if constexpr (ACC_SMEM) {
    if (params)
      for (int j = threadIdx.x; j < 2 * N; j += blockDim.x) acc[j] = 0;
    // Each thread touches only its own columns below: no barrier needed until the end.
  } else {
#pragma unroll
    for (int i = 0; i < NV; ++i)
#pragma unroll
      for (int e = 0; e < VEC; ++e) ag[i][e] = ab[i][e] = 0;
  }
  if constexpr (ACC_SMEM) __syncthreads();

  const int64_t ngroups = (p.M + G - 1) / G;
  for (int64_t rg = blockIdx.x; rg < ngroups; rg += gridDim.x) {
    const int64_t row = rg * G + grp;
    const bool valid = row < p.M;
    const T* x = p.X + (valid ? row : 0) * p.ldx;
    const T* dy = p.dY + (valid ? row : 0) * p.lddy;
    Pack<T> rx[NV], rd[NV];
#pragma unroll
    for (int i = 0; i < NV; ++i) {
      const int v = i * tpr + t;
      if (valid && v < nvec) {
        rx[i] = ld_pack(x + int64_t(v) * VEC);
        rd[i] = ld_pack(dy + int64_t(v) * VEC);
      }
    }
    const A mean = (valid && NORM == Norm::kLayer) ? p.mean[row] : A(0);
    const A rstd = valid ? p.rstd[row] : A(0);
    A c[2] = {0, 0};
#pragma unroll
    for (int i = 0; i < NV; ++i) {
      const int v = i * tpr + t;
      if (valid && v < nvec) {
        PPack<P, VEC> g;
        if (p.gamma) g = *reinterpret_cast<const PPack<P, VEC>*>(p.gamma + v * VEC);
        A dg[VEC], db[VEC];
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          const A xh = (A(dtof(rx[i].v[e])) - mean) * rstd;
          const A d = A(dtof(rd[i].v[e]));
          const A gg = p.gamma ? d * ptoa<A>(g.v[e]) : d;
          c[0] += gg;
          c[1] += gg * xh;
          dg[e] = d * xh;
          db[e] = d;
        }
        if constexpr (ACC_SMEM) {
          if (params) {
#pragma unroll
            for (int e = 0; e < VEC; ++e) {
              acc[v * VEC + e] += dg[e];
              acc[N + v * VEC + e] += db[e];
            }
          }
        } else {
#pragma unroll
          for (int e = 0; e < VEC; ++e) {
            ag[i][e] += dg[e];
            ab[i][e] += db[e];
          }
        }
      }
    }
    if (p.dX) {
      group_sum<2>(c, tpr, red);
      const A c1 = NORM == Norm::kLayer ? c[0] * invN : A(0), c2 = c[1] * invN;
      T* dx = p.dX + (valid ? row : 0) * int64_t(N);
#pragma unroll
      for (int i = 0; i < NV; ++i) {
        const int v = i * tpr + t;
        if (valid && v < nvec) {
          PPack<P, VEC> g;
          if (p.gamma) g = *reinterpret_cast<const PPack<P, VEC>*>(p.gamma + v * VEC);
          Pack<T> o;
#pragma unroll
          for (int e = 0; e < VEC; ++e) {
            const A xh = (A(dtof(rx[i].v[e])) - mean) * rstd;
            const A d = A(dtof(rd[i].v[e]));
            const A gg = p.gamma ? d * ptoa<A>(g.v[e]) : d;
            o.v[e] = dfrom<T>(rstd * (gg - (c1 + xh * c2)));
          }
          *reinterpret_cast<Pack<T>*>(dx + int64_t(v) * VEC) = o;
        }
      }
    }
  }
  if (!params) return;
  A* out = p.partial + int64_t(blockIdx.x) * 2 * N;
  if constexpr (ACC_SMEM) {
    __syncthreads();
    for (int j = threadIdx.x; j < 2 * N; j += blockDim.x) out[j] = acc[j];
  } else {
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
    for (int j = threadIdx.x; j < 2 * N; j += blockDim.x) out[j] = acc[j];
  }
}

// Fallback dX: one CTA per row, scalar, the row re-read.
template <class T, class P, Norm NORM>
__global__ void __launch_bounds__(512) bwd_fallback_dx_kernel(BwdParams<T, P> p) {
  using A = acc_t<T>;
  __shared__ A red[32 * 2];
  const int tpr = blockDim.x, N = p.N;
  const A invN = A(1) / A(N);
  for (int64_t row = blockIdx.x; row < p.M; row += gridDim.x) {
    const T* x = p.X + row * p.ldx;
    const T* dy = p.dY + row * p.lddy;
    const A mean = NORM == Norm::kLayer ? p.mean[row] : A(0), rstd = p.rstd[row];
    A c[2] = {0, 0};
    for (int j = threadIdx.x; j < N; j += tpr) {
      const A xh = (A(dtof(x[j])) - mean) * rstd;
      const A d = A(dtof(dy[j]));
      const A gg = p.gamma ? d * ptoa<A>(p.gamma[j]) : d;
      c[0] += gg;
      c[1] += gg * xh;
    }
    group_sum<2>(c, tpr, red);
    const A c1 = NORM == Norm::kLayer ? c[0] * invN : A(0), c2 = c[1] * invN;
    T* dx = p.dX + row * int64_t(N);
    for (int j = threadIdx.x; j < N; j += tpr) {
      const A xh = (A(dtof(x[j])) - mean) * rstd;
      const A d = A(dtof(dy[j]));
      const A gg = p.gamma ? d * ptoa<A>(p.gamma[j]) : d;
      dx[j] = dfrom<T>(rstd * (gg - (c1 + xh * c2)));
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
  if (j >= p.N) return;
  A sg = 0, sb = 0;
  for (int64_t r = r0; r < r1; ++r) {
    const A mean = NORM == Norm::kLayer ? p.mean[r] : A(0), rstd = p.rstd[r];
    const A xh = (A(dtof(p.X[r * p.ldx + j])) - mean) * rstd;
    const A d = A(dtof(p.dY[r * p.lddy + j]));
    sg += d * xh;
    sb += d;
  }
  A* out = p.partial + int64_t(blockIdx.y) * 2 * p.N;
  out[j] = sg;
  out[p.N + j] = sb;
}

// dgamma[j] = sum_k partial[k][0][j], dbeta[j] = sum_k partial[k][1][j], in a fixed order:
// thread (tx, ty) sums k = ty, ty + 16, ...; then ty = 0 adds the 16 sums in order.
template <class A, class P>
__global__ void __launch_bounds__(512) reduce_partials_kernel(const A* partial, int64_t nparts,
                                                              int N, P* dgamma, P* dbeta) {
  __shared__ A sm[16][2][33];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t j = int64_t(blockIdx.x) * 32 + tx;
  A sg = 0, sb = 0;
  if (j < N)
    for (int64_t k = ty; k < nparts; k += 16) {
      sg += partial[k * 2 * N + j];
      sb += partial[k * 2 * N + N + j];
    }
  sm[ty][0][tx] = sg;
  sm[ty][1][tx] = sb;
  __syncthreads();
  if (ty == 0 && j < N) {
    A g = 0, b = 0;
    for (int i = 0; i < 16; ++i) {
      g += sm[i][0][tx];
      b += sm[i][1][tx];
    }
    if (dgamma) dgamma[j] = dfrom<P>(g);
    if (dbeta) dbeta[j] = dfrom<P>(b);
  }
}

// ---------------------------------------------------------------- host side
int round_up(int v, int m) { return (v + m - 1) / m * m; }
int pow2_ceil(int v) {
  int p = 1;
  while (p < v) p <<= 1;
  return p;
}
int nv_class(int nv) { return nv <= 1 ? 1 : nv <= 2 ? 2 : nv <= 4 ? 4 : 8; }

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

int num_sms(int device) {
  static int cache[64] = {0};
  if (device < 64 && cache[device]) return cache[device];
  int n = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
  if (device < 64) cache[device] = n;
  return n;
}

// A row-group configuration: threads per row, vectors per thread, block size.
struct Config {
  bool reg = false;  // false: fallback path
  int tpr = 0, nv = 0, block = 0;
};

// Forward: NV <= 4 vectors per thread while that fits 1024 threads, then 8.
Config fwd_config(int nvec) {
  Config c;
  if (nvec <= 128) {
    c.tpr = pow2_ceil((nvec + 3) / 4);
    c.nv = nv_class((nvec + c.tpr - 1) / c.tpr);
    c.block = 256;
  } else if ((nvec + 3) / 4 <= 1024) {
    c.tpr = round_up((nvec + 3) / 4, 32);
    c.nv = nv_class((nvec + c.tpr - 1) / c.tpr);
    c.block = c.tpr;
  } else if ((nvec + 7) / 8 <= 1024) {
    c.tpr = round_up((nvec + 7) / 8, 32);
    c.nv = 8;
    c.block = c.tpr;
  } else {
    return c;
  }
  c.reg = true;
  return c;
}

// Backward: small rows (tpr <= 32) keep column sums in registers, several rows per CTA;
// larger rows are one CTA each (tpr <= 512) with column sums in shared memory.
Config bwd_config(int nvec, int N, size_t acc_size) {
  Config c;
  if (nvec <= 128) {
    c.tpr = pow2_ceil((nvec + 3) / 4);
    c.nv = nv_class((nvec + c.tpr - 1) / c.tpr);
    c.block = 512;
  } else if (size_t(2) * N * acc_size > 200 * 1024) {
    return c;
  } else if ((nvec + 3) / 4 <= 512) {
    c.tpr = round_up((nvec + 3) / 4, 32);
    c.nv = nv_class((nvec + c.tpr - 1) / c.tpr);
    c.block = c.tpr;
  } else if ((nvec + 7) / 8 <= 512) {
    c.tpr = round_up((nvec + 7) / 8, 32);
    c.nv = 8;
    c.block = c.tpr;
  } else {
    return c;
  }
  c.reg = true;
  return c;
}

template <class T, class P, int NV>
void launch_fwd_reg(const Config& c, const FwdParams<T, P>& p, cudaStream_t s) {
  const int G = c.block / c.tpr;
  const int64_t grid = (p.M + G - 1) / G;
  TORCH_CHECK(grid < (int64_t(1) << 31), "fastln: too many rows");
  fwd_reg_kernel<T, P, NV, Norm::kLayer><<<unsigned(grid), c.block, 0, s>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <class T, class P, int NV, bool SM>
int64_t launch_bwd_reg(const Config& c, const BwdParams<T, P>& p, int device, cudaStream_t s,
                       bool dry_run) {
  using A = acc_t<T>;
  auto kernel = bwd_reg_kernel<T, P, NV, Norm::kLayer, SM>;
  const size_t smem = size_t(2) * p.N * sizeof(A);
  static bool attr_set = false;  // per instantiation
  if (!attr_set) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        210 * 1024));
    attr_set = true;
  }
  int occ = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kernel, c.block, smem));
  occ = std::max(occ, 1);
  const int G = c.block / c.tpr;
  const int64_t ngroups = (p.M + G - 1) / G;
  const int64_t grid = std::min<int64_t>(ngroups, int64_t(occ) * num_sms(device));
  if (dry_run) return grid;
  kernel<<<unsigned(grid), c.block, smem, s>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return grid;
}

template <class T, class P>
void fwd_cuda(const FwdParams<T, P>& p0, bool vec_ok, cudaStream_t s) {
  FwdParams<T, P> p = p0;
  constexpr int VEC = Pack<T>::n;
  Config c = vec_ok ? fwd_config(p.N / VEC) : Config{};
  if (c.reg) {
    p.tpr = c.tpr;
    switch (c.nv) {
      case 1: return launch_fwd_reg<T, P, 1>(c, p, s);
      case 2: return launch_fwd_reg<T, P, 2>(c, p, s);
      case 4: return launch_fwd_reg<T, P, 4>(c, p, s);
      default: return launch_fwd_reg<T, P, 8>(c, p, s);
    }
  }
  const int block = p.N >= 4096 ? 512 : p.N >= 512 ? 128 : 32;
  p.tpr = block;
  const int64_t grid = std::min<int64_t>(p.M, int64_t(1) << 30);
  fwd_fallback_kernel<T, P, Norm::kLayer><<<unsigned(grid), block, 0, s>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <class T, class P>
void bwd_cuda(const BwdParams<T, P>& p0, bool vec_ok, P* dgamma, P* dbeta, bool params,
              int device, cudaStream_t s) {
  using A = acc_t<T>;
  BwdParams<T, P> p = p0;
  constexpr int VEC = Pack<T>::n;
  Config c = vec_ok ? bwd_config(p.N / VEC, p.N, sizeof(A)) : Config{};
  at::Tensor partial;
  int64_t nparts = 0;
  if (c.reg) {
    p.tpr = c.tpr;
    const bool sm = c.tpr >= 32 && c.block == c.tpr && c.tpr > 32;
    auto go = [&](bool dry) -> int64_t {
      if (sm) {
        switch (c.nv) {
          case 1: return launch_bwd_reg<T, P, 1, true>(c, p, device, s, dry);
          case 2: return launch_bwd_reg<T, P, 2, true>(c, p, device, s, dry);
          case 4: return launch_bwd_reg<T, P, 4, true>(c, p, device, s, dry);
          default: return launch_bwd_reg<T, P, 8, true>(c, p, device, s, dry);
        }
      }
      switch (c.nv) {
        case 1: return launch_bwd_reg<T, P, 1, false>(c, p, device, s, dry);
        case 2: return launch_bwd_reg<T, P, 2, false>(c, p, device, s, dry);
        default: return launch_bwd_reg<T, P, 4, false>(c, p, device, s, dry);
      }
    };
    if (params) {
      nparts = go(true);
      partial = at::empty({nparts, 2, p.N},
                          at::TensorOptions().device(at::kCUDA, device).dtype(
                              std::is_same_v<A, double> ? at::kDouble : at::kFloat));
      p.partial = reinterpret_cast<A*>(partial.data_ptr());
    }
    go(false);
  } else {
    if (p.dX) {
      const int block = p.N >= 4096 ? 512 : p.N >= 512 ? 128 : 32;
      p.tpr = block;
      const int64_t grid = std::min<int64_t>(p.M, int64_t(1) << 30);
      bwd_fallback_dx_kernel<T, P, Norm::kLayer><<<unsigned(grid), block, 0, s>>>(p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (params) {
      nparts = std::min<int64_t>(p.M, std::max<int64_t>(1, 4 * num_sms(device) / ((p.N + 255) / 256)));
      nparts = std::max<int64_t>(nparts, 1);
      partial = at::empty({nparts, 2, p.N},
                          at::TensorOptions().device(at::kCUDA, device).dtype(
                              std::is_same_v<A, double> ? at::kDouble : at::kFloat));
      p.partial = reinterpret_cast<A*>(partial.data_ptr());
      dim3 grid(unsigned((p.N + 255) / 256), unsigned(nparts));
      bwd_fallback_cols_kernel<T, P, Norm::kLayer><<<grid, 256, 0, s>>>(p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  }
  if (params) {
    dim3 block(32, 16), grid(unsigned((p.N + 31) / 32));
    reduce_partials_kernel<A, P><<<grid, block, 0, s>>>(p.partial, nparts, p.N, dgamma, dbeta);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

at::ScalarType param_dtype(const at::Tensor& input, const at::Tensor& gamma, const at::Tensor& beta) {
  return gamma.defined() ? gamma.scalar_type() : beta.defined() ? beta.scalar_type() : input.scalar_type();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_fwd_cuda(
    const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias, double eps) {
  const auto s = check_norm_args("fastln.layer_norm", input, C10_AS_INTARRAYREF_SLOW(normalized_shape),
                                 weight, bias, eps);
  const c10::cuda::CUDAGuard guard(input.device());
  at::Tensor Y = at::empty(input.sizes(), input.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor mean = at::empty(stat_shape(input, s.axis), input.options().dtype(acc_dtype(input.scalar_type())));
  at::Tensor rstd = at::empty_like(mean);
  if (s.M == 0) return {Y, mean, rstd};
  if (s.N == 0) {  // as the CPU kernel: mean 0, var 0/0
    mean.zero_();
    rstd.fill_(std::numeric_limits<double>::quiet_NaN());
    return {Y, mean, rstd};
  }
  TORCH_CHECK(s.N < (int64_t(1) << 31), "fastln: normalized size too large for the CUDA kernels");
  const Rows X = as_rows(input, s.M, s.N);
  const at::Tensor gamma = contiguous_param(weight), beta = contiguous_param(bias);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_types(input.scalar_type(), param_dtype(input, gamma, beta), [&]<class T, class P>() {
    constexpr int VEC = Pack<T>::n;
    const bool vec_ok = s.N % VEC == 0 && X.ld % VEC == 0 && aligned16(X.t.data_ptr()) &&
                        (!gamma.defined() || aligned16(gamma.data_ptr())) &&
                        (!beta.defined() || aligned16(beta.data_ptr())) && aligned16(Y.data_ptr());
    FwdParams<T, P> p{ptr<const T>(X.t), X.ld, ptr<const P>(gamma), ptr<const P>(beta), ptr<T>(Y),
                      ptr<acc_t<T>>(mean), ptr<acc_t<T>>(rstd), s.M, int(s.N), 0, eps};
    fwd_cuda<T, P>(p, vec_ok, stream);
  });
  return {Y, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_bwd_cuda(
    const at::Tensor& grad_out, const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
    const at::Tensor& mean, const at::Tensor& rstd, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, std::array<bool, 3> output_mask) {
  const char* op = "fastln.layer_norm_bwd";
  const auto ns = C10_AS_INTARRAYREF_SLOW(normalized_shape);
  const auto s = check_norm_args(op, input, ns, weight, bias, 0.0);
  TORCH_CHECK(grad_out.sizes() == input.sizes() && grad_out.scalar_type() == input.scalar_type() &&
                  grad_out.device() == input.device(),
              op, ": expected grad_out like input (", input.sizes(), ", ", input.scalar_type(),
              "), got ", grad_out.sizes(), ", ", grad_out.scalar_type(), " on ", grad_out.device());
  const auto acc = acc_dtype(input.scalar_type());
  for (const at::Tensor* t : {&mean, &rstd})
    TORCH_CHECK(t->numel() == s.M && t->scalar_type() == acc && t->device() == input.device(), op,
                ": expected mean and rstd of ", s.M, " elements of dtype ", acc, ", got ",
                t->sizes(), " of dtype ", t->scalar_type());
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor gamma = contiguous_param(weight);
  const auto pdtype = param_dtype(input, gamma, contiguous_param(bias));
  const auto opts = input.options().memory_format(at::MemoryFormat::Contiguous);
  at::Tensor dX = output_mask[0] ? at::empty(input.sizes(), opts) : at::empty({0}, opts);
  at::Tensor dgamma = output_mask[1] ? at::empty(ns, opts.dtype(pdtype)) : at::empty({0}, opts.dtype(pdtype));
  at::Tensor dbeta = output_mask[2] ? at::empty(ns, opts.dtype(pdtype)) : at::empty({0}, opts.dtype(pdtype));
  const bool params = output_mask[1] || output_mask[2];
  if (s.N == 0) return {dX, dgamma, dbeta};
  if (s.M == 0) {
    if (output_mask[1]) dgamma.zero_();
    if (output_mask[2]) dbeta.zero_();
    return {dX, dgamma, dbeta};
  }
  if (!output_mask[0] && !params) return {dX, dgamma, dbeta};
  TORCH_CHECK(s.N < (int64_t(1) << 31), op, ": normalized size too large for the CUDA kernels");
  const Rows X = as_rows(input, s.M, s.N), dY = as_rows(grad_out, s.M, s.N);
  const at::Tensor mean_c = mean.contiguous(), rstd_c = rstd.contiguous();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int device = input.get_device();
  dispatch_types(input.scalar_type(), pdtype, [&]<class T, class P>() {
    constexpr int VEC = Pack<T>::n;
    const bool vec_ok = s.N % VEC == 0 && X.ld % VEC == 0 && dY.ld % VEC == 0 &&
                        aligned16(X.t.data_ptr()) && aligned16(dY.t.data_ptr()) &&
                        (!gamma.defined() || aligned16(gamma.data_ptr())) &&
                        (!output_mask[0] || aligned16(dX.data_ptr()));
    BwdParams<T, P> p{ptr<const T>(dY.t), dY.ld, ptr<const T>(X.t), X.ld,
                      ptr<const acc_t<T>>(mean_c), ptr<const acc_t<T>>(rstd_c),
                      ptr<const P>(gamma), output_mask[0] ? ptr<T>(dX) : nullptr, nullptr,
                      s.M, int(s.N), 0};
    bwd_cuda<T, P>(p, vec_ok, output_mask[1] ? ptr<P>(dgamma) : nullptr,
                   output_mask[2] ? ptr<P>(dbeta) : nullptr, params, device, stream);
  });
  return {dX, dgamma, dbeta};
}

}  // namespace cuda_impl

TORCH_LIBRARY_IMPL(fastln, CUDA, m) {
  m.impl("layer_norm_fwd", &cuda_impl::layer_norm_fwd_cuda);
  m.impl("layer_norm_bwd", &cuda_impl::layer_norm_bwd_cuda);
}

}  // namespace fastln

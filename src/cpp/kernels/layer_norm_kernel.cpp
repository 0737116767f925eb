// LayerNorm / RMSNorm row kernels. CMake compiles this file once per ISA (base, avx2,
// avx512), each build in its own namespace fastln::FASTLN_ISA; dispatch.cpp picks one at
// run time.
#include <algorithm>
#include <cmath>

#include "vec.h"

namespace fastln {
namespace FASTLN_ISA {
namespace {

// Long rows are summed in chunks: float vector accumulators within a chunk, the chunk sums
// carried in double. Accurate for any row length at no measurable cost.
constexpr int64_t kChunk = 2048;

// body(j, n) for each vector [j, j + n) of [begin, end); n == W but for a last partial one.
// With n a constant in the main loop, the n == W tests in ld/st below fold away.
template <class A, class Body>
inline void for_each_vec(int64_t begin, int64_t end, Body&& body) {
  constexpr int64_t W = V<A>::W;
  int64_t j = begin;
  for (; j + W <= end; j += W) body(j, W);
  if (j < end) body(j, end - j);
}

template <class A, class U>
inline typename V<A>::type ld(const U* p, int64_t n) {
  return n == V<A>::W ? load<A>(p) : load_n<A>(p, n);
}

template <class A, class U>
inline void st(U* p, typename V<A>::type v, int64_t n) {
  if (n == V<A>::W) store<A>(p, v); else store_n<A>(p, v, n);
}

// sum_j f(x_j) over a row of N elements.
template <class A, class T, class F>
double row_sum(const T* x, int64_t N, F f) {
  using Vt = typename V<A>::type;
  constexpr int64_t W = V<A>::W;
  double total = 0;
  for (int64_t c = 0; c < N; c += kChunk) {
    const int64_t e = std::min(N, c + kChunk);
    Vt s0{}, s1{}, s2{}, s3{};  // four chains keep the adders busy
    int64_t j = c;
    for (; j + 4 * W <= e; j += 4 * W) {
      s0 += f(load<A>(x + j));
      s1 += f(load<A>(x + j + W));
      s2 += f(load<A>(x + j + 2 * W));
      s3 += f(load<A>(x + j + 3 * W));
    }
    for (; j + W <= e; j += W) s0 += f(load<A>(x + j));
    if (j < e) s0 += keep_first<A>(f(load_n<A>(x + j, e - j)), int(e - j));
    total += double(hsum<A>((s0 + s1) + (s2 + s3)));
  }
  return total;
}

template <class T, class P>
void forward_row(const ForwardArgs<T, P>& a, int64_t i) {
  using A = acc_t<T>;
  using Vt = typename V<A>::type;
  const int64_t N = a.N;
  const T* x = a.X + i * a.ldx;
  T* y = a.Y + i * N;

  // mean = x0 + sum(x - x0) / N (0 for RMSNorm); var = sum((x - mean)^2) / N;
  // rstd = 1 / sqrt(var + eps). Two passes over a row that is in cache, and the mean's sum
  // shifted by the row's first element: rows far from zero keep full precision.
  A mean = 0;
  if (a.norm == Norm::kLayer && N > 0) {
    const A x0 = to_float(x[0]);
    const Vt vx0 = splat<A>(x0);
    mean = A(double(x0) + row_sum<A>(x, N, [&](Vt v) { return v - vx0; }) / double(N));
  }
  const Vt vmean = splat<A>(mean);
  const double var = row_sum<A>(x, N, [&](Vt v) { const Vt d = v - vmean; return d * d; }) / double(N);
  const A rstd = A(1.0 / std::sqrt(var + a.eps));
  a.mean[i] = mean;
  a.rstd[i] = rstd;

  // y = (x - mean) * (rstd * gamma) + beta
  const Vt vrstd = splat<A>(rstd);
  for_each_vec<A>(0, N, [&](int64_t j, int64_t n) {
    Vt scale = vrstd;
    if (a.gamma) scale *= ld<A>(a.gamma + j, n);
    Vt out = (ld<A>(x + j, n) - vmean) * scale;
    if (a.beta) out += ld<A>(a.beta + j, n);
    st<A>(y + j, out, n);
  });
}

template <class T, class P>
void backward_row(const BackwardArgs<T, P>& a, int64_t i, acc_t<T>* pgamma, acc_t<T>* pbeta) {
  using A = acc_t<T>;
  using Vt = typename V<A>::type;
  const int64_t N = a.N;
  const T* x = a.X + i * a.ldx;
  const T* dy = a.dY + i * a.lddy;
  const Vt vmean = splat<A>(a.norm == Norm::kLayer ? a.mean[i] : A(0));
  const A rstd = a.rstd[i];
  const Vt vrstd = splat<A>(rstd);

  // xhat = (x - mean) * rstd, g = dy * gamma
  // c1 = sum(g), c2 = sum(g * xhat); partial dgamma += dy * xhat, partial dbeta += dy
  double c1 = 0, c2 = 0;
  for (int64_t c = 0; c < N; c += kChunk) {
    Vt s1{}, s2{};
    for_each_vec<A>(c, std::min(N, c + kChunk), [&](int64_t j, int64_t n) {
      const Vt vdy = ld<A>(dy + j, n);
      const Vt xhat = (ld<A>(x + j, n) - vmean) * vrstd;
      const Vt g = a.gamma ? vdy * ld<A>(a.gamma + j, n) : vdy;
      s1 += g;
      s2 += keep_first<A>(g * xhat, int(n));  // xhat of a zero pad is -mean * rstd
      if (pgamma) {
        st<A>(pgamma + j, ld<A>(pgamma + j, n) + vdy * xhat, n);
        st<A>(pbeta + j, ld<A>(pbeta + j, n) + vdy, n);
      }
    });
    c1 += double(hsum<A>(s1));
    c2 += double(hsum<A>(s2));
  }
  if (!a.dX) return;

  // dx = rstd * (g - (c1 + xhat * c2) / N); RMSNorm has no c1 term (no mean was subtracted).
  const Vt vc1 = splat<A>(a.norm == Norm::kLayer ? A(c1 / double(N)) : A(0));
  const Vt vc2 = splat<A>(A(c2 / double(N)));
  T* dx = a.dX + i * N;
  for_each_vec<A>(0, N, [&](int64_t j, int64_t n) {
    const Vt vdy = ld<A>(dy + j, n);
    const Vt xhat = (ld<A>(x + j, n) - vmean) * vrstd;
    const Vt g = a.gamma ? vdy * ld<A>(a.gamma + j, n) : vdy;
    st<A>(dx + j, vrstd * (g - vc1 - xhat * vc2), n);
  });
}

}  // namespace

template <class T, class P>
void forward(const ForwardArgs<T, P>& a, int64_t row_begin, int64_t row_end) {
  for (int64_t i = row_begin; i < row_end; ++i) forward_row(a, i);
}

template <class T, class P>
void backward_blocks(const BackwardArgs<T, P>& a, const BlockPlan& plan, int64_t block_begin,
                     int64_t block_end) {
  using A = acc_t<T>;
  for (int64_t b = block_begin; b < block_end; ++b) {
    A* pgamma = a.partial ? a.partial + b * 2 * a.N : nullptr;
    A* pbeta = pgamma ? pgamma + a.N : nullptr;
    if (pgamma) std::fill(pgamma, pgamma + 2 * a.N, A(0));
    const int64_t r0 = b * plan.rows_per_block, r1 = std::min(a.M, r0 + plan.rows_per_block);
    for (int64_t i = r0; i < r1; ++i) backward_row(a, i, pgamma, pbeta);
  }
}

template <class T, class P>
void reduce_partials(const acc_t<T>* partial, int64_t nblocks, int64_t N, P* dgamma, P* dbeta,
                     int64_t col_begin, int64_t col_end) {
  using A = acc_t<T>;
  using Vt = typename V<A>::type;
  for_each_vec<A>(col_begin, col_end, [&](int64_t j, int64_t n) {
    Vt sg{}, sb{};
    for (int64_t b = 0; b < nblocks; ++b) {
      sg += ld<A>(partial + b * 2 * N + j, n);
      sb += ld<A>(partial + b * 2 * N + N + j, n);
    }
    if (dgamma) st<A>(dgamma + j, sg, n);
    if (dbeta) st<A>(dbeta + j, sb, n);
  });
}

FASTLN_FOR_EACH_TYPE_PAIR(FASTLN_INSTANTIATE_KERNELS)

}  // namespace FASTLN_ISA
}  // namespace fastln

// LayerNorm / RMSNorm row kernels. CMake compiles this file once per ISA (base, avx2,
// avx512), each build in its own namespace fastln::FASTLN_ISA; dispatch.cpp picks one at
// run time.
#include <algorithm>
#include <array>
#include <cmath>
#include <type_traits>
#include <utility>
#include <vector>

#include "vec.h"

namespace fastln {
namespace FASTLN_ISA {
namespace {

// Rows are summed in chunks of kChunk elements (see row_sums). Accurate for any row length
// at no measurable cost.
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

template <class A, class U, bool kStream = false>
inline void st(U* p, typename V<A>::type v, int64_t n) {
  if (n == V<A>::W) store<A, U, kStream>(p, v); else store_n<A>(p, v, n);
}

// Whether the full vectors of a row at p can be stored non-temporally (aligned).
template <class A, class U>
inline bool stream_aligned(const U* p) {
  return reinterpret_cast<uintptr_t>(p) % (V<A>::W * sizeof(U)) == 0;
}

// f(integral_constant<int, 0>), ..., f(integral_constant<int, R - 1>). Arrays of vector
// accumulators indexed by a loop variable stay in memory (GCC scalarizes aggregates before it
// unrolls loops), which put a store-to-load round trip into every add: constant indices keep
// them in registers (float forward 1.15-1.25x faster on rows in cache, docs/cpu.md).
template <int R, class F>
inline void unroll(F&& f) {
  [&]<int... r>(std::integer_sequence<int, r...>) {
    (f(std::integral_constant<int, r>{}), ...);
  }(std::make_integer_sequence<int, R>{});
}

// The K sums of terms over a row of N elements: terms(v, n, s) adds to s[0..K) the terms of
// vector v, whose first n lanes are row elements (the others zero pads, to be masked).
// Long rows are summed in chunks: float vector accumulators within a chunk, the chunk sums
// carried in double.
template <class A, int K, class T, class Terms>
std::array<double, K> row_sums(const T* x, int64_t N, Terms terms) {
  using Vt = typename V<A>::type;
  constexpr int64_t W = V<A>::W;
  std::array<double, K> total{};
  for (int64_t c = 0; c < N; c += kChunk) {
    const int64_t e = std::min(N, c + kChunk);
    std::array<Vt, K> s[4] = {};  // four chains keep the adders busy
    int64_t j = c;
    for (; j + 4 * W <= e; j += 4 * W)
      unroll<4>([&](auto u) { terms(load<A>(x + j + u * W), int(W), s[u]); });
    for (; j + W <= e; j += W) terms(load<A>(x + j), int(W), s[0]);
    if (j < e) terms(load_n<A>(x + j, e - j), int(e - j), s[0]);
    unroll<K>([&](auto k) { total[k] += double(hsum<A>((s[0][k] + s[1][k]) + (s[2][k] + s[3][k]))); });
  }
  return total;
}

// f(true_type) or f(false_type): a run-time flag as a template argument.
template <class F>
inline void with_flag(bool b, F&& f) {
  if (b) f(std::true_type{}); else f(std::false_type{});
}

// The weight: offset + gamma (zero-centred gamma). Where the offset is 0 the kernels take
// kOffset = false, which adds nothing: the add cost bf16 backward 7% on rows in cache (Zen 4),
// and +0 + -0 is +0, so an added 0 would not even keep the bits of a gamma of -0.
template <bool kOffset, class Vt>
inline Vt weight(Vt voffset, Vt gamma) {
  if constexpr (kOffset) return voffset + gamma; else return gamma;
}

// y = (x - mean) * (rstd * (offset + gamma)) + beta over one row. Arguments by value: the
// stores (memcpy) may alias anything in memory, so pointers read through a reference would be
// reloaded at every vector.
template <class A, bool kStream, bool kOffset, class T, class P>
void normalize_row(const T* x, T* y, const P* gamma, const P* beta, typename V<A>::type vmean,
                   typename V<A>::type vrstd, typename V<A>::type voffset, int64_t N) {
  using Vt = typename V<A>::type;
  for_each_vec<A>(0, N, [&](int64_t j, int64_t n) {
    Vt scale = vrstd;
    if (gamma) scale *= weight<kOffset>(voffset, ld<A>(gamma + j, n));
    Vt out = (ld<A>(x + j, n) - vmean) * scale;
    if (beta) out += ld<A>(beta + j, n);
    st<A, T, kStream>(y + j, out, n);
  });
}

// A row's mean (0 for RMSNorm) and rstd.
template <class A>
struct RowStats {
  A mean, rstd;
};

// The moments of the row at x about its first element x0: d = sum(x - x0) / N and
// m2 = sum((x - x0)^2) / N in one pass, so mean = x0 + d and var = m2 - d^2. The shift keeps rows
// far from zero exact; the subtraction loses no more than ~3 bits while d^2 <= 8 var, i.e. unless
// x0 is an outlier of its row: then (rarely) a second pass sums (x - mean)^2. RMSNorm: mean = 0,
// var = sum(x^2) / N.
template <class T, class P>
RowStats<acc_t<T>> row_stats(const ForwardArgs<T, P>& a, const T* x) {
  using A = acc_t<T>;
  using Vt = typename V<A>::type;
  const int64_t N = a.N;
  A mean = 0;
  double var = 0;
  const Vt vx0 = splat<A>(a.norm == Norm::kLayer && N > 0 ? to_float(x[0]) : A(0));
  const auto m = row_sums<A, 2>(x, N, [&](Vt v, int n, auto& s) {
    Vt d = v - vx0;
    if (n < V<A>::W) d = keep_first<A>(d, n);
    s[0] += d;
    s[1] += d * d;
  });
  if (N > 0 && a.norm == Norm::kRms) {
    var = m[1] / double(N);
  } else if (N > 0) {
    const double d = m[0] / double(N);
    mean = A(double(vx0[0]) + d);
    var = m[1] / double(N) - d * d;
    if (!(d * d <= 8 * var)) {  // also NaN
      const Vt vm = splat<A>(mean);
      var = row_sums<A, 1>(x, N, [&](Vt v, int n, auto& s) {
        Vt e = v - vm;
        if (n < V<A>::W) e = keep_first<A>(e, n);
        s[0] += e * e;
      })[0] / double(N);
    }
  }
  if (!std::isfinite(var) || !std::isfinite(mean)) {
    // Float partial sums overflowed (values near FLT_MAX), or the row holds Inf/NaN: redo the
    // moments in double. Finite rows get the right answer; Inf/NaN rows still give NaN.
    double sum = 0, sq = 0;
    if (a.norm == Norm::kLayer)
      for (int64_t j = 0; j < N; ++j) sum += double(to_float(x[j]));
    const double md = N > 0 ? sum / double(N) : 0.0;
    for (int64_t j = 0; j < N; ++j) {
      const double e = double(to_float(x[j])) - md;
      sq += e * e;
    }
    mean = A(md);
    var = N > 0 ? sq / double(N) : var;
  }
  return {mean, A(1.0 / std::sqrt(var + a.eps))};
}

// Row i's output from its stats: mean and rstd stored, y = (x - mean) * (rstd * gamma) + beta.
template <class T, class P>
void write_row(const ForwardArgs<T, P>& a, int64_t i, const T* x, RowStats<acc_t<T>> st) {
  using A = acc_t<T>;
  T* y = a.Y + i * a.N;
  a.mean[i] = st.mean;
  a.rstd[i] = st.rstd;
  const auto voffset = splat<A>(A(a.weight_offset));
  with_flag(a.stream && stream_aligned<A>(y), [&](auto stream) {
    with_flag(a.gamma && a.weight_offset != 0, [&](auto offset) {
      normalize_row<A, stream(), offset()>(x, y, a.gamma, a.beta, splat<A>(st.mean), splat<A>(st.rstd), voffset, a.N);
    });
  });
}

// Rows [i0, i0 + R) of the forward, without the residual add: the R rows' stats first, then
// their outputs. A row's stats end in a chain of ~100 cycles (horizontal sums, double division,
// sqrt, division) that its output pass waits for; one row at a time, that pass's waiting
// instructions filled the scheduler ahead of the next row's loads, and short rows ran at the
// chain's pace. Each row's arithmetic is forward_row's: the same bits.
template <int R, class T, class P>
void forward_rows(const ForwardArgs<T, P>& a, int64_t i0) {
  RowStats<acc_t<T>> st[R];
  unroll<R>([&](auto r) { st[r] = row_stats(a, a.X + (i0 + r) * a.ldx); });
  unroll<R>([&](auto r) { write_row(a, i0 + r, a.X + (i0 + r) * a.ldx, st[r]); });
}

// Rows [i0, i0 + R) of the backward. The first pass takes the R rows together, so that gamma
// and the block's partial sums are loaded (and the partials stored) once for R rows: 3.25
// instead of 7 loads and stores per element for R = 4.
template <int R, bool kOffset, class T, class P>
void backward_rows(const BackwardArgs<T, P>& a, int64_t i0, acc_t<T>* pgamma, acc_t<T>* pbeta) {
  using A = acc_t<T>;
  using Vt = typename V<A>::type;
  const int64_t N = a.N;
  const T *x[R], *dy[R];
  Vt vmean[R], vrstd[R];
  for (int r = 0; r < R; ++r) {
    x[r] = a.X + (i0 + r) * a.ldx;
    dy[r] = a.dY + (i0 + r) * a.lddy;
    vmean[r] = splat<A>(a.norm == Norm::kLayer ? a.mean[i0 + r] : A(0));
    vrstd[r] = splat<A>(a.rstd[i0 + r]);
  }
  const Vt voffset = splat<A>(A(a.weight_offset));

  // xhat = (x - mean) * rstd, g = dy * (offset + gamma)
  // c1 = sum(g), c2 = sum(g * xhat) per row; partial dgamma += sum_r dy * xhat, dbeta += sum_r dy
  double c1[R] = {}, c2[R] = {};
  for (int64_t c = 0; c < N; c += kChunk) {
    Vt s1[R] = {}, s2[R] = {};
    for_each_vec<A>(c, std::min(N, c + kChunk), [&](int64_t j, int64_t n) {
      const Vt vgamma = a.gamma ? weight<kOffset>(voffset, ld<A>(a.gamma + j, n)) : splat<A>(A(1));
      Vt dg{}, db{};
      for (int r = 0; r < R; ++r) {
        const Vt vdy = ld<A>(dy[r] + j, n);
        const Vt xhat = (ld<A>(x[r] + j, n) - vmean[r]) * vrstd[r];
        const Vt g = vdy * vgamma;
        s1[r] += g;
        s2[r] += keep_first<A>(g * xhat, int(n));  // xhat of a zero pad is -mean * rstd
        dg += vdy * xhat;
        db += vdy;
      }
      if (pgamma) {
        st<A>(pgamma + j, ld<A>(pgamma + j, n) + dg, n);
        st<A>(pbeta + j, ld<A>(pbeta + j, n) + db, n);
      }
    });
    for (int r = 0; r < R; ++r) {
      c1[r] += double(hsum<A>(s1[r]));
      c2[r] += double(hsum<A>(s2[r]));
    }
  }
  if (!a.dX) return;

  // dx = rstd * (g - (c1 + xhat * c2) / N); RMSNorm has no c1 term (no mean was subtracted).
  // A row at a time: the stores of R interleaved rows collide in the store buffer with the
  // loads of the next rows (4K aliasing: 2.4x slower at fp32 N = 256).
  for (int r = 0; r < R; ++r) {
    const Vt vc1 = splat<A>(a.norm == Norm::kLayer ? A(c1[r] / double(N)) : A(0));
    const Vt vc2 = splat<A>(A(c2[r] / double(N)));
    const Vt m = vmean[r], rs = vrstd[r];
    const T *xr = x[r], *dyr = dy[r];
    const P* gamma = a.gamma;
    T* dx = a.dX + (i0 + r) * N;
    auto write = [&]<bool kStream>() {
      for_each_vec<A>(0, N, [&](int64_t j, int64_t n) {
        const Vt xhat = (ld<A>(xr + j, n) - m) * rs;
        const Vt g = gamma ? ld<A>(dyr + j, n) * weight<kOffset>(voffset, ld<A>(gamma + j, n)) : ld<A>(dyr + j, n);
        st<A, T, kStream>(dx + j, rs * (g - vc1 - xhat * vc2), n);
      });
    };
    if (a.stream && stream_aligned<A>(dx)) write.template operator()<true>();
    else write.template operator()<false>();
  }
}

// One row (and the fused residual add). A row alone is latency-bound (its stats' chain, then its
// output pass), so every call is inlined: through calls (row_stats' result packed and unpacked,
// a stack realigned) a row took 3-10 % longer (session 36, fastln_kernel_bench and e2e).
template <class T, class P>
[[gnu::flatten]] void forward_row(const ForwardArgs<T, P>& a, int64_t i) {
  using A = acc_t<T>;
  const T* x = a.X + i * a.ldx;
  if (a.R) {  // fused residual add: normalize s = x + r, read back while in cache
    T* s = a.S + i * a.N;
    const T* r = a.R + i * a.ldr;
    for_each_vec<A>(0, a.N, [&](int64_t j, int64_t n) { st<A>(s + j, ld<A>(x + j, n) + ld<A>(r + j, n), n); });
    x = s;
  }
  write_row(a, i, x, row_stats(a, x));
}

// Rows [row_begin, row_end), four at a time where that pays: 16-bit rows of up to 1024
// elements without the residual add, whose conversions lengthen each row's chain. Measured e2e at
// 2 threads against row by row (session 36, alternating processes, min / median; data in
// docs/journal/data/2026-12-08-cpu-u): bf16 N = 128 1.33x / 1.32x, 256 1.20x / 1.21x, 512 1.10x /
// 1.14x, 768 1.07x / 1.03x, 1024 1.07x / 1.10x; fp16 1.20x / 1.19x, 1.18x / 1.15x, 1.07x / 1.06x,
// 1.04x / 0.99x, 1.04x / 1.07x. Not: 16-bit rows of 2048 (1.00-1.02x); the fused add (bf16
// (8192, 768) 0.85x: four rows' sums written, then read back); float rows (level or up to 1.10x
// below N = 512, 0.85x at 768 and 2048, and sensitive to code layout).
constexpr int kFwdGroup = 4;
constexpr int64_t kFwdGroupMaxN = 1024;

template <class T, class P>
void forward_range(const ForwardArgs<T, P>& a, int64_t row_begin, int64_t row_end) {
  int64_t i = row_begin;
  if (sizeof(T) == 2 && !a.R && a.N <= kFwdGroupMaxN)
    for (; i + kFwdGroup <= row_end; i += kFwdGroup) forward_rows<kFwdGroup>(a, i);
  for (; i < row_end; ++i) forward_row(a, i);
}

}  // namespace

template <class T, class P>
void forward(const ForwardArgs<T, P>& a, int64_t row_begin, int64_t row_end) {
  if constexpr (sizeof(P) == 2) {
    // 16-bit parameters are widened to float once per range of rows, not at every row: two
    // conversions fewer per vector (bf16 forward 1.05-1.1x, docs/cpu.md). Exact: every 16-bit
    // value is a float, and the rows are computed in float either way. The weight offset is
    // folded in here: the float sum the row kernel would form.
    if (row_end - row_begin > 1) {
      std::vector<float> w(a.gamma ? a.N : 0), b(a.beta ? a.N : 0);
      for (int64_t j = 0; j < int64_t(w.size()); ++j) w[j] = to_float(a.gamma[j]);
      if (a.weight_offset != 0)
        for (int64_t j = 0; j < int64_t(w.size()); ++j) w[j] += float(a.weight_offset);
      for (int64_t j = 0; j < int64_t(b.size()); ++j) b[j] = to_float(a.beta[j]);
      const ForwardArgs<T, float> f{a.X,    a.ldx,  a.gamma ? w.data() : nullptr, a.beta ? b.data() : nullptr,
                                    a.Y,    a.mean, a.rstd, a.N, a.eps, a.norm, a.R, a.ldr, a.S, a.stream,
                                    /*weight_offset: in w*/ 0.0};
      forward_range(f, row_begin, row_end);
      if (a.stream) stream_fence();
      return;
    }
  }
  forward_range(a, row_begin, row_end);
  if (a.stream) stream_fence();
}

template <class T, class P>
void backward_blocks(const BackwardArgs<T, P>& a, const BlockPlan& plan, int64_t block_begin,
                     int64_t block_end) {
  using A = acc_t<T>;
  with_flag(a.gamma && a.weight_offset != 0, [&](auto offset) {
    for (int64_t b = block_begin; b < block_end; ++b) {
      A* pgamma = a.partial ? a.partial + b * 2 * a.N : nullptr;
      A* pbeta = pgamma ? pgamma + a.N : nullptr;
      if (pgamma) std::fill(pgamma, pgamma + 2 * a.N, A(0));
      const int64_t r0 = b * plan.rows_per_block, r1 = std::min(a.M, r0 + plan.rows_per_block);
      // Rows of 4 KB and more in groups of 4; shorter rows one by one, which reads x and dy as
      // two continuous streams: 4 rows of 1 KB interleaved defeat the prefetcher (1.6x slower).
      int64_t i = r0;
      if (a.N * int64_t(sizeof(T)) >= 4096)
        for (; i + 4 <= r1; i += 4) backward_rows<4, offset()>(a, i, pgamma, pbeta);
      for (; i < r1; ++i) backward_rows<1, offset()>(a, i, pgamma, pbeta);
    }
  });
  if (a.stream) stream_fence();
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

// Every kernel build (ISA) this CPU runs, for every (T, P) pair, against a plain
// double-precision reference.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include "layer_norm.h"

using namespace fastln;

namespace {

// ---- the reference: the textbook formulas, summed in long double ----
struct Reference {
  std::vector<double> Y, mean, rstd, dX, dgamma, dbeta;
};

// weight_offset: the weight is weight_offset + gamma (with gamma only).
Reference reference(const std::vector<double>& X, const std::vector<double>& dY,
                    const std::vector<double>* gamma, const std::vector<double>* beta, int64_t M,
                    int64_t N, double eps, Norm norm, double weight_offset = 0) {
  Reference r;
  r.Y.resize(M * N), r.dX.resize(M * N), r.mean.resize(M), r.rstd.resize(M);
  r.dgamma.assign(N, 0.0), r.dbeta.assign(N, 0.0);
  for (int64_t i = 0; i < M; ++i) {
    const double* x = &X[i * N];
    const double* dy = &dY[i * N];
    long double sum = 0, var = 0;
    if (norm == Norm::kLayer)
      for (int64_t j = 0; j < N; ++j) sum += x[j];
    const double mean = double(sum / N);
    for (int64_t j = 0; j < N; ++j) var += (x[j] - (long double)mean) * (x[j] - (long double)mean);
    const double rstd = double(1.0L / std::sqrt(var / N + eps));
    r.mean[i] = mean, r.rstd[i] = rstd;
    double c1 = 0, c2 = 0;
    for (int64_t j = 0; j < N; ++j) {
      const double xhat = (x[j] - mean) * rstd, g = gamma ? weight_offset + (*gamma)[j] : 1.0;
      r.Y[i * N + j] = xhat * g + (beta ? (*beta)[j] : 0.0);
      c1 += dy[j] * g, c2 += dy[j] * g * xhat;
      r.dgamma[j] += dy[j] * xhat, r.dbeta[j] += dy[j];
    }
    if (norm == Norm::kRms) c1 = 0;
    for (int64_t j = 0; j < N; ++j) {
      const double xhat = (x[j] - mean) * rstd, g = gamma ? weight_offset + (*gamma)[j] : 1.0;
      r.dX[i * N + j] = rstd * (dy[j] * g - c1 / N - xhat * c2 / N);
    }
  }
  return r;
}

template <class T> T to(double v) {
  if constexpr (std::is_same_v<T, double>) return v;
  else return from_float<T>(float(v));
}
template <class T> double back(T v) { return double(to_float(v)); }

// Tolerance on values of order one: a few units in the last place of the storage type.
template <class T> double tol() {
  if constexpr (std::is_same_v<T, double>) return 1e-12;
  if constexpr (std::is_same_v<T, float>) return 2e-5;
  if constexpr (std::is_same_v<T, bf16>) return 1.6e-2;
  return 2e-3;  // fp16
}

template <class T>
void require_close(const char* what, const std::vector<T>& got, const std::vector<double>& want,
                   double scale, double rtol) {
  REQUIRE(got.size() == want.size());
  for (size_t k = 0; k < got.size(); ++k) {
    const double g = back(got[k]), w = want[k];
    if (!(std::abs(g - w) <= rtol * (scale + std::abs(w)))) {  // one REQUIRE per failure: fast
      INFO(what << "[" << k << "] = " << g << ", reference " << w << ", rtol " << rtol);
      REQUIRE(std::abs(g - w) <= rtol * (scale + std::abs(w)));
    }
  }
}

struct Case {
  int64_t M, N;
  int64_t pad;  // extra elements between rows of X and dY (strided rows)
  double offset, spread;
  bool gamma, beta;
  Norm norm;
  double weight_offset = 0;
  bool residual = false;  // fused residual add: X = X + R, rounded to T
};

template <class T, class P>
void run_case(const Case& c, uint32_t seed) {
  using A = acc_t<T>;
  const int64_t M = c.M, N = c.N, ld = N + c.pad;
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  std::vector<T> X(M * ld), dY(M * ld), R(c.residual ? M * ld : 0), S(c.residual ? M * N : 0);
  std::vector<double> Xd(M * N), dYd(M * N);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < ld; ++j) {
      X[i * ld + j] = to<T>(c.offset + c.spread * normal(rng));
      dY[i * ld + j] = to<T>(normal(rng));
      // Fused add: back(X) + back(R) is exact in double, and to<T> rounds it as the kernel's
      // sum in A stored to T does.
      if (c.residual) R[i * ld + j] = to<T>(c.spread * normal(rng));
      const double x = c.residual ? back(to<T>(back(X[i * ld + j]) + back(R[i * ld + j])))
                                  : back(X[i * ld + j]);
      if (j < N) Xd[i * N + j] = x, dYd[i * N + j] = back(dY[i * ld + j]);
    }
  std::vector<P> gamma(N), beta(N);
  std::vector<double> gammad(N), betad(N);
  for (int64_t j = 0; j < N; ++j) {
    gamma[j] = to<P>(1.0 + 0.5 * normal(rng)), gammad[j] = back(gamma[j]);
    beta[j] = to<P>(normal(rng)), betad[j] = back(beta[j]);
  }
  const double eps = 1e-5;
  const Reference r = reference(Xd, dYd, c.gamma ? &gammad : nullptr, c.beta ? &betad : nullptr,
                                M, N, eps, c.norm, c.weight_offset);

  std::vector<T> Y(M * N);
  std::vector<A> mean(M, A(-7)), rstd(M, A(-7));
  ForwardArgs<T, P> fa{X.data(), ld, c.gamma ? gamma.data() : nullptr,
                       c.beta ? beta.data() : nullptr, Y.data(), mean.data(), rstd.data(),
                       N, eps, c.norm};
  fa.weight_offset = c.weight_offset;
  if (c.residual) fa.R = R.data(), fa.ldr = ld, fa.S = S.data();
  forward(fa, 0, M);
  if (c.residual) require_close("S", S, Xd, 0, 0);  // exact
  require_close("mean", mean, r.mean, std::abs(c.offset) + 1, tol<A>());
  require_close("rstd", rstd, r.rstd, 0, 1e-4);  // a one-pass variance misses this by far
  // x - mean carries the rounding of mean to A: about ulp(offset) / std. Errors grow with the
  // weight (|weight_offset + gamma|).
  const double y_tol = tol<T>() + std::numeric_limits<A>::epsilon() * std::abs(c.offset) / c.spread;
  const double w_scale = 1 + std::abs(c.weight_offset);
  require_close("Y", Y, r.Y, w_scale, y_tol);
  if (M > 1) {  // a row at a time: 16-bit gamma is widened per row, not once for the range
    std::vector<T> Y1(M * N);
    std::vector<A> mean1(M), rstd1(M);
    ForwardArgs<T, P> f1 = fa;
    f1.Y = Y1.data(), f1.mean = mean1.data(), f1.rstd = rstd1.data();
    for (int64_t i = 0; i < M; ++i) forward(f1, i, i + 1);
    REQUIRE(std::memcmp(Y1.data(), Y.data(), M * N * sizeof(T)) == 0);
  }

  std::vector<T> dX(M * N);
  const BlockPlan plan = plan_blocks(M, N);
  std::vector<A> partial(plan.nblocks * 2 * N, A(-7));
  BackwardArgs<T, P> ba{dY.data(), ld, c.residual ? S.data() : X.data(), c.residual ? N : ld,
                        mean.data(), rstd.data(), c.gamma ? gamma.data() : nullptr, dX.data(),
                        partial.data(), M, N, c.norm};
  ba.weight_offset = c.weight_offset;
  backward_blocks(ba, plan, 0, plan.nblocks);
  std::vector<P> dgamma(N), dbeta(N);
  reduce_partials<T, P>(partial.data(), plan.nblocks, N, dgamma.data(), dbeta.data(), 0, N);
  // dX's rounding error scales with rstd (short rows of near-equal values have a large one).
  const double max_rstd = *std::max_element(r.rstd.begin(), r.rstd.end());
  require_close("dX", dX, r.dX, std::max(1.0, max_rstd) * w_scale, 2 * y_tol);
  const double sum_scale = std::sqrt(double(M));
  require_close("dgamma", dgamma, r.dgamma, sum_scale, 2 * y_tol + tol<P>());
  require_close("dbeta", dbeta, r.dbeta, sum_scale, tol<P>());
}

std::vector<Isa> isas() {
  std::vector<Isa> out;
  for (Isa isa : kIsas)
    if (isa <= best_isa()) out.push_back(isa);
  return out;
}

template <class T, class P>
void run_all() {
  const int64_t sizes[] = {1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 100, 255, 257, 1000, 2049, 4099, 9001};
  uint32_t seed = 1;
  for (Isa isa : isas()) {
    set_isa(isa);
    REQUIRE(active_isa() == isa);
    for (int64_t N : sizes)
      for (Norm norm : {Norm::kLayer, Norm::kRms})
        for (int affine = 0; affine < 4; ++affine) {
          const Case c{N > 1000 ? 5 : 37, N, (N % 3), 0.0, 1.0, bool(affine & 1), bool(affine & 2), norm};
          INFO("isa " << isa_name(isa) << " N " << N << " affine " << affine << " rms " << (norm == Norm::kRms));
          run_case<T, P>(c, seed++);
        }
  }
  set_isa(best_isa());
}

}  // namespace

#define PAIRS (std::pair<float, float>), (std::pair<double, double>), (std::pair<bf16, bf16>), \
              (std::pair<bf16, float>), (std::pair<fp16, fp16>), (std::pair<fp16, float>)

TEMPLATE_TEST_CASE("kernels match the double reference over sizes, affine options and ISAs",
                   "[kernels]", PAIRS) {
  run_all<typename TestType::first_type, typename TestType::second_type>();
}

// Zero-centred gamma: the weight is weight_offset + gamma. 25 rows make blocks of 4 (plan_blocks),
// so the longest rows, just over 4 KB, take the 4-row backward (with a tail of 3 elements).
template <class T, class P>
void run_weight_offset() {
  const int64_t sizes[] = {1, 7, 17, 64, 1000, 4096 / int64_t(sizeof(T)) + 3};
  uint32_t seed = 1000;
  for (Isa isa : isas()) {
    set_isa(isa);
    for (int64_t N : sizes)
      for (Norm norm : {Norm::kLayer, Norm::kRms})
        for (double offset : {0.0, 1.0, -0.5})
          for (int affine : {0, 1, 3})  // no weight (the offset unused), gamma, gamma and beta
            for (bool residual : {false, true}) {
              Case c{25, N, N % 3, 0.0, 1.0, bool(affine & 1), bool(affine & 2), norm};
              c.weight_offset = offset, c.residual = residual;
              INFO("isa " << isa_name(isa) << " N " << N << " affine " << affine << " rms "
                          << (norm == Norm::kRms) << " weight_offset " << offset << " residual " << residual);
              run_case<T, P>(c, seed++);
            }
  }
  set_isa(best_isa());
}

TEMPLATE_TEST_CASE("a weight offset (zero-centred gamma) in forward, backward and the fused add",
                   "[kernels]", PAIRS) {
  run_weight_offset<typename TestType::first_type, typename TestType::second_type>();
}

TEMPLATE_TEST_CASE("offset 0 keeps a gamma of -0 (the bits of no offset)", "[kernels]",
                   (std::pair<float, float>), (std::pair<double, double>), (std::pair<bf16, bf16>),
                   (std::pair<bf16, float>), (std::pair<fp16, fp16>), (std::pair<fp16, float>)) {
  using T = typename TestType::first_type;
  using P = typename TestType::second_type;
  using A = acc_t<T>;
  // Row 0 rises, so x - mean < 0 in its first half: y = (x - mean) * rstd * (-0) is +0 there,
  // and -0 where gamma is +0. Adding +0 to gamma would turn both into -0.
  const int64_t M = 3, N = 37;
  std::vector<T> X(M * N), Y(M * N);
  std::vector<P> gamma(N);
  std::vector<A> mean(M), rstd(M);
  for (int64_t k = 0; k < M * N; ++k) X[k] = to<T>(double(k % N));
  for (int64_t j = 0; j < N; ++j) gamma[j] = to<P>(j % 2 ? -0.0 : 0.0);
  for (Isa isa : isas()) {
    set_isa(isa);
    INFO("isa " << isa_name(isa));
    for (int64_t rows : {int64_t(1), M}) {  // forward one row at a time, and the whole range
      INFO("rows per call " << rows);
      const ForwardArgs<T, P> fa{X.data(), N, gamma.data(), nullptr, Y.data(), mean.data(),
                                 rstd.data(), N, 1e-5, Norm::kLayer};
      for (int64_t i = 0; i < M; i += rows) forward(fa, i, i + rows);
      for (int64_t j = 0; j < N / 2; ++j) {
        INFO("j " << j);
        REQUIRE(back(Y[j]) == 0.0);
        REQUIRE(std::signbit(back(Y[j])) == !(j % 2));
      }
    }
  }
  set_isa(best_isa());
}

TEMPLATE_TEST_CASE("rows far from zero keep their variance", "[kernels]",
                   (std::pair<float, float>), (std::pair<double, double>)) {
  using T = typename TestType::first_type;
  for (Isa isa : isas()) {
    set_isa(isa);
    INFO("isa " << isa_name(isa));
    run_case<T, T>({16, 1024, 5, 1e4, 1.0, true, true, Norm::kLayer}, 99);
    run_case<T, T>({3, 100000, 0, -3e3, 0.5, true, false, Norm::kLayer}, 98);
  }
  set_isa(best_isa());
}

TEST_CASE("constant rows give y = beta and rstd = 1/sqrt(eps)", "[kernels]") {
  const int64_t M = 3, N = 77;
  std::vector<float> X(M * N, 3.25f), Y(M * N), mean(M), rstd(M), beta(N);
  for (int64_t j = 0; j < N; ++j) beta[j] = float(j);
  for (Isa isa : isas()) {
    set_isa(isa);
    forward(ForwardArgs<float, float>{X.data(), N, nullptr, beta.data(), Y.data(), mean.data(),
                                      rstd.data(), N, 1e-5, Norm::kLayer},
            0, M);
    for (int64_t i = 0; i < M; ++i) {
      REQUIRE(mean[i] == 3.25f);
      REQUIRE(rstd[i] == Approx(1.0 / std::sqrt(1e-5)));
      for (int64_t j = 0; j < N; ++j) REQUIRE(Y[i * N + j] == float(j));
    }
  }
  set_isa(best_isa());
}

TEST_CASE("NaN and Inf propagate to their row only", "[kernels]") {
  const int64_t M = 3, N = 40;
  std::vector<float> X(M * N), Y(M * N), mean(M), rstd(M);
  for (int64_t k = 0; k < M * N; ++k) X[k] = float(k % 7);
  X[0 * N + 5] = std::numeric_limits<float>::quiet_NaN();
  X[2 * N + 39] = std::numeric_limits<float>::infinity();
  for (Isa isa : isas()) {
    set_isa(isa);
    forward(ForwardArgs<float, float>{X.data(), N, nullptr, nullptr, Y.data(), mean.data(),
                                      rstd.data(), N, 1e-5, Norm::kLayer},
            0, M);
    for (int64_t j = 0; j < N; ++j) {
      REQUIRE(std::isnan(Y[0 * N + j]));
      REQUIRE(std::isfinite(Y[1 * N + j]));
      REQUIRE(std::isnan(Y[2 * N + j]));
    }
  }
  set_isa(best_isa());
}

TEST_CASE("16-bit conversions round to nearest even like c10", "[types]") {
  // bf16: 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even is 1.
  REQUIRE(from_float<bf16>(1.0f + 1.0f / 256).bits == 0x3f80);
  REQUIRE(from_float<bf16>(1.0f + 3.0f / 256).bits == 0x3f82);
  REQUIRE(from_float<bf16>(std::numeric_limits<float>::quiet_NaN()).bits == 0x7fc0);
  // fp16: exact round trips of every finite half, overflow to Inf, subnormals.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = to_float(fp16{uint16_t(h)});
    if (std::isnan(f)) continue;
    REQUIRE(from_float<fp16>(f).bits == h);
  }
  REQUIRE(from_float<fp16>(65520.0f).bits == 0x7c00);
  REQUIRE(from_float<fp16>(65519.0f).bits == 0x7bff);
  REQUIRE(from_float<fp16>(1e-8f).bits == 0x0000);
  REQUIRE(from_float<fp16>(6e-8f).bits == 0x0001);
}

// The vector stores of every build round as the scalar rule above, bit for bit: the values are
// summed from one block of partials (0 + v == v, but for -0), so reduce_partials stores them
// unchanged.
// Subnormals and NaNs with payloads are the lanes where avx512bf16's instruction alone would
// differ; ties, Inf and FLT_MAX check the rounding itself. N = 67 puts them in full vectors and
// in the masked tail of every width.
template <class T>
void check_vector_rounding() {
  std::vector<float> special = {0.0f, 1.0f + 1.0f / 256, 1.0f + 3.0f / 256, -1.0f - 1.0f / 256,
                                std::numeric_limits<float>::max(), -std::numeric_limits<float>::max(),
                                std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                                std::numeric_limits<float>::min(), std::numeric_limits<float>::denorm_min(),
                                -3.0e-39f, 1.0e-39f, 65519.0f, 65520.0f, 6e-8f, 3.3895e38f};
  uint32_t nan_bits[] = {0x7fc00000u, 0xffc00001u, 0x7f800001u, 0x7fa5a5a5u};
  for (uint32_t b : nan_bits) special.push_back(std::bit_cast<float>(b));
  std::mt19937 rng(5);
  std::uniform_int_distribution<uint32_t> bits;
  const int64_t N = 67;
  for (int round = 0; round < 200; ++round) {
    std::vector<float> partial(2 * N);
    for (int64_t j = 0; j < 2 * N; ++j) {
      // Mostly special values (a vector holding one takes the exact path), some vectors none.
      const bool plain = round % 3 == 0 || bits(rng) % 4 != 0;
      partial[j] = plain ? std::ldexp(float(bits(rng) % 100000) - 50000.0f, int(bits(rng) % 40) - 20)
                         : special[bits(rng) % special.size()];
    }
    std::vector<T> dgamma(N), dbeta(N);
    reduce_partials<T, T>(partial.data(), 1, N, dgamma.data(), dbeta.data(), 0, N);
    // fp16 NaNs: F16C's conversion keeps the payload (as torch's vectorized CPU kernels do),
    // the scalar rule gives 0x7e00; a NaN is all that is asked there. bf16 NaNs are 0x7fc0.
    const auto same = [](T got, float v) {
      if (std::is_same_v<T, fp16> && std::isnan(v)) return (got.bits & 0x7c00) == 0x7c00 && (got.bits & 0x3ff);
      return got.bits == from_float<T>(v).bits;
    };
    for (int64_t j = 0; j < N; ++j) {
      INFO("round " << round << " column " << j << " value " << partial[j] << " / " << partial[N + j]);
      REQUIRE(same(dgamma[j], partial[j]));
      REQUIRE(same(dbeta[j], partial[N + j]));
    }
  }
}

TEST_CASE("every build's vector stores round like the scalar conversion", "[types]") {
  for (Isa isa : isas()) {
    set_isa(isa);
    INFO("isa " << isa_name(isa));
    check_vector_rounding<bf16>();
    check_vector_rounding<fp16>();
  }
  set_isa(best_isa());
}

TEST_CASE("block plan depends on M and N only and covers every row", "[plan]") {
  for (int64_t M : {0, 1, 7, 100, 1000, 32768, 1 << 20})
    for (int64_t N : {1, 128, 4096, 65536}) {
      const BlockPlan p = plan_blocks(M, N);
      REQUIRE(p.nblocks * p.rows_per_block >= M);
      REQUIRE((p.nblocks - 1) * p.rows_per_block < std::max<int64_t>(M, 1));
      REQUIRE(p.nblocks <= 64);
    }
}

namespace {

// 64-byte aligned storage, as torch allocates it (the streaming stores need aligned rows).
template <class U>
struct Aligned {
  explicit Aligned(size_t n) : p(static_cast<U*>(std::aligned_alloc(64, ((n * sizeof(U) + 63) / 64) * 64))) {}
  ~Aligned() { std::free(p); }
  U* p;
};

// A kernel build and whether outputs are streamed (non-temporal stores).
struct Setting {
  Isa isa;
  bool stream;
};

// Two settings give the same bits: y, mean, rstd, dx, dgamma and dbeta. Row 2 holds a NaN, and
// column 3 a subnormal y (gamma 1e-39, beta 0): the lanes where avx512bf16's instruction would
// round otherwise than the exact code.
template <class T>
void check_same_bits(Setting a, Setting b) {
  using A = acc_t<T>;
  // rows whose starts are all aligned (N = 512, 1000), every other one (N = 1004 bf16), or
  // never but the first (N = 1001): the kernel picks the store per row.
  for (int64_t N : {512, 1000, 1001, 1004}) {
    const int64_t M = 9;
    Aligned<T> X(M * N), dY(M * N), Y[2] = {Aligned<T>(M * N), Aligned<T>(M * N)},
                                    dX[2] = {Aligned<T>(M * N), Aligned<T>(M * N)};
    Aligned<float> gamma(N), beta(N);
    Aligned<A> mean[2] = {Aligned<A>(M), Aligned<A>(M)}, rstd[2] = {Aligned<A>(M), Aligned<A>(M)};
    std::vector<float> dgamma[2] = {std::vector<float>(N), std::vector<float>(N)};
    std::vector<float> dbeta[2] = {std::vector<float>(N), std::vector<float>(N)};
    std::mt19937 rng(7);
    std::normal_distribution<double> normal;
    for (int64_t k = 0; k < M * N; ++k) X.p[k] = to<T>(normal(rng)), dY.p[k] = to<T>(normal(rng));
    for (int64_t j = 0; j < N; ++j) gamma.p[j] = float(normal(rng)), beta.p[j] = float(normal(rng));
    X.p[2 * N + 5] = to<T>(std::numeric_limits<double>::quiet_NaN());
    gamma.p[3] = 1e-39f, beta.p[3] = 0.0f;
    const BlockPlan plan = plan_blocks(M, N);
    std::vector<A> partial(plan.nblocks * 2 * N);
    for (int k = 0; k < 2; ++k) {
      const Setting& s = k ? b : a;
      set_isa(s.isa);
      ForwardArgs<T, float> fa{X.p, N, gamma.p, beta.p, Y[k].p, mean[k].p, rstd[k].p, N, 1e-5, Norm::kLayer};
      fa.stream = s.stream;
      forward(fa, 0, M);
      BackwardArgs<T, float> ba{dY.p, N, X.p, N, mean[k].p, rstd[k].p, gamma.p, dX[k].p,
                                partial.data(), M, N, Norm::kLayer};
      ba.stream = s.stream;
      backward_blocks(ba, plan, 0, plan.nblocks);
      reduce_partials<T, float>(partial.data(), plan.nblocks, N, dgamma[k].data(), dbeta[k].data(), 0, N);
    }
    set_isa(best_isa());
    INFO("N " << N);
    REQUIRE(std::memcmp(Y[0].p, Y[1].p, M * N * sizeof(T)) == 0);
    REQUIRE(std::memcmp(mean[0].p, mean[1].p, M * sizeof(A)) == 0);
    REQUIRE(std::memcmp(rstd[0].p, rstd[1].p, M * sizeof(A)) == 0);
    REQUIRE(std::memcmp(dX[0].p, dX[1].p, M * N * sizeof(T)) == 0);
    REQUIRE(std::memcmp(dgamma[0].data(), dgamma[1].data(), N * sizeof(float)) == 0);
    REQUIRE(std::memcmp(dbeta[0].data(), dbeta[1].data(), N * sizeof(float)) == 0);
  }
}

}  // namespace

TEST_CASE("streaming (non-temporal) stores give the same bits", "[kernels]") {
  for (Isa isa : isas()) {
    INFO("isa " << isa_name(isa));
    check_same_bits<float>({isa, false}, {isa, true});
    check_same_bits<bf16>({isa, false}, {isa, true});
    check_same_bits<fp16>({isa, false}, {isa, true});
  }
}

// The forward takes short 16-bit rows four at a time (forward_rows<4>: the rows' stats, then
// their outputs) and other rows, and a range's last rows, one at a time: a row's bits may not
// depend on which. M = 11: two groups and three rows alone; row 1 holds a NaN, row 5 an Inf,
// row 6 an outlier first element (the second pass over the row), row 3 (grouped) and row 9
// (alone) are constant rows. Rows are ldx = N + 3 apart for odd N (strided input).
// float rows are never grouped today: their case guards the day they are.
template <class T, class P>
void check_rows_grouped_or_alone(Norm norm, double offset) {
  using A = acc_t<T>;
  for (int64_t N : {0, 1, 15, 128, 200, 1000, 1024, 1025}) {
    const int64_t M = 11, ldx = N % 2 ? N + 3 : N;
    std::vector<T> X(M * ldx), Y[2] = {std::vector<T>(M * N), std::vector<T>(M * N)};
    std::vector<P> gamma(N), beta(N);
    std::vector<A> mean[2] = {std::vector<A>(M), std::vector<A>(M)}, rstd[2] = {std::vector<A>(M), std::vector<A>(M)};
    std::mt19937 rng{uint32_t(N)};
    std::normal_distribution<double> normal;
    for (auto& v : X) v = to<T>(3 + normal(rng));
    for (int64_t j = 0; j < N; ++j) gamma[j] = to<P>(normal(rng)), beta[j] = to<P>(normal(rng));
    if (N > 0) {
      X[1 * ldx + N / 2] = to<T>(std::numeric_limits<double>::quiet_NaN());
      X[5 * ldx] = to<T>(std::numeric_limits<double>::infinity());
      X[6 * ldx] = to<T>(400.0);
    }
    for (int64_t j = 0; j < N; ++j) X[3 * ldx + j] = X[9 * ldx + j] = to<T>(2.5);
    for (int k = 0; k < 2; ++k) {
      ForwardArgs<T, P> fa{X.data(), ldx, gamma.data(), norm == Norm::kLayer ? beta.data() : nullptr, Y[k].data(),
                           mean[k].data(), rstd[k].data(), N, 1e-5, norm};
      fa.weight_offset = offset;
      if (k == 0) {
        forward(fa, 0, M);
      } else {
        for (int64_t i = 0; i < M; ++i) forward(fa, i, i + 1);
      }
    }
    INFO("N " << N);
    if (N > 0) REQUIRE(std::memcmp(Y[0].data(), Y[1].data(), M * N * sizeof(T)) == 0);  // data() of none may be null
    REQUIRE(std::memcmp(mean[0].data(), mean[1].data(), M * sizeof(A)) == 0);
    REQUIRE(std::memcmp(rstd[0].data(), rstd[1].data(), M * sizeof(A)) == 0);
  }
}

TEMPLATE_TEST_CASE("rows four at a time give the bits of rows one at a time", "[kernels]", float, bf16, fp16) {
  for (Isa isa : isas()) {
    set_isa(isa);
    for (Norm norm : {Norm::kLayer, Norm::kRms}) {
      INFO("isa " << isa_name(isa) << " rms " << (norm == Norm::kRms));
      check_rows_grouped_or_alone<TestType, TestType>(norm, 0.0);
      check_rows_grouped_or_alone<TestType, float>(norm, 0.0);
      check_rows_grouped_or_alone<TestType, TestType>(norm, 1.0);
    }
  }
  set_isa(best_isa());
}

TEST_CASE("avx512bf16 gives the avx512 build's bits", "[kernels]") {
  if (best_isa() < Isa::kAvx512Bf16) {
    WARN("not run: this CPU has no AVX512_BF16");
    return;
  }
  check_same_bits<bf16>({Isa::kAvx512, false}, {Isa::kAvx512Bf16, false});
  check_same_bits<bf16>({Isa::kAvx512, true}, {Isa::kAvx512Bf16, true});
}

TEST_CASE("only large float outputs of long rows are streamed", "[plan]") {
  REQUIRE(stream_output(2048, 4096, 4));
  REQUIRE_FALSE(stream_output(2048, 4096, 2));   // 16-bit: half-vector stores lose
  REQUIRE_FALSE(stream_output(32768, 128, 4));   // 512-byte rows lose
  REQUIRE_FALSE(stream_output(1000, 1024, 4));   // 4 MB stays in cache for its reader
}

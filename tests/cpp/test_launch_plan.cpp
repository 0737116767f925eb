// The CUDA launch plans (cuda/launch_plan.cpp), without a GPU: every problem of
// launch_plans.txt, the launches that the launch code before the split made for the benchmark
// grid (cuda_check/gen_old.py), must come out of fwd_plan / bwd_plan launch for launch, with the
// same occupancy answers (plan_model.h) and the same knobs (PlanOverrides).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "../../cuda/launch_plan.h"
#include "plan_model.h"

namespace {

using namespace fastln::cuda_impl;
namespace pm = fastln_plan_model;

int elem_size(const std::string& t) { return t == "double" ? 8 : t == "float" ? 4 : 2; }

struct Case {
  std::string dev, t, p;
  int norm = 0;  // 0 layer, 1 rms
  bool bwd = false;
  Problem pb;
  PlanOverrides ov;
};

// The knobs of a line ("-" or e.g. "cf=2,fs=0") as overrides.
PlanOverrides overrides(const std::string& knobs) {
  PlanOverrides ov;
  if (knobs == "-") return ov;
  std::istringstream s(knobs);
  std::string kv;
  while (std::getline(s, kv, ',')) {
    const std::string k = kv.substr(0, kv.find('='));
    const int v = std::stoi(kv.substr(kv.find('=') + 1));
    if (k == "cf") ov.cluster_fwd = v;
    else if (k == "cb") ov.cluster_bwd = v;
    else if (k == "pc") ov.partial_cluster = v;
    else if (k == "fs") ov.fwd_staged = v != 0;
    else if (k == "bs") ov.bwd_staged = v;
    else if (k == "r2") ov.bwd_two_rows = v != 0;
    else if (k == "pdl") ov.pdl = v != 0;
    else if (k == "nv") ov.fwd_nv = v;
    else if (k == "fb") ov.fwd_block = v;
    else if (k == "fp") ov.fwd_persist = v;
    else if (k == "fh") ov.fwd_hoist = v;
    else if (k == "bn") ov.bwd_staged_nv = v;
    else if (k == "al") ov.slice_align = v;
    else if (k == "bl") ov.bwd_lines = v;
    else FAIL("unknown knob " << k);
  }
  return ov;
}

// The canonical name of a plan's kernel for the problem's types and norm (plan_model.h).
std::string kernel_name(const Case& c, const KernelId& k) {
  const std::string tp = c.t + "," + c.p + ",", nrm = std::to_string(c.norm), res = c.pb.residual ? "1" : "0";
  const auto i = [](int v) { return std::to_string(v); };
  switch (k.kind) {
    case KernelKind::kFwdReg:
      return "fwd_reg_kernel<" + tp + i(k.nv) + "," + nrm + "," + res + "," + i(k.cl) + (k.hoist ? ",1" : "") + ">";
    case KernelKind::kFwdStaged: return "fwd_staged_kernel<" + tp + nrm + "," + i(k.cl) + (k.one_row ? ",1" : "") + ">";
    case KernelKind::kFwdFallback: return "fwd_fallback_kernel<" + tp + i(k.nv) + "," + nrm + "," + res + ">";
    case KernelKind::kBwdReg:
      return "bwd_reg_kernel<" + tp + i(k.nv) + "," + nrm + "," + i(k.acc_smem) + "," + i(k.cl) + "," + i(k.minb) + "," +
             i(k.rows) + (k.lines ? ",1" : "") + ">";
    case KernelKind::kBwdStaged:
      return "bwd_staged_kernel<" + tp + nrm + "," + i(k.cl) + (k.nv ? "," + i(k.nv) : "") + ">";
    case KernelKind::kBwdFallbackDx: return "bwd_fallback_dx_kernel<" + tp + i(k.nv) + "," + nrm + ">";
    case KernelKind::kBwdFallbackCols: return "bwd_fallback_cols_kernel<" + tp + nrm + ">";
    case KernelKind::kReducePartials:
      return "reduce_partials_kernel<" + std::string(c.t == "double" ? "double" : "float") + "," + c.p + "," + i(k.ry) +
             "," + i(k.w) + ">";
    default: return "none";
  }
}

// The occupancy answers of the model, as launch.cuh forms them from the runtime's.
struct ModelOccupancy final : Occupancy {
  const Case& c;
  const pm::DeviceModel& d;
  ModelOccupancy(const Case& c_, const pm::DeviceModel& d_) : c(c_), d(d_) {}
  int64_t resident(const KernelId& k, int block, size_t smem, int cl) const override {
    const std::string name = kernel_name(c, k);
    return occupancy_resident(pm::blocks_per_sm(d, name, block, smem), d.sms, cl,
                              cl > 1 ? pm::active_clusters(d, name, block, smem, cl) : 0);
  }
};

DeviceProps props(const pm::DeviceModel& d) {
  DeviceProps p;
  p.sm_count = d.sms;
  p.max_dyn_smem = size_t(d.smem_optin) - 1024;
  p.clusters = d.clusters && d.ptx_version >= 90;
  return p;
}

std::string line(const Case& c, const Launch& l) {
  return pm::launch_line(kernel_name(c, l.kernel), l.grid, l.grid_y, l.block, l.block_y, l.smem, l.cluster, l.pdl);
}

// What the launchers of launch.cuh launch for a plan, in the table's form.
std::string result(const Case& c) {
  const pm::DeviceModel& d = pm::device_model(c.dev);
  const ModelOccupancy occ(c, d);
  std::vector<std::string> launches;
  int tpr = -1, ret = 0;
  int64_t nparts = 0;
  if (!c.bwd) {
    const FwdPlan plan = fwd_plan(c.pb, props(d), occ, c.ov);
    if (plan.main.kernel.kind == KernelKind::kNone) {
      ret = 9;  // cudaErrorInvalidConfiguration
    } else {
      tpr = plan.tpr;
      launches.push_back(line(c, plan.main));
    }
  } else {
    const BwdPlan plan = bwd_plan(c.pb, props(d), occ, c.ov);
    nparts = plan.nparts;
    if (plan.main.kernel.kind == KernelKind::kNone) {
      ret = 1;  // cudaErrorInvalidValue
    } else {
      tpr = plan.tpr;
      launches.push_back(line(c, plan.main));  // dX wanted
      if (plan.cols.kernel.kind != KernelKind::kNone) launches.push_back(line(c, plan.cols));
      launches.push_back(line(c, plan.reduce));  // partials wanted
    }
  }
  std::ostringstream s;
  s << "tpr" << tpr << " np" << nparts << " ret" << ret << " |";
  for (size_t i = 0; i < launches.size(); ++i) s << (i ? " ; " : " ") << launches[i];
  return s.str();
}

// A problem of the table from its key ("H100 bf16,bf16 layer fwd r0 v1 N M knobs").
Case table_case(const std::string& key_text) {
  std::istringstream key(key_text);
  Case c;
  std::string types, norm, dir, res, vec, knobs;
  int64_t n = 0;
  key >> c.dev >> types >> norm >> dir >> res >> vec >> n >> c.pb.m >> knobs;
  c.t = types.substr(0, types.find(','));
  c.p = types.substr(types.find(',') + 1);
  c.norm = norm == "rms";
  c.bwd = dir == "bwd";
  c.pb.n = int(n);
  c.pb.elem_size = elem_size(c.t);
  c.pb.param_size = elem_size(c.p);
  c.pb.residual = res == "r1";
  c.pb.vec_ok = vec == "v1";
  c.ov = overrides(knobs);
  return c;
}

// The table's lines, comments and blank lines left out: each problem's key and its launches.
std::vector<std::pair<std::string, std::string>> table_rows() {
  std::ifstream in(FASTLN_PLAN_TABLE);
  REQUIRE(in.good());
  std::vector<std::pair<std::string, std::string>> rows;
  std::string text;
  while (std::getline(in, text)) {
    if (text.empty() || text[0] == '#') continue;
    const size_t bar = text.find(" | ");
    rows.emplace_back(text.substr(0, bar), text.substr(bar + 3));
  }
  return rows;
}

// A forward problem of the table's form ("H100 bf16,bf16 layer fwd r0 v1 N M knobs") and its plan.
std::string fwd_result(const std::string& t, int n, int64_t m, const std::string& knobs, bool residual = false) {
  Case c;
  c.dev = "H100";
  c.t = c.p = t;
  c.pb.n = n;
  c.pb.m = m;
  c.pb.elem_size = c.pb.param_size = elem_size(t);
  c.pb.residual = residual;
  c.ov = overrides(knobs);
  return result(c);
}

}  // namespace

TEST_CASE("launch plans: every problem of the table made before the split", "[cuda][plan]") {
  int rows = 0, knob_rows = 0;
  for (const auto& [key, launches] : table_rows()) {
    const Case c = table_case(key);
    INFO(key);
    CHECK(result(c) == launches);
    ++rows;
    knob_rows += c.ov != PlanOverrides{};
  }
  // Both devices, six type pairs, two norms, three directions over the grid, the fallback on the
  // extra shapes, and the knobs (gen_old.py).
  CHECK(rows == 4936);
  CHECK(knob_rows == 2200);
}

TEST_CASE("launch plans: fwd_nv and fwd_block set the forward's geometry, else change nothing", "[cuda][plan]") {
  // Rows of > 128 vectors, a CTA a row: the vectors a thread, and so the threads of the CTA.
  CHECK(fwd_result("bf16", 4096, 2048, "-") == "tpr128 np0 ret0 | fwd_reg<bf16,bf16,4,0,0,1,1> g2048x1 b128x1 s0 c1 p0");
  CHECK(fwd_result("bf16", 4096, 2048, "nv=2") == "tpr256 np0 ret0 | fwd_reg<bf16,bf16,2,0,0,1,1> g2048x1 b256x1 s0 c1 p0");
  CHECK(fwd_result("bf16", 4096, 2048, "nv=1") == "tpr512 np0 ret0 | fwd_reg<bf16,bf16,1,0,0,1,1> g2048x1 b512x1 s0 c1 p0");
  CHECK(fwd_result("float", 1024, 4096, "nv=8") == "tpr32 np0 ret0 | fwd_reg<float,float,8,0,0,1> g4096x1 b32x1 s0 c1 p0");
  CHECK(fwd_result("float", 1024, 4096, "nv=3") == fwd_result("float", 1024, 4096, "-"));  // not a vector class
  CHECK(fwd_result("float", 1024, 4096, "fb=128") == fwd_result("float", 1024, 4096, "-"));  // not a small row
  // Rows of <= 128 vectors, several a CTA: the CTA's threads.
  CHECK(fwd_result("bf16", 1024, 4096, "-") == "tpr32 np0 ret0 | fwd_reg<bf16,bf16,4,0,0,1,1> g512x1 b256x1 s0 c1 p0");
  CHECK(fwd_result("bf16", 1024, 4096, "fb=128") == "tpr32 np0 ret0 | fwd_reg<bf16,bf16,4,0,0,1,1> g1024x1 b128x1 s0 c1 p0");
  CHECK(fwd_result("bf16", 1024, 4096, "fb=16") == fwd_result("bf16", 1024, 4096, "-"));  // fewer than a row's threads
  CHECK(fwd_result("bf16", 1024, 4096, "fb=96") == fwd_result("bf16", 1024, 4096, "-"));  // not a power of two
  // ... and the vectors a thread where a row keeps <= 32 threads (its sums in one warp): Quack's
  // N = 512 geometry (2 vectors, 32 threads a row, 4 rows a CTA of 128), 8 vectors; 2 vectors at
  // N = 1024 would take 64 threads a row: the plan's.
  CHECK(fwd_result("fp16", 512, 16384, "-") == "tpr16 np0 ret0 | fwd_reg<fp16,fp16,4,0,0,1,1> g1024x1 b256x1 s0 c1 p0");
  CHECK(fwd_result("fp16", 512, 16384, "nv=2") == "tpr32 np0 ret0 | fwd_reg<fp16,fp16,2,0,0,1,1> g2048x1 b256x1 s0 c1 p0");
  CHECK(fwd_result("fp16", 512, 16384, "nv=2,fb=128") ==
        "tpr32 np0 ret0 | fwd_reg<fp16,fp16,2,0,0,1,1> g4096x1 b128x1 s0 c1 p0");
  CHECK(fwd_result("fp16", 512, 16384, "nv=8") == "tpr8 np0 ret0 | fwd_reg<fp16,fp16,8,0,0,1> g512x1 b256x1 s0 c1 p0");
  CHECK(fwd_result("fp16", 512, 16384, "nv=1") == fwd_result("fp16", 512, 16384, "-"));  // 64 threads a row
  CHECK(fwd_result("float", 128, 4096, "-") == "tpr8 np0 ret0 | fwd_reg<float,float,4,0,0,1> g128x1 b256x1 s0 c1 p0");
  CHECK(fwd_result("float", 128, 4096, "nv=1") == "tpr32 np0 ret0 | fwd_reg<float,float,1,0,0,1> g512x1 b256x1 s0 c1 p0");
  CHECK(fwd_result("bf16", 1024, 4096, "nv=2") == fwd_result("bf16", 1024, 4096, "-"));   // 64 threads a row
}

TEST_CASE("launch plans: HOIST (fwd_hoist) for one-CTA forwards of <= 4 vectors a thread of 16-bit rows, parameters",
          "[cuda][plan]") {
  // The rule (-1): 16-bit rows with 16-bit parameters, without the residual add.
  CHECK(fwd_result("bf16", 4096, 2048, "-") == "tpr128 np0 ret0 | fwd_reg<bf16,bf16,4,0,0,1,1> g2048x1 b128x1 s0 c1 p0");
  CHECK(fwd_result("bf16", 4096, 2048, "fh=0") == "tpr128 np0 ret0 | fwd_reg<bf16,bf16,4,0,0,1> g2048x1 b128x1 s0 c1 p0");
  CHECK(fwd_result("bf16", 4096, 2048, "-", true) == "tpr128 np0 ret0 | fwd_reg<bf16,bf16,4,0,1,1> g2048x1 b128x1 s0 c1 p0");
  CHECK(fwd_result("float", 4096, 2048, "-") == "tpr256 np0 ret0 | fwd_reg<float,float,4,0,0,1> g2048x1 b256x1 s0 c1 p0");
  // 1: every such kernel; 8 vectors a thread and cluster rows keep theirs.
  CHECK(fwd_result("float", 4096, 2048, "fh=1") == "tpr256 np0 ret0 | fwd_reg<float,float,4,0,0,1,1> g2048x1 b256x1 s0 c1 p0");
  CHECK(fwd_result("float", 4096, 2048, "fh=1,nv=2") == "tpr512 np0 ret0 | fwd_reg<float,float,2,0,0,1,1> g2048x1 b512x1 s0 c1 p0");
  CHECK(fwd_result("bf16", 4096, 2048, "fh=1", true) == "tpr128 np0 ret0 | fwd_reg<bf16,bf16,4,0,1,1,1> g2048x1 b128x1 s0 c1 p0");
  CHECK(fwd_result("float", 1024, 4096, "fh=1,nv=8") == fwd_result("float", 1024, 4096, "nv=8"));
  CHECK(fwd_result("bf16", 65536, 2048, "fh=1") == fwd_result("bf16", 65536, 2048, "-"));
  CHECK(fwd_result("bf16", 65536, 2048, "fh=0") == fwd_result("bf16", 65536, 2048, "-"));
}

// A plan's launch line, split: kernel, grid, block, shared memory, cluster.
struct LineParts {
  std::string kernel;
  int64_t grid = 0;
  int block = 0, cluster = 0;
  size_t smem = 0;
};
LineParts parts(const std::string& result) {
  LineParts p;
  std::istringstream s(result.substr(result.find("| ") + 2));
  std::string g, b, sm, c;
  s >> p.kernel >> g >> b >> sm >> c;
  p.grid = std::stoll(g.substr(1));
  p.block = std::stoi(b.substr(1));
  p.smem = std::stoul(sm.substr(1));
  p.cluster = std::stoi(c.substr(1));
  return p;
}

TEST_CASE("launch plans: fwd_persist=0 launches the staged forward a cluster a row, one buffer, >= 2 CTAs a SM",
          "[cuda][plan]") {
  const pm::DeviceModel& d = pm::device_model("H100");
  // {type, N, M, the config's cluster: the fewest CTAs of <= 4096 vectors, a power of two}
  for (const auto& [t, n, m, cl] :
       {std::tuple<std::string, int, int64_t, int>{"float", 20000, 6711, 2}, {"float", 24576, 5461, 2},
        {"float", 32768, 4096, 2}, {"float", 49152, 2731, 4}, {"float", 65536, 2048, 4},
        {"bf16", 65536, 2048, 2}, {"fp16", 49152, 2731, 2}, {"bf16", 65544, 300, 4}}) {
    const std::string base = fwd_result(t, n, m, "fp=1"), one = fwd_result(t, n, m, "fp=0");
    INFO(t << " " << n << ": " << base << " -> " << one);
    REQUIRE(base.find("fwd_staged<") != std::string::npos);
    const LineParts b = parts(base), o = parts(one);
    const int vec = 16 / elem_size(t), nvec = n / vec;
    // the config's cluster (not staged_cluster's doubling: fp32 65536 persistent over 8), a
    // cluster a row, one buffer
    CHECK(o.cluster == cl);
    CHECK(o.kernel == b.kernel.substr(0, b.kernel.rfind(',') + 1) + std::to_string(cl) + ",1>");
    CHECK(b.cluster == (t == "float" && n == 65536 ? 8 : cl));
    CHECK(o.grid == m * o.cluster);
    CHECK(o.block == b.block);
    CHECK(o.smem == size_t((nvec + o.cluster - 1) / o.cluster) * 16);
    CHECK(pm::blocks_per_sm(d, "fwd_staged_kernel" + o.kernel.substr(std::string("fwd_staged").size()), o.block,
                            o.smem) >= 2);
    // at a forced cluster size: the persistent kernel's slices, a third of its shared memory
    const std::string cf = "cf=" + std::to_string(o.cluster);
    const LineParts bf = parts(fwd_result(t, n, m, cf)), of = parts(fwd_result(t, n, m, cf + ",fp=0"));
    CHECK(of.kernel == bf.kernel.substr(0, bf.kernel.size() - 1) + ",1>");
    CHECK(of.smem * kRowStages == bf.smem);
    CHECK(of.grid == m * o.cluster);
  }
  // one-CTA rows (short, long, and 7 elements: one a thread) and the fused add (the register
  // kernel over a cluster) keep theirs
  for (const auto& [t, n, m] : {std::tuple<std::string, int, int64_t>{"float", 1024, 4096}, {"bf16", 4096, 2048},
                                {"bf16", 16384, 8192}, {"float", 7, 100}})
    CHECK(fwd_result(t, n, m, "fp=0") == fwd_result(t, n, m, "-"));
  CHECK(fwd_result("bf16", 65536, 2048, "fp=0", true) == fwd_result("bf16", 65536, 2048, "-", true));
  // M * CL CTAs past a grid's 2^31: the persistent grid
  CHECK(fwd_result("float", 32768, int64_t(1) << 30, "fp=0") == fwd_result("float", 32768, int64_t(1) << 30, "fp=1"));
  CHECK(fwd_result("float", 32768, (int64_t(1) << 30) - 1, "fp=0") != fwd_result("float", 32768, (int64_t(1) << 30) - 1, "fp=1"));
}

TEST_CASE("launch plans: the staged forward takes a cluster a row where the persistent grid leaves SMs idle",
          "[cuda][plan]") {
  const int sms = pm::device_model("H100").sms;
  // {type, N, M, a cluster a row by the heuristics}
  for (const auto& [t, n, m, one_row] : {
           // the persistent grid fills every SM: it stays
           std::tuple<std::string, int, int64_t, bool>{"float", 20000, 6711, false}, {"float", 24576, 5461, false},
           {"float", 32768, 4096, false}, {"bf16", 49152, 2731, false}, {"fp16", 65536, 2048, false},
           // clusters of 4 on 120 SMs: a cluster a row of 4
           {"float", 49152, 2731, true}, {"bf16", 65544, 300, true},
           {"float", 49152, 31, true},  // 124 CTAs against 120
           {"float", 49152, 30, false},  // 120 against the persistent 30 clusters of 4
           // clusters of 8 on 112 SMs (fp32 65536): a cluster a row would take 4, other bits
           {"float", 65536, 2048, false}, {"float", 65536, 20, false}}) {
    const std::string rule = fwd_result(t, n, m, "-"), persist = fwd_result(t, n, m, "fp=1"),
                      one = fwd_result(t, n, m, "fp=0");
    INFO(t << " " << n << " x " << m << ": " << rule);
    CHECK(rule == (one_row ? one : persist));
    const LineParts p = parts(persist), o = parts(one);
    CHECK((p.cluster == o.cluster && std::min<int64_t>(o.grid, sms) > std::min<int64_t>(p.grid, sms)) == one_row);
  }
  // A row's bits do not depend on M: the staged forward's cluster size (its slices, so the order
  // of the row's sums) is the same for one row as for many, persistent or not.
  for (const auto& [t, n] : {std::pair<std::string, int>{"float", 20000}, {"float", 49152}, {"float", 65536},
                             {"bf16", 49152}, {"bf16", 65544}, {"fp16", 65536}}) {
    const int cl = parts(fwd_result(t, n, 1, "-")).cluster;
    for (int64_t m : {2, 7, 20, 30, 31, 33, 300, 4096, 100000}) {
      INFO(t << " " << n << " x " << m);
      CHECK(parts(fwd_result(t, n, m, "-")).cluster == cl);
    }
  }
  // a forced cluster size keeps the persistent grid (its experiments' meaning), as the fused add
  // keeps the register kernel
  CHECK(fwd_result("float", 49152, 2731, "cf=4") == fwd_result("float", 49152, 2731, "cf=4,fp=1"));
  CHECK(fwd_result("float", 65536, 2048, "cf=8") == fwd_result("float", 65536, 2048, "cf=8,fp=1"));
  CHECK(fwd_result("float", 49152, 2731, "-", true) == fwd_result("float", 49152, 2731, "fp=1", true));
}

// A backward problem of the table's form and its plan: rows of n elements of t, the parameters
// of p (t's where empty).
std::string bwd_result(const std::string& t, int n, int64_t m, const std::string& knobs, std::string p = "") {
  Case c;
  c.dev = "H100";
  c.bwd = true;
  c.t = t;
  c.p = p.empty() ? t : p;
  c.pb.n = n;
  c.pb.m = m;
  c.pb.elem_size = elem_size(t);
  c.pb.param_size = elem_size(c.p);
  c.pb.plus_one = c.p.rfind("PlusOne", 0) == 0;
  c.ov = overrides(knobs);
  return result(c);
}

TEST_CASE("launch plans: the 16-bit staged backward takes 4 vectors a thread in half the threads (bwd_staged_nv=2: 2)",
          "[cuda][plan]") {
  const pm::DeviceModel& d = pm::device_model("H100");
  // 16-bit rows the staged backward takes by default (24576 over 2, 49152 over 8), forced there
  // (20000, 65536: bwd_staged=1), and an odd row of 16-bit vectors (24584)
  for (const auto& [t, n, m, knobs] :
       {std::tuple<std::string, int, int64_t, std::string>{"bf16", 24576, 5461, ""}, {"fp16", 49152, 2731, ""},
        {"bf16", 20000, 6711, "bs=1,"}, {"fp16", 65536, 2048, "bs=1,"}, {"bf16", 24584, 500, "bs=1,"}}) {
    const std::string wide = bwd_result(t, n, m, knobs.empty() ? "-" : knobs.substr(0, knobs.size() - 1));
    const std::string base = bwd_result(t, n, m, knobs + "bn=2");
    INFO(t << " " << n << ": " << base << " -> " << wide);
    REQUIRE(base.find("bwd_staged<") != std::string::npos);
    CHECK(bwd_result(t, n, m, knobs + "bn=4") == wide);
    const LineParts b = parts(base), w = parts(wide);
    // the same slices, clusters, grid, shared memory and partials; the kernel of NVT = 4 in half the threads
    CHECK(w.kernel == b.kernel.substr(0, b.kernel.size() - 1) + ",4>");
    CHECK(w.cluster == b.cluster);
    CHECK(w.grid == b.grid);
    CHECK(w.smem == b.smem);
    const int per = (n / 8 + b.cluster - 1) / b.cluster;
    CHECK(b.block == (per + 1) / 2 / 32 * 32 + ((per + 1) / 2 % 32 ? 32 : 0));
    CHECK(w.block == (per + 3) / 4 / 32 * 32 + ((per + 3) / 4 % 32 ? 32 : 0));
    CHECK(w.block * 4 >= per);
    CHECK(wide.substr(0, wide.find('|')) == base.substr(0, base.find('|')));  // tpr, partials
    CHECK(wide.substr(wide.find(" ; ")) == base.substr(base.find(" ; ")));      // the reduction
    // as many CTAs a SM as the kernel of 2 vectors (registers: 128 a thread, 64 there)
    CHECK(pm::blocks_per_sm(d, "bwd_staged_kernel" + w.kernel.substr(std::string("bwd_staged").size()), w.block,
                            w.smem) >= pm::blocks_per_sm(d, "bwd_staged_kernel" + b.kernel.substr(std::string("bwd_staged").size()),
                                                         b.block, b.smem));
  }
  // fp32 rows, 16-bit rows of float32 parameters, and rows the register kernel takes: 2 vectors, or not staged
  for (const auto& [t, n, m, p] : {std::tuple<std::string, int, int64_t, std::string>{"float", 12288, 10922, ""},
                                   {"bf16", 49152, 2731, "float"}, {"bf16", 32768, 4096, ""}, {"fp16", 4096, 32768, ""}}) {
    INFO(t << "," << p << " " << n);
    CHECK(bwd_result(t, n, m, "bn=4", p) == bwd_result(t, n, m, "-", p));
    CHECK(bwd_result(t, n, m, "bn=2", p) == bwd_result(t, n, m, "-", p));
  }
  CHECK(bwd_result("float", 12288, 10922, "-").find("bwd_staged<float,float,0,2>") != std::string::npos);
}

TEST_CASE("launch plans: 16-bit backward rows take the staged kernel where the register kernel keeps few warps a SM",
          "[cuda][plan]") {
  const pm::DeviceModel& d = pm::device_model("H100");
  // Warps a SM of the register kernel's plan (bwd_staged=0): its CTAs resident a SM times its warps.
  const auto reg_warps = [&](const std::string& t, int n, int64_t m) {
    const LineParts r = parts(bwd_result(t, n, m, "bs=0"));
    REQUIRE(r.kernel.rfind("bwd_reg<", 0) == 0);
    return pm::blocks_per_sm(d, "bwd_reg_kernel" + r.kernel.substr(std::string("bwd_reg").size()), r.block, r.smem) *
           (r.block / 32);
  };
  // The H100 A/Bs (journal.md, sessions 19, 25 and 27): {N, staged by default, the register kernel's CTAs a row}
  for (const auto& [n, staged, cl] :
       {std::tuple<int, bool, int>{24576, true, 4}, {36864, true, 8}, {40960, true, 8}, {49152, true, 8},
        {53248, true, 8}, {57344, true, 8}, {13312, false, 2}, {14336, false, 2}, {18432, false, 4},
        {20000, false, 4}, {26624, false, 4}, {28672, false, 4}, {32768, false, 4}, {65536, false, 8}}) {
    for (const std::string t : {"bf16", "fp16"}) {
      const int64_t m = (int64_t(1) << 27) / n;
      const int warps = reg_warps(t, n, m);
      INFO(t << " " << n << ": the register kernel keeps " << warps << " warps a SM");
      CHECK(parts(bwd_result(t, n, m, "bs=0")).cluster == cl);
      // the rule: at most 12 warps a SM, or 15 over clusters of 8
      CHECK(staged == (warps <= (cl == 8 ? 15 : 12)));
      // staged: the launch that bwd_staged=1 forces; else the register kernel's
      CHECK(bwd_result(t, n, m, "-") == bwd_result(t, n, m, staged ? "bs=1" : "bs=0"));
      // the choice does not depend on M (a row's dX bits do not either)
      for (const int64_t mm : {int64_t(1), int64_t(7), int64_t(300)})
        CHECK((bwd_result(t, n, mm, "-").find("bwd_staged<") != std::string::npos) == staged);
      // float32 parameters and forced clusters keep the register kernel
      CHECK(bwd_result(t, n, m, "-", "float").find("bwd_reg<") != std::string::npos);
      CHECK(bwd_result(t, n, m, "cb=" + std::to_string(cl)).find("bwd_reg<") != std::string::npos);
    }
  }
}

TEST_CASE("launch plans: slice_align rounds the backward's cluster slices and their shared memory, nothing else",
          "[cuda][plan]") {
  // slice_vectors: ceil(nvec / cl), rounded up to the multiple; the whole row on one CTA
  CHECK(slice_vectors(2500, 4) == 625);  // bf16 N = 20000: slices start mid-sector
  CHECK(slice_vectors(2500, 4, 2) == 626);
  CHECK(slice_vectors(2500, 4, 8) == 632);
  CHECK(slice_vectors(2304, 4, 8) == 576);  // 18432: already lines
  CHECK(slice_vectors(2500, 1, 8) == 2500);
  CHECK(slice_vectors(5000, 8, 0) == 625);
  // Every problem of the table, each multiple, against the unrounded slices (al=1). Forward: the
  // same launches. Backward: the same kernels, blocks and clusters; a cluster kernel's shared
  // memory (column sums, or the staged rows) that of the rounded slices, and so the grid where it
  // is unchanged. The default is 2 (the table's lines without al=).
  CHECK(PlanOverrides{}.slice_align == 2);
  int rows = 0, rounded = 0;
  for (const auto& [key_text, launches] : table_rows()) {
    Case c = table_case(key_text);
    const pm::DeviceModel& d = pm::device_model(c.dev);
    const ModelOccupancy occ(c, d);
    const int nvec = c.pb.n / (16 / c.pb.elem_size);
    const Case as_given = c;
    c.ov.slice_align = 1;
    const std::string base_line = result(c);
    const BwdPlan base = c.bwd ? bwd_plan(c.pb, props(d), occ, c.ov) : BwdPlan{};
    CHECK(base.slice_align == 1);
    for (const int a : {2, 4, 8}) {
      Case ca = c;
      ca.ov.slice_align = a;
      INFO(key_text << " slice_align " << a);
      if (!c.bwd) {
        CHECK(result(ca) == base_line);
        continue;
      }
      const BwdPlan plan = bwd_plan(ca.pb, props(d), occ, ca.ov);
      const Launch &l = plan.main, &b = base.main;
      CHECK(l.kernel == b.kernel);
      CHECK((l.block == b.block && l.cluster == b.cluster));
      const int cl = l.kernel.cl;
      // taken where every CTA keeps a part of the row
      const bool takes = cl > 1 && (cl - 1) * slice_vectors(nvec, cl, a) < nvec;
      CHECK(plan.slice_align == (takes ? a : 1));
      const int s0 = slice_vectors(nvec, cl), s1 = slice_vectors(nvec, cl, plan.slice_align);
      if (cl > 1 && b.smem > 0) {
        REQUIRE(b.smem % size_t(s0) == 0);
        CHECK(l.smem == b.smem / s0 * s1);
      } else {
        CHECK(l.smem == b.smem);
      }
      if (l.smem == b.smem) CHECK(result(ca) == base_line);  // else its CTAs a SM may differ
      if (a == as_given.ov.slice_align) CHECK(result(ca) == result(as_given));
      rounded += a == 8 && s1 != s0;
    }
    ++rows;
  }
  CHECK(rows == 4936);
  CHECK(rounded > 0);  // the table has slices that are not multiples of 8 vectors
  CHECK(overrides("al=8").slice_align == 8);
  // other multiples are not taken (their rounding could pass a CTA's threads times vectors)
  for (const int a : {3, 16, 256})
    CHECK(parts(bwd_result("bf16", 20000, 301, "al=" + std::to_string(a))).smem ==
          parts(bwd_result("bf16", 20000, 301, "al=1")).smem);
}

TEST_CASE("launch plans: bwd_lines marks the register backward's cluster slices that have room, nothing else",
          "[cuda][plan]") {
  CHECK(PlanOverrides{}.bwd_lines == -1);
  CHECK(overrides("bl=1").bwd_lines == 1);
  int taken = 0, rows = 0;
  for (const auto& [key_text, launches] : table_rows()) {
    Case c = table_case(key_text);
    INFO(key_text);
    if (!c.bwd) continue;
    const pm::DeviceModel& d = pm::device_model(c.dev);
    const ModelOccupancy occ(c, d);
    c.ov.bwd_lines = 0;
    const BwdPlan base = bwd_plan(c.pb, props(d), occ, c.ov);
    CHECK(!base.main.kernel.lines);  // never under 0
    for (const int bl : {-1, 1}) {
      c.ov.bwd_lines = bl;
      const BwdPlan plan = bwd_plan(c.pb, props(d), occ, c.ov);
      KernelId k = plan.main.kernel;
      const bool lines = k.lines;
      k.lines = false;
      CHECK(k == base.main.kernel);  // the same launches but for LINES
      CHECK((plan.main.grid == base.main.grid && plan.main.block == base.main.block &&
             plan.main.smem == base.main.smem && plan.main.cluster == base.main.cluster));
      CHECK((plan.tpr == base.tpr && plan.slice_align == base.slice_align));
      CHECK(line(c, plan.reduce) == line(c, base.reduce));
      const int slice = slice_vectors(c.pb.n / (16 / c.pb.elem_size), k.cl, plan.slice_align);
      // taken on the 16-bit register kernel's cluster slices of two rows an iteration (16-bit
      // parameters) whose threads, more than a warp, hold the slice shifted by up to 7 vectors;
      // by the heuristics (-1) where a row or a slice is not a whole number of 128-byte lines
      // but two rows are
      const bool room = k.kind == KernelKind::kBwdReg && k.rows == 2 && c.pb.param_size == 2 && plan.tpr > 32 &&
                        int64_t(k.nv) * plan.tpr >= slice + 7;
      const bool off_lines = c.pb.n * 2 % 128 != 0 || slice % 8 != 0, pairs_share = c.pb.n * 4 % 128 == 0;
      CHECK(lines == (room && (bl == 1 || (off_lines && pairs_share))));
      taken += lines && bl == -1;
      // the parameters alone (no dX): never LINES, the same launches otherwise
      Problem alone = c.pb;
      alone.dx = false;
      const BwdPlan pa = bwd_plan(alone, props(d), occ, c.ov);
      CHECK(pa.main.kernel == base.main.kernel);
      CHECK((pa.main.grid == base.main.grid && pa.nparts == plan.nparts && pa.tpr == base.tpr));
    }
    ++rows;
  }
  CHECK(rows > 1000);
  CHECK(taken > 0);
  // bf16 N = 20000: 4 CTAs of 160 threads, 4 vectors each: 640 slots for slices of 626
  const std::string bf = bwd_result("bf16", 20000, 6711, "-");
  CHECK(bf.find("bwd_reg<bf16,bf16,4,0,1,4,0,2,1> g384x1 b160x1 s40064 c4") != std::string::npos);
  CHECK(bwd_result("bf16", 20000, 6711, "bl=0").find("bwd_reg<bf16,bf16,4,0,1,4,0,2> g384x1") != std::string::npos);
  CHECK(bwd_result("fp16", 20000, 6711, "-").find("bwd_reg<fp16,fp16,4,0,1,4,0,2,1> g384x1") != std::string::npos);
  // 20032: rows of 313 lines, slices of 626 vectors (not 8k) over 4 CTAs
  CHECK(bwd_result("bf16", 20032, 6700, "-").find("4,0,2,1> g") != std::string::npos);
  // 19968: rows of 312 lines, slices of 624 vectors: every slice starts on a line; only when asked
  CHECK(bwd_result("fp16", 19968, 6721, "-").find("bwd_reg<fp16,fp16,4,0,1,4,0,2> g") != std::string::npos);
  CHECK(bwd_result("fp16", 19968, 6721, "bl=1").find("bwd_reg<fp16,fp16,4,0,1,4,0,2,1> g") != std::string::npos);
  // 20008: rows of 312.6 lines, two rows 625.25: the rows of an iteration would start at
  // different places in their lines; only when asked
  CHECK(bwd_result("bf16", 20008, 6708, "-").find("bwd_reg<bf16,bf16,4,0,1,4,0,2> g384x1") != std::string::npos);
  CHECK(bwd_result("bf16", 20008, 6708, "bl=1").find("bwd_reg<bf16,bf16,4,0,1,4,0,2,1> g384x1") != std::string::npos);
  // the weight offset (PlusOne parameters) keeps the float32 weight's bits: only when asked
  CHECK(bwd_result("bf16", 20000, 6711, "-", "PlusOne<bf16>").find("bwd_reg<bf16,PlusOne<bf16>,4,0,1,4,0,2> g384x1") !=
        std::string::npos);
  CHECK(bwd_result("bf16", 20000, 6711, "bl=1", "PlusOne<bf16>").find("bwd_reg<bf16,PlusOne<bf16>,4,0,1,4,0,2,1> g384x1") !=
        std::string::npos);
  // bf16 N = 16384: 2 CTAs of 256 threads hold slices of 1024 exactly: no room
  CHECK(bwd_result("bf16", 16384, 8192, "bl=1").find("bwd_reg<bf16,bf16,4,0,1,2,0,2> g") != std::string::npos);
}

TEST_CASE("launch plans: the defaults of the overrides change nothing", "[cuda][plan]") {
  set_plan_overrides(PlanOverrides{});
  CHECK(plan_overrides() == PlanOverrides{});
  PlanOverrides ov;
  ov.cluster_fwd = 2;
  set_plan_overrides(ov);
  CHECK(plan_overrides().cluster_fwd == 2);
  set_plan_overrides(PlanOverrides{});
  CHECK(plan_overrides() == PlanOverrides{});
}

// Launch plans of the CUDA kernels (launch_plan.h): the heuristics, host-only. The numbers in
// the comments are H100 measurements (docs/cuda.md has them in full).
#include "launch_plan.h"

#include <algorithm>
#include <atomic>
#include <initializer_list>
#include <mutex>

namespace fastln {
namespace cuda_impl {
namespace {

int round_up(int v, int m) { return (v + m - 1) / m * m; }
int pow2_ceil(int v) {
  int p = 1;
  while (p < v) p <<= 1;
  return p;
}
int nv_class(int nv) { return nv <= 1 ? 1 : nv <= 2 ? 2 : nv <= 4 ? 4 : nv <= 8 ? 8 : 16; }
int valid_cluster(int cl) { return cl == 1 || cl == 2 || cl == 4 || cl == 8 ? cl : 0; }

// A row configuration: threads per row (tpr), 16-byte vectors per thread (nv), block, and the
// CTAs a row is split over (cl > 1: a thread-block cluster, each CTA a slice of the row).
struct Config {
  bool reg = false;  // false: fallback path
  int tpr = 0, nv = 0, block = 0, cl = 1;
};

// Rows of nvec 16-byte vectors. Small rows (nvec <= 128): tpr <= 32, a power of two giving
// up to 4 vectors a thread, several rows to a CTA of small_block threads. Larger rows: one row
// (or, cl > 1, one slice of ceil(nvec / cl) vectors) per CTA, the first nv of `nvs` for which
// <= max_threads threads suffice.
Config row_config(int nvec, int small_block, std::initializer_list<int> nvs, int cl = 1,
                  int max_threads = kMaxRowThreads) {
  Config c;
  if (cl == 1 && nvec <= 128) {
    c.tpr = pow2_ceil((nvec + 3) / 4);
    c.nv = nv_class((nvec + c.tpr - 1) / c.tpr);
    c.block = std::max(small_block, c.tpr);
    c.reg = true;
    return c;
  }
  const int slice = (nvec + cl - 1) / cl;
  for (int nv : nvs) {
    if ((slice + nv - 1) / nv <= max_threads) {
      c.tpr = round_up((slice + nv - 1) / nv, 32);
      c.nv = nv_class((slice + c.tpr - 1) / c.tpr);
      c.block = c.tpr;
      c.cl = cl;
      c.reg = true;
      return c;
    }
  }
  return c;
}

// Forward: small rows 256 threads a CTA; larger rows 4 vectors a thread, then 8, then 16.
// Where clusters run, rows that would need 16 vectors a thread (one CTA of 512 threads per SM:
// loads and stores of consecutive rows never overlapped; bf16 N = 65536 at 55% of copy
// bandwidth) are split over the fewest CTAs of 8 vectors a thread: fewer, larger CTAs wait
// less on each other (H100, bench/cluster_sweep.py: bf16 65536 over 2 CTAs 77%, over 4 of 4
// vectors 75%; fp32 65536 over 4 86%, over 8 of 4 vectors 79%). Rows longer than a cluster of
// 8 can hold take the fallback. fwd_plan may then trade 4 vectors a thread for 8 where the
// kernels' registers leave more warps resident that way. forced: PlanOverrides::cluster_fwd.
constexpr int kFwdCtaVectors = 8 * kMaxRowThreads;  // a cluster CTA's slice, at most
Config fwd_config(int nvec, bool clusters, int forced) {
  int cl = 1;
  if (clusters && nvec > 128) {
    cl = forced;
    if (!cl && nvec > 8 * kMaxRowThreads) {
      cl = 2;
      while (cl < kMaxCluster && (nvec + cl - 1) / cl > kFwdCtaVectors) cl *= 2;
    }
    cl = std::max(cl, 1);
  }
  return cl == 1 ? row_config(nvec, 256, {4, 8, 16}) : row_config(nvec, 256, {8}, cl);
}

// Backward: small rows keep column sums in registers; larger rows keep them in shared memory
// [2][the CTA's columns]. Small CTAs for small rows: a CTA's row groups add their column sums
// in group order at the end, so that step grows with the groups a CTA holds. H100, bf16
// backward: (4096, 1024) 55 -> 32 us with 128 threads instead of 512, (131072, 1024) 324 ->
// 305 us, (524288, 256) 375 -> 310 us with 64 (docs/cuda.md). 16-bit rows: 2 vectors (16
// elements) a thread first, for more warps in flight per SM. Where clusters run, rows are split
// over the fewest CTAs whose sums fit kBwdCtaSmem: 32-bit rows whose sums pass it (fp32 16384:
// 90% of copy bandwidth in one CTA, 94% over 2), 16-bit rows that one CTA would hold only once
// a SM (N > 12288), their clusters taking two rows an iteration (bwd_reg_plan; H100, bf16 /
// fp16: 16384 over 2 87.8 / 89.1% against 82.4 / 83.8 in one CTA; 32768 over 4 82.1 / 83.7,
// over 8 77.8 / 79.9; 65536 over 8 80.2 / 82.1; 12288 stays in one CTA: 86.0%, over 2 82.9).
// Without clusters, rows whose sums do not fit take the fallback (it reads x and dy twice: ~40%).
constexpr size_t kBwdCtaSmem = 64 * 1024;
constexpr size_t kBwdMaxSmem = 200 * 1024;
Config bwd_config(int nvec, int vec, size_t acc_size, bool half_width, bool clusters, size_t max_smem,
                  int forced) {
  const int nv0 = half_width ? 2 : 4;
  if (nvec <= 128) return row_config(nvec, nvec <= 32 ? 64 : 128, {nv0, 4, 8});
  const size_t fits = std::min(kBwdMaxSmem, max_smem);
  const auto smem = [&](int cl) { return size_t(2) * ((nvec + cl - 1) / cl) * vec * acc_size; };
  int cl = 1;
  if (clusters) {
    cl = forced;
    if (!cl && (!half_width || nvec > 4 * kBwdTwoCtaThreads)) {
      cl = 1;
      while (cl < kMaxCluster && smem(cl) > kBwdCtaSmem) cl *= 2;
    }
    cl = std::max(cl, 1);
  }
  if (smem(cl) > fits) return Config{};
  if (cl == 1) return row_config(nvec, 128, {nv0, 4, 8});
  // 4 vectors a thread, not 2: a bf16 slice of 1024 vectors in 512 threads of 2 vectors took
  // 98 registers (one CTA per SM).
  return row_config(nvec, 128, {4}, cl, bwd_max_threads(cl, half_width ? 2 : 4));
}

// The fallback kernels: one CTA per row (grid-stride over rows), VEC-wide loads when vec_ok.
int fallback_block(int n) { return n >= 4096 ? 512 : n >= 512 ? 128 : 32; }
Launch fallback_rows(KernelKind kind, const Problem& pb, int vec) {
  Launch l;
  l.kernel.kind = kind;
  l.kernel.nv = pb.vec_ok ? vec : 1;
  l.block = fallback_block(pb.vec_ok ? pb.n / vec : pb.n);
  l.grid = std::min<int64_t>(pb.m, int64_t(1) << 30);
  return l;
}

// PlanOverrides::slice_align for the backward's slices of nvec over cl CTAs: 2, 4 or 8 where it
// leaves every CTA a part of the row, else 1 (a larger multiple could pass a CTA's threads times
// vectors, which come from the unrounded slice; ops_cuda.cpp refuses other values). The configs'
// cluster sizes and threads are those of the unrounded slices (rounding to <= 8 vectors changes
// neither: slice_vectors); the kernels' shared memory holds the rounded ones. The forward's
// slices are not rounded: reading the multiple from its parameters cost the persistent staged
// forward's codegen (fp32 106 -> 96 registers, one-row 36 -> 38; nvcc 13.0, sm_90), unmeasured.
int slice_align(int nvec, int cl, const PlanOverrides& ov) {
  const int a = ov.slice_align;
  const bool valid = a == 2 || a == 4 || a == 8;
  return cl > 1 && valid && (cl - 1) * slice_vectors(nvec, cl, a) < nvec ? a : 1;
}

size_t staged_smem(int nvec, int cl) { return size_t(kRowStages) * slice_vectors(nvec, cl) * 16; }

// The staged forward's cluster size: the config's (the fewest CTAs of <= 4096 vectors), or twice
// that where its clusters would leave SMs idle. Clusters live inside a GPC: H100 places 30
// clusters of 4 CTAs of 128 KB (one a SM), 120 of its 132 SMs: fp32 N = 65536 81.7% of copy
// bandwidth over 4, 89.8% over 8 (two buffers then; one CTA a SM by its 98 registers). Clusters
// of 2 fill all 132.
// Not where the doubled slices would hold fewer than 4 vectors a thread: fp32 N = 49152 (3072
// vectors a CTA over 4, 1536 over 8) took 389 us over 4 against 415 over 8 (H100, 2026-12-06).
int staged_cluster(int cl, int nvec, const DeviceProps& dev, const Occupancy& occ) {
  if (cl >= kMaxCluster || (nvec + 2 * cl - 1) / (2 * cl) < 4 * kStagedThreads) return cl;
  const KernelId k{KernelKind::kFwdStaged, 0, cl};
  const int64_t ctas = occ.resident(k, kStagedThreads, staged_smem(nvec, cl), cl) * cl;
  return ctas < dev.sm_count ? 2 * cl : cl;
}

// CTAs with a row each and a partial each: where the partials (16 N bytes a CTA, written then
// read) would pass 1/8 of the rows' bytes (3 M N sizeof(T)), at most 16 warps a SM. H100, fp32
// (bwd_reg_kernel, 64-thread CTAs, 32 a SM): (4096, 1024) 40.8 -> 37.7 us, (8192, 768) 48.9 ->
// 45.3, (16384, 1024) 96.9 -> 94.2; rows of 2^27 elements, where it does not apply, moved by
// -0.9 (N = 1000) to +2.8% (768) under the same cap (docs/cuda.md).
int64_t cap_partials(int64_t grid, int64_t M, int block, int elem_size, const DeviceProps& dev) {
  if (grid * 128 <= 3 * M * elem_size) return grid;
  return std::min<int64_t>(grid, std::max(1, 16 * dev.sm_count / std::max(1, block / 32)));
}

// The staged backward (bwd_staged_kernel) on sm_90, for 32-bit rows of at least kBwdStagedFrom
// vectors (past the several-rows-a-CTA configs of row_config): slices of at most
// kBwdStagedThreads * kBwdStagedVectors vectors over the fewest CTAs, or twice as many where
// those clusters would leave SMs idle (as staged_cluster). H100, % of copy bandwidth against
// bwd_reg_kernel: fp32 768 92.4 -> 93.5, 1000 88.2 -> 93.4, 8192 93.8 -> 96.3, 12288 93.5 -> 99.0,
// 65536 90.0 -> 93.1; (4096, 1024) 37.7 -> 32.4 us. 16-bit rows keep bwd_reg_kernel: twice the
// elements a byte, the staged kernel is bound by its instructions there (bf16 16384: 77 against
// 89%; docs/cuda.md), but where the register kernel keeps few warps a SM (bwd_reg_launch).
// PlanOverrides::bwd_staged = 0 keeps bwd_reg_kernel everywhere, = V > 0 takes rows of at least V
// vectors, 16-bit ones too. Launch::kernel kNone: not this kernel.
constexpr int kBwdStagedFrom = 129;
// 16-bit cluster slices whose register kernel keeps at most this many warps a SM take the staged
// kernel (bwd_reg_launch); over clusters of 8, at most kBwdStagedMaxWarps8.
constexpr int kBwdStagedMaxWarps = 12, kBwdStagedMaxWarps8 = 15;
Launch bwd_staged_launch(const Config& c, const Problem& pb, const DeviceProps& dev, const Occupancy& occ,
                         const PlanOverrides& ov) {
  constexpr int kSlice = kBwdStagedThreads * kBwdStagedVectors;
  const int forced = valid_cluster(ov.cluster_bwd);
  Launch l;
  const int nvec = pb.n / (16 / pb.elem_size);
  const int from = ov.bwd_staged >= 0 ? ov.bwd_staged : pb.elem_size == 4 ? kBwdStagedFrom : 0;
  // Vectors a thread: 4 where rows and parameters are 16-bit (the kernels built so), unless
  // bwd_staged_nv = 2, else kBwdStagedVectors; the slices, so the clusters, grid and dgamma /
  // dbeta bits, are the same either way. H100, bf16, 2 against 4 (half the threads, 12 warps a SM
  // against 24, no spill): 24576 316.8 -> 310.5 us, 49152 330.8 -> 316.5 (84.7 -> 86.4 and 81.1 ->
  // 84.8 % of copy; journal.md, session 25).
  const int nvt = ov.bwd_staged_nv != 2 && pb.elem_size == 2 && pb.param_size == 2 ? 4 : kBwdStagedVectors;
  if (!cluster_type(pb.elem_size)) return l;  // not built
  if (!from || nvec < from || !c.reg || !dev.clusters) return l;
  int cl = std::max(forced, 1);
  while (cl < kMaxCluster && (nvec + cl - 1) / cl > kSlice) cl *= 2;
  const auto plan = [&](int cl) -> int64_t {
    const int per = slice_vectors(nvec, cl, slice_align(nvec, cl, ov));
    l.cluster = cl;
    l.block = round_up((per + nvt - 1) / nvt, 32);
    l.smem = size_t(kRowStages) * 2 * per * 16;
    l.kernel = KernelId{KernelKind::kBwdStaged, nvt == kBwdStagedVectors ? 0 : nvt, cl};
    return occ.resident(l.kernel, l.block, l.smem, cl);
  };
  int64_t clusters = plan(cl);
  if (!forced && cl < kMaxCluster && clusters * cl < dev.sm_count) clusters = plan(2 * cl);
  if (l.block > bwd_staged_threads(nvt) || l.smem > dev.max_dyn_smem) return Launch{};
  l.grid = std::min<int64_t>(pb.m, clusters) * l.cluster;
  if (l.cluster == 1) l.grid = cap_partials(l.grid, pb.m, l.block, pb.elem_size, dev);
  return l;
}

// CTAs a cluster for a one-CTA-per-row backward kernel (cl = 1), whose clusters share one
// partial: the largest of 8, 4, 2 that leaves as many CTAs resident as without clusters
// (clusters live inside a GPC: 1 CTA a SM in clusters of 8 would leave SMs idle). H100, bf16
// backward: 2048-16384 gain 1-2.5% of copy bandwidth (12288: 83.7 -> 86.2%). Not for CTAs of
// several short rows (bwd_reg_launch): the cluster's wait at the end cost them about what the
// smaller reduction saved (524288 x 256: +4.7 us in the kernel; (4096, 1024): +1.9 us).
int partial_cluster(const KernelId& k, int block, size_t smem, const Occupancy& occ, const PlanOverrides& ov) {
  if (const int forced = valid_cluster(ov.partial_cluster)) return forced;
  const int64_t resident = occ.resident(k, block, smem, 1);
  for (int pc : {8, 4, 2})
    if (occ.resident(k, block, smem, pc) * pc >= resident) return pc;
  return 1;
}

// The backward register kernel of a config (bwd_reg_kernel's template arguments), its grid
// (persistent: as many CTAs, or clusters, as are resident at once, at most one per row group),
// its clusters and its dynamic shared memory.
Launch bwd_reg_launch(const Config& c, const Problem& pb, const DeviceProps& dev, const Occupancy& occ,
                      const PlanOverrides& ov) {
  if (Launch st = bwd_staged_launch(c, pb, dev, occ, ov); st.kernel.kind != KernelKind::kNone) return st;
  const int vec = 16 / pb.elem_size, acc_size = pb.elem_size == 8 ? 8 : 4;
  Launch l;
  l.block = c.block;
  KernelId& k = l.kernel;
  // Two rows an iteration for a cluster's slices of 16-bit rows.
  k.rows = bwd_two_rows(pb.elem_size, c.nv, c.cl) && ov.bwd_two_rows ? 2 : 1;
  k.nv = c.nv;
  k.cl = c.cl;
  k.acc_smem = true;
  if (c.cl > 1) {
    if (!cluster_type(pb.elem_size) || !bwd_cluster_nv(c.nv)) return Launch{};  // not built, and bwd_config never picks it
  } else if (c.nv == 8) {
    // 8 vectors a thread: rows fill a CTA
  } else if (c.nv == 4 && pb.elem_size == 2 && c.tpr > 32 && c.tpr <= kBwdTwoCtaThreads) {
    k.minb = 2;
  } else {
    k.acc_smem = c.tpr > 32;
  }
  k.kind = KernelKind::kBwdReg;
  l.smem = size_t(2) * slice_vectors(pb.n / vec, c.cl, slice_align(pb.n / vec, c.cl, ov)) * vec * acc_size;
  const int G = c.block / c.tpr;
  const int64_t ngroups = (pb.m + G * k.rows - 1) / (G * k.rows);  // row groups, or pairs of them
  l.cluster = c.cl;
  if (c.cl == 1 && c.tpr == c.block && cluster_type(pb.elem_size) && dev.clusters)
    l.cluster = partial_cluster(k, c.block, l.smem, occ, ov);
  // Clusters wanted: one per iteration's rows for row slices, else a CTA per iteration's rows.
  const int64_t wanted = c.cl > 1 ? ngroups : (ngroups + l.cluster - 1) / l.cluster;
  l.grid = std::min<int64_t>(wanted, occ.resident(k, c.block, l.smem, l.cluster)) * l.cluster;
  // A row a CTA and a partial each (no partial clusters).
  if (l.cluster == 1 && c.cl == 1 && c.tpr == c.block) l.grid = cap_partials(l.grid, pb.m, c.block, pb.elem_size, dev);
  // 16-bit cluster slices with few warps a SM: the kernel waits on its loads (H100, ncu: 39 % of
  // stalls on L1TEX, 0.67 eligible warps a scheduler at bf16 49152), and its time follows the warps
  // in flight (bf16 row kernel 40960 / 49152 / 57344 / 65536: 15 / 12 / 14 / 16 warps, 311 / 335 /
  // 320 / 307 us). Where it keeps at most 12 (192-thread CTAs, two a SM: N = 24576 over 4, 49152
  // over 8), the staged kernel is faster: bf16 / fp16 49152 342-351 -> 328-334 us, 24576
  // 319-324 -> 315-316 (journal.md, session 19). Elsewhere it lost by 1-16 %, and with float32
  // parameters on 16-bit rows everywhere (bf16 49152: 480 against 355 us). With 4 vectors a thread
  // (session 25) the staged kernel also wins where the register kernel runs clusters of 8 with 14-15
  // warps a SM (bf16 36864 / 40960 / 53248 / 57344: 320 / 325 / 323 / 328 -> 313 / 318 / 315 / 319
  // us), not over 4 or fewer CTAs (20000 330 -> 326, but 18432 309 -> 332, 26624 / 28672 lose 0.5-1.0
  // %, 13312 / 14336 over 2, staged a CTA a row, 298 -> 318), nor at 16 warps (32768, 65536: -2 to -3 %;
  // journal.md, session 27).
  const int max_warps = c.cl >= 8 ? kBwdStagedMaxWarps8 : kBwdStagedMaxWarps;
  if (pb.elem_size == 2 && pb.param_size == 2 && c.cl > 1 && ov.bwd_staged < 0 && !valid_cluster(ov.cluster_bwd) &&
      occ.resident(k, c.block, l.smem, 1) * (c.block / 32) <= max_warps * dev.sm_count) {
    PlanOverrides staged = ov;
    staged.bwd_staged = 1;
    if (Launch st = bwd_staged_launch(c, pb, dev, occ, staged); st.kernel.kind != KernelKind::kNone) return st;
  }
  return l;
}

}  // namespace

int64_t occupancy_resident(int occ, int sm_count, int cl, int64_t clusters) {
  int64_t n = int64_t(std::max(occ, 1)) * sm_count / cl;
  if (cl > 1 && clusters > 0) n = std::min<int64_t>(n, clusters);
  return std::max<int64_t>(n, 1);
}

FwdPlan fwd_plan(const Problem& pb, const DeviceProps& dev, const Occupancy& occ, const PlanOverrides& ov) {
  const int vec = 16 / pb.elem_size, nvec = pb.n / vec;
  const bool clusters = cluster_type(pb.elem_size) && dev.clusters;
  const int forced = valid_cluster(ov.cluster_fwd);
  Config c = pb.vec_ok ? fwd_config(nvec, clusters, forced) : Config{};
  // HOIST (fwd_reg_kernel): one-CTA kernels of <= 4 vectors a thread load all their parameters
  // before their stores, one L2 round trip at the CTA's end instead of one a vector. Taken for
  // 16-bit rows with 16-bit parameters: H100, fwd, HOIST against main's order in one run, bf16 /
  // fp16 at 2^27 elements 0.995 / 0.997 of the time (geomean, 31 cells), mid sizes 0.990 / 0.978
  // (24 cells, 0.941-1.051); fp32 1.000 and 1.010 (its kernels: 40 -> 64 registers, fewer CTAs
  // a SM). journal.md, session 21. The fused residual add was not measured: the plain order.
  bool hoist = ov.fwd_hoist < 0 ? pb.elem_size == 2 && pb.param_size == 2 && !pb.residual : ov.fwd_hoist > 0;
  const auto reg = [&](int nv, int cl) { return KernelId{KernelKind::kFwdReg, nv, cl}; };
  const bool forced_nv = c.reg && c.cl == 1 && ov.fwd_nv > 0 && nv_class(ov.fwd_nv) == ov.fwd_nv;
  if (forced_nv && nvec > 128) {
    c = row_config(nvec, 256, {ov.fwd_nv});
  } else if (c.reg && c.cl == 1 && nvec <= 128) {
    // Several rows a CTA, at most 32 threads a row (a row's sums in its warp): a forced nv
    // where it keeps that (Quack's N = 512: 2 vectors a thread, 32 threads a row, 4 rows a
    // CTA of 128, against our 4, 16 and 16), then a forced block.
    const int tpr = forced_nv ? pow2_ceil((nvec + ov.fwd_nv - 1) / ov.fwd_nv) : 0;
    if (forced_nv && tpr <= 32) {
      c.tpr = tpr;
      c.nv = nv_class((nvec + tpr - 1) / tpr);
    }
    if (ov.fwd_block >= c.tpr && ov.fwd_block <= kMaxRowThreads && pow2_ceil(ov.fwd_block) == ov.fwd_block)
      c.block = ov.fwd_block;
  } else if (c.reg && c.cl == 1 && c.nv == 4 && c.tpr == c.block) {
    // A row a CTA at 4 vectors a thread can leave a SM fewer resident warps than 8 vectors a
    // thread in CTAs half the size: bf16 N = 12288 takes 384 threads of 58 registers, 2 CTAs a
    // SM (24 warps), against 192 threads of 64 registers, 5 CTAs (30 warps). Take the one
    // with more.
    // Counted with the plain kernels; where HOIST's registers would leave 4 vectors a thread
    // fewer warps than 8, the plain kernel (H100: fp16 LayerNorm N = 2560, 3072, 7168, 12288,
    // 50 -> 64 registers; HOIST took 0.997-1.001 of the time at the first three).
    const Config c8 = row_config(nvec, 256, {8});
    const auto threads = [&](const Config& k, bool h) {
      KernelId id = reg(k.nv, 1);
      id.hoist = h;
      return occ.resident(id, k.block, 0, 1) * k.block;
    };
    if (c8.reg && threads(c8, false) > threads(c, false))
      c = c8;
    else if (c8.reg && hoist && ov.fwd_hoist < 0 && threads(c8, false) > threads(c, true))
      hoist = false;
  }
  FwdPlan plan;
  if (!c.reg) {
    plan.main = fallback_rows(KernelKind::kFwdFallback, pb, vec);
    plan.tpr = plan.main.block;
    return plan;
  }
  plan.tpr = c.tpr;
  if (c.cl > 1 && !fwd_cluster_nv(c.nv)) return plan;  // not built (a forced cluster size): no kernel
  Launch& l = plan.main;
  l.cluster = c.cl;
  if (c.cl > 1 && !pb.residual && ov.fwd_staged) {
    // Rows split over a cluster, staged in shared memory (the fused add keeps the register kernel).
    // Persistent: a grid of resident clusters at staged_cluster's size, buffers two rows ahead.
    // ONE_ROW: a cluster a row at the config's size, M * CL CTAs, one buffer a CTA, two or more
    // CTAs a SM hiding each other's loads (38 registers for fp32 LayerNorm against 106, the
    // parameters read at the stores), as Quack 0.6.5 runs fp32 N = 20000-49152. The slices are
    // the persistent grid's at the same cluster size: the same bits.
    const auto staged = [&](int cl, bool one_row) {
      Launch s;
      s.kernel = KernelId{KernelKind::kFwdStaged, 0, cl};
      s.kernel.one_row = one_row;
      s.cluster = cl;
      s.block = kStagedThreads;
      s.smem = staged_smem(nvec, cl) / (one_row ? kRowStages : 1);
      // (the query also sets the kernel's shared-memory limit: launch.cu, resident_clusters)
      const int64_t resident = occ.resident(s.kernel, s.block, s.smem, cl);
      s.grid = (one_row ? pb.m : std::min(pb.m, resident)) * cl;
      return s;
    };
    plan.main = staged(forced ? c.cl : staged_cluster(c.cl, nvec, dev, occ), false);
    // A cluster a row where the persistent grid's clusters leave SMs idle that it would fill
    // (fwd_persist < 0): H100 fp32 N = 49152, clusters of 4 on 120 of 132 SMs, 393.1 -> 381.5 us
    // (91.0 -> 93.8 % of copy). Only at the persistent grid's own cluster size, so that a row's
    // bits do not depend on M (fp32 65536: persistent over 8, 112 SMs; a cluster a row over 4
    // measured level, 378.4 -> 378.7 us). Where the persistent grid fills every SM it stays: one
    // row a cluster lost 2 % at fp32 20000 and 24576, level at 32768 and bf16 (journal.md, session
    // 25). M * CL CTAs must fit a grid.
    const int64_t sms = dev.sm_count;
    const bool idle = !forced && plan.main.cluster == c.cl &&
                      std::min(pb.m * c.cl, sms) > std::min(plan.main.grid, sms);
    if (pb.m < (int64_t(1) << 31) / c.cl && (ov.fwd_persist == 0 || (ov.fwd_persist < 0 && idle)))
      plan.main = staged(c.cl, true);
    return plan;
  }
  // CL = 1: a CTA per row group. Clusters: persistent (launching a cluster per row cost ~20% of
  // copy bandwidth at bf16 N = 16384 against one CTA per row).
  const int G = c.block / c.tpr;
  const int64_t ngroups = (pb.m + G - 1) / G;
  l.kernel = reg(c.nv, c.cl);
  l.kernel.hoist = hoist && c.cl == 1 && c.nv <= 4;  // after the choice of c, as measured
  l.block = c.block;
  l.grid = c.cl == 1 ? ngroups : std::min(ngroups, occ.resident(l.kernel, c.block, 0, c.cl)) * c.cl;
  return plan;
}

BwdPlan bwd_plan(const Problem& pb, const DeviceProps& dev, const Occupancy& occ, const PlanOverrides& ov) {
  const int vec = 16 / pb.elem_size, acc_size = pb.elem_size == 8 ? 8 : 4;
  const bool clusters = cluster_type(pb.elem_size) && dev.clusters;
  const Config c = pb.vec_ok ? bwd_config(pb.n / vec, vec, size_t(acc_size), pb.elem_size == 2, clusters,
                                          dev.max_dyn_smem, valid_cluster(ov.cluster_bwd))
                             : Config{};
  BwdPlan plan;
  if (c.reg) {
    plan.tpr = c.tpr;
    plan.main = bwd_reg_launch(c, pb, dev, occ, ov);
    plan.nparts = plan.main.grid / plan.main.cluster;
    plan.slice_align = slice_align(pb.n / vec, plan.main.kernel.cl, ov);
    // bwd_lines (built for two rows an iteration and 16-bit parameters; after the grid, which
    // the kernel's launch bounds fix): the slots shifted by up to 7 vectors must hold the slice.
    // By default only where some slice starts inside a line (a row or a slice not a whole number
    // of lines; H100, session 31: bf16 / fp16 N = 20000 327 -> 318 / 331 -> 326 us, 20032 323 ->
    // 314 / 321 -> 319; where they all start on one, 19968 and 18432, the LINES kernel gains
    // nothing, and fp16's lost 2.5-3.4 %); where two rows span whole lines, so that the rows
    // paired in an iteration share their shift and a row's dX bits are what it gives alone at
    // that address (20008 would mix them); and not for the weight offset: PlusOne parameters
    // keep the float32 weight's bits (the mixed kernels, which have no LINES). Never without dX
    // (the parameters alone): group_sum's barriers, which only dX's row sums pass, order one
    // iteration's column sums before the next's shifted slots.
    KernelId& k = plan.main.kernel;
    const int slice = slice_vectors(pb.n / vec, k.cl, plan.slice_align);
    const int64_t row_bytes = int64_t(pb.n) * pb.elem_size;
    const bool off_lines = row_bytes % 128 != 0 || slice * 16 % 128 != 0;
    const bool pairs_share = 2 * row_bytes % 128 == 0;
    const bool lines_wanted = ov.bwd_lines == 1 || (ov.bwd_lines < 0 && off_lines && pairs_share && !pb.plus_one);
    k.lines = lines_wanted && pb.dx && k.kind == KernelKind::kBwdReg && k.rows == 2 && pb.param_size == 2 &&
              plan.tpr > 32 && int64_t(k.nv) * plan.tpr >= slice + 7;
  } else {
    plan.main = fallback_rows(KernelKind::kBwdFallbackDx, pb, vec);
    plan.tpr = plan.main.block;
    const int64_t tiles = (pb.n + 255) / 256;
    plan.nparts = std::max<int64_t>(1, std::min<int64_t>(pb.m, std::max<int64_t>(1, 8 * dev.sm_count / tiles)));
    plan.cols.kernel.kind = KernelKind::kBwdFallbackCols;
    plan.cols.grid = tiles;
    plan.cols.grid_y = int(plan.nparts);
    plan.cols.block = 256;
  }
  // dgamma / dbeta from the partials: a programmatic dependent of the kernel before (sm_90),
  // launched while that one's last CTAs run, not after its end (H100: (4096, 1024) backward 32.0
  // -> 31.0 us, fp32 and fp16; 16-bit 32768 / 65536 +0.1-0.4 points). PlanOverrides::pdl = false
  // launches it after (bench/cuda_kernel_times.py, whose profile would otherwise count the wait
  // as its time).
  Launch& r = plan.reduce;
  r.kernel.kind = KernelKind::kReducePartials;
  r.pdl = ov.pdl && dev.clusters;
  r.grid = (pb.n + 31) / 32;
  r.block = 32;
  if (plan.nparts >= kManyPartials) {
    r.block_y = 32;
    r.kernel.ry = 32, r.kernel.w = 1;
    return plan;
  }
  r.block_y = 8;
  r.kernel.ry = 8, r.kernel.w = 1;
  // 4 float columns a thread (16-byte loads) where that still leaves a CTA a SM (N >= 16896 on
  // an H100): bf16 65536 (30 partials) 7.1 -> 5.1 us, fp16 32768 7.1 -> 6.2, fp32 65536 4.5 -> 3.9.
  if (acc_size == 4 && pb.n % 4 == 0 && pb.n / 128 >= dev.sm_count) {
    r.grid = (pb.n + 127) / 128;
    r.kernel.w = 4;
  }
  return plan;
}

// Overrides: read by every launch, set rarely (tests, benchmarks), so the default case reads one
// atomic flag and takes no lock.
namespace {
std::mutex overrides_mu;
PlanOverrides overrides_value;
std::atomic<bool> overrides_set{false};
}  // namespace

PlanOverrides plan_overrides() {
  if (!overrides_set.load(std::memory_order_acquire)) return PlanOverrides{};
  const std::lock_guard<std::mutex> lock(overrides_mu);
  return overrides_value;
}

void set_plan_overrides(const PlanOverrides& ov) {
  const std::lock_guard<std::mutex> lock(overrides_mu);
  overrides_value = ov;
  overrides_set.store(!(ov == PlanOverrides{}), std::memory_order_release);
}

}  // namespace cuda_impl
}  // namespace fastln

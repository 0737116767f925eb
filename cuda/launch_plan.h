// Launch plans of the CUDA kernels: which kernel, grid, block, clusters and shared memory a
// problem gets, as a value. Host-only C++ without CUDA headers, so that the Catch2 tests compute
// the plans of every benchmark shape without a GPU (tests/cpp/test_launch_plan.cpp); launch.cu
// executes a plan, and its kernels are built with the constants below.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastln {
namespace cuda_impl {

// ---------------------------------------------------------------- what the kernels are built for
constexpr int kMaxRowThreads = 512;  // a row's (or slice's) threads in the register kernels
constexpr int kMaxCluster = 8;       // the portable cluster size
// Buffers of the rows staged in shared memory (StagedRows): rows k, k + 1 in use, k + 2 loading.
constexpr int kRowStages = 3;
// The staged forward (fwd_staged_kernel): slices of <= kFwdCtaVectors (fwd_config).
constexpr int kStagedThreads = 512, kStagedVectors = 8;
// The staged backward (bwd_staged_kernel): vectors a thread, threads a CTA at most.
constexpr int kBwdStagedVectors = 2, kBwdStagedThreads = 1024;
// Its threads a CTA at most for nvt vectors a thread, the same slice of at most 2048 vectors:
// 16-bit rows with 16-bit parameters take nvt = 4 (launch_plan.cpp, bwd_staged_launch), built for
// 512 threads of <= 128 registers (no spill; at 2 vectors, 64 registers spill 8-72 bytes: nvcc
// 13.0, sm_90).
constexpr int bwd_staged_threads(int nvt) { return kBwdStagedThreads * kBwdStagedVectors / nvt; }
// reduce_partials_kernel takes 32 rows of threads from this many partials on, else 8.
constexpr int64_t kManyPartials = 256;

// Cluster CTAs of the register forward (512 threads, 8 vectors a thread): 2 resident a SM (<= 64
// registers; 16-bit spills 8-40 bytes, fp32 with the fused add 16-24, 16-bit input with float32
// parameters up to 240: docs/cuda.md). CL = 1: no minimum (0: as if none given).
constexpr int fwd_min_ctas(int cl) { return cl == 1 ? 0 : 2; }

// Threads and resident CTAs a backward CTA is built for. Clusters: 16-bit slices of <= 1024
// vectors in <= 256 threads, 3 CTAs a SM (<= 80 registers: 81, allocated as 88, allowed 2),
// or 2 with ROWS = 2 (<= 128); 32-bit in <= 512 threads, 2 a SM. CL = 1: 512 threads, no
// minimum (0: as if none given), or, MINB = 2, 384 threads twice a SM (16-bit rows of 4
// vectors a thread whose column sums fit twice: N = 12288 took 91 registers, one CTA a SM).
constexpr int kBwdTwoCtaThreads = 384;
constexpr int bwd_max_threads(int cl, int elem_size, int minb = 0) {
  return minb == 2 ? kBwdTwoCtaThreads : cl > 1 && elem_size == 2 ? 256 : 512;
}
constexpr int bwd_min_ctas(int cl, int elem_size, int minb, int rows) {
  return cl == 1 ? minb : elem_size == 2 ? (rows == 2 ? 2 : 3) : 2;
}
// The backward kernels built with ROWS = 2 (two rows an iteration): 16-bit cluster slices of 4
// vectors a thread.
constexpr bool bwd_two_rows(int elem_size, int nv, int cl) { return elem_size == 2 && nv == 4 && cl > 1; }

// The cluster kernels built (so the only ones a plan may pick): 16- and 32-bit types, forward 8
// vectors a thread, backward 4.
constexpr bool cluster_type(int elem_size) { return elem_size <= 4; }
constexpr bool fwd_cluster_nv(int nv) { return nv == 8; }
constexpr bool bwd_cluster_nv(int nv) { return nv == 4; }

// A row's slice in each CTA of a cluster of cl: ceil(nvec / cl) vectors, rounded up to a
// multiple of align (the plan's slice_align: 1, 2, 4 or 8; 1 or less: not rounded), the last
// CTA's shorter; cl = 1: the whole row. The kernels (row_slice, the staged buffers) and the plans
// (their shared memory) both take it from here. A power of two, so a mask rounds (a division by
// a runtime value cost the kernels registers). align <= 8 never changes a CTA's threads or
// vectors a thread: those hold multiples of 32 * nv >= 64 vectors.
constexpr int slice_vectors(int nvec, int cl, int align = 1) {
  if (cl <= 1) return nvec;
  const int per = (nvec + cl - 1) / cl;
  return align > 1 ? (per + align - 1) & -align : per;
}

// ---------------------------------------------------------------- inputs of a plan
// What a plan needs of the device, read once per device by launch.cu (cudaDeviceGetAttribute).
struct DeviceProps {
  int sm_count = 132;
  size_t max_dyn_smem = 47 * 1024;  // a CTA's dynamic shared memory: the opt-in limit - 1 KB
  bool clusters = false;            // cluster launch, on this build's sm_90 (or newer) image
};

// The problem: rows of n elements of elem_size bytes (the kernels' T), m of them. vec_ok: n, the
// row strides and every pointer allow 16-byte vectors. residual: the forward's fused add.
struct Problem {
  int n = 0;
  int64_t m = 0;
  int elem_size = 4;
  bool plus_one = false;  // PlusOne parameters (the weight offset): their bits must be the mixed kernels'
  int param_size = 4;  // bytes of a weight element (PlusOne<W>: W's)
  bool residual = false;
  bool vec_ok = true;
  bool dx = true;  // the backward computes dX (LINES orders its iterations by dX's row sums' barriers)
};

// Overrides of the heuristics for experiments and tests (fastln._C.cuda_plan_overrides); the
// defaults change nothing.
struct PlanOverrides {
  int cluster_fwd = 0;      // CTAs a row for forward rows of > 128 vectors where clusters run: 1, 2, 4, 8 (0: heuristics)
  int cluster_bwd = 0;      // the same for the backward
  int partial_cluster = 0;  // CTAs sharing a partial in one-row-a-CTA backward kernels: 1, 2, 4, 8 (0: heuristics)
  bool fwd_staged = true;   // false: the register kernel on cluster rows instead of the staged one
  int bwd_staged = -1;      // the staged backward: -1 heuristics (fp32 rows from kBwdStagedFrom vectors, 16-bit cluster rows of few warps), 0 never, V > 0 rows of >= V vectors (16-bit too)
  bool bwd_two_rows = true; // false: 16-bit cluster slices take one row an iteration
  bool pdl = true;          // false: reduce_partials_kernel launched after the backward, not as its programmatic dependent
  int fwd_nv = 0;           // one-CTA forward rows: 1, 2, 4, 8 or 16 vectors a thread (0: heuristics); rows of <= 128 vectors where that leaves <= 32 threads a row
  int fwd_block = 0;        // forward rows of <= 128 vectors: threads a CTA, 32..512, a power of two (0: heuristics)
  int fwd_hoist = -1;       // one-CTA forward kernels of <= 4 vectors a thread load all their parameters before their stores (fwd_reg_kernel HOIST): -1 heuristics (16-bit rows and parameters, no residual add), 0 never, 1 always
  int bwd_staged_nv = 0;    // the staged backward's vectors a thread on 16-bit rows with 16-bit parameters: 2 or 4 (0: heuristics, 4; the other rows always kBwdStagedVectors)
  int fwd_persist = -1;     // the staged forward's grid: -1 heuristics (a cluster a row where the persistent grid leaves SMs idle that it would fill), 1 persistent, 0 a cluster a row (fwd_staged_kernel ONE_ROW: one row buffer a CTA, at least two CTAs a SM; Quack's shape at fp32 N = 20000-49152)
  int slice_align = 2;     // the backward's cluster slices' vectors rounded up to a multiple of this (slice_vectors): 1 (ceil(n / cl)), 2 (32-byte sectors, the default: fp32 N = 20000's staged slices of 625 vectors over 8 CTAs took 597-600 us, of 626 582-583; 16-bit unchanged; journal.md, session 29), 4, 8 (128-byte lines)
  int bwd_lines = -1;      // -1 heuristics (where some slice starts inside a line and two rows span whole lines, not for the weight offset: launch_plan.cpp), 0 never, 1: the 16-bit register backward's cluster slices of two rows an iteration (16-bit parameters) read from x's 128-byte lines: each iteration's slots shifted by the slice's start in its line, rows paired by parity (bwd_reg_kernel LINES); where the threads hold the slice and 7 vectors more, and never without dX (Problem::dx)
  bool operator==(const PlanOverrides&) const = default;
};

// ---------------------------------------------------------------- a plan
enum class KernelKind : uint8_t {
  kNone,  // nothing to launch (a plan that found no kernel: the launch fails)
  kFwdReg, kFwdStaged, kFwdFallback,
  kBwdReg, kBwdStaged, kBwdFallbackDx, kBwdFallbackCols,
  kReducePartials,
};

// A kernel of the problem's types and norm: its other template arguments as values.
struct KernelId {
  KernelKind kind = KernelKind::kNone;
  int nv = 0;             // fwd_reg, bwd_reg: NV; bwd_staged: NVT (0: kBwdStagedVectors); fallback kernels: VEC (1 or 16 / elem_size)
  int cl = 1;             // CL: CTAs a row (fwd/bwd reg and staged)
  bool acc_smem = false;  // bwd_reg: ACC_SMEM
  int minb = 0;           // bwd_reg: MINB
  int rows = 1;           // bwd_reg: ROWS
  int ry = 0, w = 0;      // reduce_partials: RY, W
  bool hoist = false;     // fwd_reg: HOIST
  bool one_row = false;   // fwd_staged: ONE_ROW
  bool lines = false;     // bwd_reg: LINES
  bool operator==(const KernelId&) const = default;
};

// One kernel launch: grid x (CTAs, a multiple of cluster) and y, block x and y, dynamic shared
// memory, CTAs a cluster along x, and the programmatic-serialization attribute.
struct Launch {
  KernelId kernel;
  int64_t grid = 0;
  int grid_y = 1;
  int block = 0, block_y = 1;
  size_t smem = 0;
  int cluster = 1;
  bool pdl = false;
};

struct FwdPlan {
  int tpr = 0;  // threads a row (FwdParams::tpr)
  Launch main;
};

// The backward: main (register or staged kernel, or the fallback's dX), cols (the fallback's
// column sums) and reduce (the partials' sum) when the launch has partials.
struct BwdPlan {
  int tpr = 0;          // BwdParams::tpr
  int64_t nparts = 0;   // [2][N] partials the launch writes
  int slice_align = 1;  // BwdParams::slice_align (PlanOverrides::slice_align where it is taken, else 1)
  Launch main, cols, reduce;
};

// Resident clusters of cl CTAs (cl = 1: CTAs) of a kernel of the problem at once, for a block
// and dynamic shared memory: launch.cu asks the CUDA runtime (occupancy_resident), tests a model.
struct Occupancy {
  virtual int64_t resident(const KernelId& k, int block, size_t smem, int cl) const = 0;

 protected:
  ~Occupancy() = default;
};
// The persistent grid from the runtime's answers: CTAs resident a SM (occ, < 1 as 1) over the
// SMs in clusters of cl, at most the clusters resident at once (clusters live inside a GPC: H100,
// 256 threads, 64 KB, 3 CTAs a SM: 45 clusters of 8, not 49; <= 0: not known).
int64_t occupancy_resident(int occ, int sm_count, int cl, int64_t clusters);

FwdPlan fwd_plan(const Problem& pb, const DeviceProps& dev, const Occupancy& occ, const PlanOverrides& ov = {});
BwdPlan bwd_plan(const Problem& pb, const DeviceProps& dev, const Occupancy& occ, const PlanOverrides& ov = {});

// The overrides the launchers use: process-wide, for experiments and tests (set them while no
// other thread launches fastln kernels; autograd's backward runs on another thread, so a
// thread-local value would miss it).
PlanOverrides plan_overrides();
void set_plan_overrides(const PlanOverrides& ov);

}  // namespace cuda_impl
}  // namespace fastln

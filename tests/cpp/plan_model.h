// A model of the occupancy answers the CUDA runtime gives the launch plans (cuda/launch_plan.h),
// for H100-like and A100-like devices, without a GPU: CTAs resident a SM from each kernel's
// registers and static shared memory (ptxas -v of the build, kernel_resources.inc), and clusters
// placed inside GPCs. Shared by the generator of the expected plans (cuda_check/gen_old.py
// builds the launch code before the split against it) and test_launch_plan.cpp, so that both
// ask the same questions and get the same answers: what the table checks is the heuristics.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace fastln_plan_model {

struct DeviceModel {
  const char* name;
  const char* arch;  // the image whose ptxas counts apply
  int sms;
  int smem_per_sm;  // shared memory a SM (bytes)
  int smem_optin;   // a CTA's opt-in limit (bytes)
  bool clusters;
  int ptx_version;
  std::vector<int> gpcs;  // SMs a GPC: clusters live inside one
};

inline const DeviceModel& h100() {
  static const DeviceModel d{"H100", "sm_90", 132, 228 * 1024, 227 * 1024, true, 90, {14, 14, 18, 18, 18, 18, 16, 16}};
  return d;
}
inline const DeviceModel& a100() {
  static const DeviceModel d{"A100", "sm_80", 108, 164 * 1024, 163 * 1024, false, 80, {}};
  return d;
}
inline const DeviceModel& device_model(const std::string& name) {
  if (name == "H100") return h100();
  if (name == "A100") return a100();
  throw std::runtime_error("no device model " + name);
}

struct KernelResources {
  const char* arch;
  const char* kernel;  // canonical name, e.g. fwd_reg_kernel<bf16,bf16,8,0,0,1>
  int regs;
  int static_smem;
};

// From ptxas -v (cuda_check/ptxas_counts.py --inc).
inline const std::map<std::pair<std::string, std::string>, std::pair<int, int>>& resources() {
  static const auto table = [] {
    static const KernelResources rows[] = {
#include "kernel_resources.inc"
    };
    std::map<std::pair<std::string, std::string>, std::pair<int, int>> m;
    for (const KernelResources& r : rows) m[{r.arch, r.kernel}] = {r.regs, r.static_smem};
    return m;
  }();
  return table;
}

// CTAs of `kernel` resident a SM (cudaOccupancyMaxActiveBlocksPerMultiprocessor).
inline int blocks_per_sm(const DeviceModel& d, const std::string& kernel, int block, size_t smem) {
  const auto it = resources().find({d.arch, kernel});
  if (it == resources().end()) throw std::runtime_error(std::string("no ptxas counts for ") + d.arch + " " + kernel);
  const int regs = std::max(it->second.first, 1), static_smem = it->second.second;
  if (block <= 0 || block > 1024 || smem > size_t(d.smem_optin)) return 0;
  const int warps = (block + 31) / 32;
  const int by_threads = 64 / warps;
  const int per_warp = ((regs + 7) / 8 * 8 * 32 + 255) / 256 * 256;
  const int by_regs = (65536 / per_warp) / warps;
  const size_t cta_smem = size_t(static_smem) + smem + 1024;
  const int by_smem = int(size_t(d.smem_per_sm) / cta_smem);
  return std::min({32, by_threads, by_regs, by_smem});
}

// Clusters of cl CTAs resident at once (cudaOccupancyMaxActiveClusters): within each GPC.
inline int active_clusters(const DeviceModel& d, const std::string& kernel, int block, size_t smem, int cl) {
  if (!d.clusters) return 0;
  const int occ = blocks_per_sm(d, kernel, block, smem);
  int n = 0;
  for (int g : d.gpcs) n += occ * g / cl;
  return n;
}

// ---------------------------------------------------------------- lines of the table
// A launch: the kernel (its canonical name less "_kernel"), grid, block, dynamic shared memory,
// cluster size and the programmatic-serialization attribute.
inline std::string launch_line(std::string kernel, int64_t gx, int64_t gy, int64_t bx, int64_t by, size_t smem,
                               int cluster, bool pdl) {
  if (const size_t at = kernel.find("_kernel<"); at != std::string::npos) kernel.erase(at, 7);
  std::ostringstream s;
  s << kernel << " g" << gx << "x" << gy << " b" << bx << "x" << by << " s" << smem << " c" << cluster << " p"
    << int(pdl);
  return s.str();
}

}  // namespace fastln_plan_model

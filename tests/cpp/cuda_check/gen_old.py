#!/usr/bin/env python3
"""Writes tests/cpp/launch_plans.txt, the launches that the CUDA launch code before the split
(cuda/layer_norm.cu at REV, default ecbef91) makes for every shape of the benchmark grid: its
host part is compiled with g++ against old_mock.h (the CUDA runtime answered by plan_model.h)
and every launch it makes is recorded. test_launch_plan.cpp checks launch_plan.cpp against it.

  python3 tests/cpp/cuda_check/gen_old.py [REV]    (from the repository root; g++, git)

One line a problem: "DEV T,P NORM DIR rRES vVEC_OK N M KNOBS | tprT npNPARTS retERR | launch ;
launch" (plan_model.h: launch_line). KNOBS: "-", or the old environment knobs that were set
(PlanOverrides now): cf FASTLN_CUDA_CLUSTER_FWD, cb _CLUSTER_BWD, pc _PARTIAL_CLUSTER, fs
_FWD_STAGED, bs _BWD_STAGED, r2 (r2=0: _BWD_ROWS=1), pdl _PDL. The default knobs run every
shape, type pair and direction on both devices (the fallback, vec_ok = 0, on the extra shapes);
each other setting the 2^27 rows on H100, bf16 and fp32, the directions it acts on.
"""
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
REV = sys.argv[1] if len(sys.argv) > 1 else "ecbef91"

NS = (256, 512, 768, 1000, 1024, 1536, 2048, 2560, 3072, 4096, 5120, 6144, 7168, 8192, 10240, 12288, 16384,
      20000, 24576, 32768, 49152, 65536)
SHAPES = [(max(1, round(2**27 / n)), n) for n in NS] + [
    (4096, 1024), (2048, 4096), (8192, 2048), (512, 8192), (16384, 512), (1, 4096), (16, 4096), (128, 8192)]
# Knob settings (old: environment, read once a process), each run over the 2^27 rows on H100.
DEFAULT = "cf=0,cb=0,pc=0,fs=1,bs=-1,r2=1,pdl=1"
KNOBS = {"cf=2": "fwd", "cf=4": "fwd", "cf=8": "fwd", "cf=1": "fwd", "fs=0": "fwd", "cf=2,fs=0": "fwd",
         "cb=1": "bwd", "cb=2": "bwd", "cb=4": "bwd", "cb=8": "bwd", "pc=1": "bwd", "pc=2": "bwd", "pc=8": "bwd",
         "bs=0": "bwd", "bs=64": "bwd", "bs=512": "bwd", "r2=0": "bwd", "pdl=0": "bwd", "cb=2,bs=0": "bwd"}
ENV = {"cf": "FASTLN_CUDA_CLUSTER_FWD", "cb": "FASTLN_CUDA_CLUSTER_BWD", "pc": "FASTLN_CUDA_PARTIAL_CLUSTER",
       "fs": "FASTLN_CUDA_FWD_STAGED", "bs": "FASTLN_CUDA_BWD_STAGED", "r2": "FASTLN_CUDA_BWD_ROWS",
       "pdl": "FASTLN_CUDA_PDL"}


def tag(knobs):
    d = dict(kv.split("=") for kv in DEFAULT.split(","))
    d.update(dict(kv.split("=") for kv in knobs.split(",")) if knobs else {})
    return knobs or "-", d


def env_of(d):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTLN_CUDA_")}
    for k in ("cf", "cb", "pc"):
        if d[k] != "0":
            env[ENV[k]] = d[k]
    if d["fs"] == "0":
        env[ENV["fs"]] = "0"
    if d["bs"] != "-1":
        env[ENV["bs"]] = d["bs"]
    if d["r2"] == "0":
        env[ENV["r2"]] = "1"
    if d["pdl"] == "0":
        env[ENV["pdl"]] = "0"
    return env


def old_host_code(src):
    lines = src.split("\n")
    start = lines.index("// ---------------------------------------------------------------- host side: one dispatch point")
    host = lines[start:]
    # The constants of the kernel band that the host part names.
    consts = []
    text = "\n".join(lines[:start])
    for pat in (r"constexpr int kRowStages = .*?;", r"constexpr int kStagedThreads = .*?;",
                r"constexpr int kBwdStagedVectors = .*?;", r"constexpr int64_t kManyPartials = .*?;",
                r"constexpr int kBwdTwoCtaThreads = .*?;", r"constexpr int bwd_max_threads\(.*?\n}",
                r"template <class T>\nconstexpr bool bwd_two_rows\(.*?\n}"):
        m = re.search(pat, text, re.S)
        assert m, pat
        consts.append(m.group(0))
    out = []
    launches = 0
    for line in host:
        m = re.match(r"^(\s*)(.*?)<<<(.*?)>>>\((.*)\);$", line)
        if m:
            line = f"{m.group(1)}mock_launch({m.group(2)}, {m.group(3)}, {m.group(4)});"
            launches += 1
        out.append(line)
    assert launches == 3, launches
    return ("#define __global__\nnamespace fastln {\nnamespace cuda_impl {\n" + "\n".join(consts) +
            "\n}  // namespace cuda_impl\n}  // namespace fastln\n"
            "namespace fastln {\nnamespace cuda_impl {\n" + "\n".join(out) + "\n")


DRIVER = r"""
#include <iostream>
template <class T, class P>
void run(const std::string& dev, const char* tp, int64_t M, int64_t N, fastln::Norm norm, bool res, bool vec_ok,
         bool bwd, const std::string& ov) {
  using namespace fastln::cuda_impl;
  using A = fastln::acc_t<T>;
  static T t[1];
  static P g[1];
  static A a[1];
  mock::launches.clear();
  mock::tpr = -1;
  std::ostringstream key;
  key << dev << " " << tp << " " << (norm == fastln::Norm::kRms ? "rms" : "layer") << " " << (bwd ? "bwd" : "fwd")
      << " r" << res << " v" << vec_ok << " " << N << " " << M << " " << ov << " | ";
  int64_t nparts = 0;
  int ret = 0;
  if (!bwd) {
    FwdParams<T, P> p{};
    p.X = t, p.ldx = N, p.gamma = g, p.beta = g, p.Y = t, p.mean = a, p.rstd = a, p.N = N, p.eps = 1e-5;
    p.norm = norm, p.M = M;
    if (res) p.R = t, p.ldr = N, p.S = t;
    ret = int(launch_fwd<T, P>(p, vec_ok, nullptr));
  } else {
    BwdParams<T, P> p{};
    p.dY = t, p.lddy = N, p.X = t, p.ldx = N, p.mean = a, p.rstd = a, p.gamma = g, p.dX = t, p.M = M, p.N = N;
    p.norm = norm;
    nparts = bwd_num_partials<T, P>(p, vec_ok, mock::current);
    p.partial = a;
    ret = int(launch_bwd<T, P>(p, vec_ok, nparts, g, g, nullptr));
  }
  std::cout << key.str() << "tpr" << mock::tpr << " np" << nparts << " ret" << ret << " |";
  for (size_t i = 0; i < mock::launches.size(); ++i) std::cout << (i ? " ; " : " ") << mock::launches[i];
  std::cout << "\n";
}

int main(int argc, char** argv) {
  const std::string ov = argv[1];
  const std::string scope = argv[2];  // all, or the knobs' direction: fwd, bwd
  const bool all = scope == "all";
  const int64_t shapes[][2] = {SHAPES};
  const int nshapes = all ? int(sizeof(shapes) / sizeof(shapes[0])) : NGRID;
  for (int d = 0; d < (all ? 2 : 1); ++d) {
    mock::current = d;
    const std::string dev = mock::devices[d]->name;
    for (int s = 0; s < nshapes; ++s)
      for (fastln::Norm norm : {fastln::Norm::kLayer, fastln::Norm::kRms})
        for (int dir = 0; dir < 3; ++dir)
          for (bool vec_ok : {true, false}) {
            if (!vec_ok && !(all && s >= NGRID)) continue;  // the fallback: on the extra shapes
            const int64_t M = shapes[s][0], N = shapes[s][1];
            const bool bwd = dir == 2, res = dir == 1;
            if (!all && (bwd ? scope != "bwd" : scope != "fwd")) continue;
            run<fastln::bf16, fastln::bf16>(dev, "bf16,bf16", M, N, norm, res, vec_ok, bwd, ov);
            run<float, float>(dev, "float,float", M, N, norm, res, vec_ok, bwd, ov);
            if (!all) continue;
            run<fastln::fp16, fastln::fp16>(dev, "fp16,fp16", M, N, norm, res, vec_ok, bwd, ov);
            run<double, double>(dev, "double,double", M, N, norm, res, vec_ok, bwd, ov);
            run<fastln::bf16, float>(dev, "bf16,float", M, N, norm, res, vec_ok, bwd, ov);
            run<fastln::fp16, float>(dev, "fp16,float", M, N, norm, res, vec_ok, bwd, ov);
          }
  }
}
"""


def main():
    src = subprocess.run(["git", "-C", ROOT, "show", f"{REV}:cuda/layer_norm.cu"], capture_output=True, text=True,
                         check=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(f"git -C {ROOT} archive {REV} cuda/layer_norm_cuda.h src/cpp/kernels/layer_norm.h"
                       f" | tar x -C {tmp}", shell=True, check=True)
        tu = os.path.join(tmp, "gen.cpp")
        shapes = ", ".join(f"{{{m}, {n}}}" for m, n in SHAPES)
        driver = DRIVER.replace("SHAPES", shapes).replace("NGRID", str(len(NS)))
        with open(tu, "w") as f:
            f.write('#include "old_mock.h"\n' + old_host_code(src) + driver)
        exe = os.path.join(tmp, "gen")
        subprocess.run(["g++", "-std=c++20", "-O1", f"-I{os.path.join(HERE, 'stub')}", f"-I{HERE}",
                        f"-I{os.path.join(tmp, 'cuda')}", tu, "-o", exe], check=True)
        out = []
        for knobs, scope in [("", "all")] + list(KNOBS.items()):
            t, d = tag(knobs)
            out.append(subprocess.run([exe, t, scope], env=env_of(d), capture_output=True, text=True,
                                      check=True).stdout)
    path = os.path.join(ROOT, "tests", "cpp", "launch_plans.txt")
    with open(path, "w") as f:
        f.write(f"# Generated by tests/cpp/cuda_check/gen_old.py from cuda/layer_norm.cu at {REV} (before the\n"
                "# split): the launches of every problem (test_launch_plan.cpp checks launch_plan.cpp against them).\n")
        f.write("".join(out))
    print(path, sum(o.count("\n") for o in out), "lines")


if __name__ == "__main__":
    main()

#!/bin/bash
# The one-CTA forward's SASS without a GPU (session 20): fwd_reg_kernel<bf16, bf16, 4, layer, no
# residual, CL = 1>, the kernel of bf16 (2048, 4096), instantiated alone, for sm_90a. Needs nvcc and a
# cuobjdump (the CUDA toolkit's, or the one in Triton's wheel: triton/backends/nvidia/bin/cuobjdump).
# The parameters' loads (LDG.E.128 after the mean/rstd STG.E) each follow the previous STG.E.128.
# Liger's kernel, for the comparison: its _layer_norm_forward_kernel (liger_kernel/ops/layer_norm.py)
# through triton.compile(ASTSource(fn, signature, constexprs={BLOCK_SIZE: 4096, strides of 1}),
# target=GPUTarget("cuda", 90, 32), options={"num_warps": 8}); the result's asm["cubin"].
# Usage: bash docs/journal/scripts/fwd_sass.sh OUT_DIR [CUOBJDUMP]   (repository root)
set -e
out=${1:-/tmp/fwd_sass}; cuobj=${2:-cuobjdump}; mkdir -p "$out"
cat > "$out/inst.cu" <<'CU'
#include "forward.cuh"
namespace fastln { namespace cuda_impl {
template __global__ void fwd_reg_kernel<bf16, bf16, 4, Norm::kLayer, false, 1>(FwdParams<bf16, bf16>);
}}
CU
nvcc -cubin -arch=sm_90a -Xptxas=-v -std=c++20 --expt-relaxed-constexpr -O3 -Icuda -Isrc/cpp -Isrc/cpp/kernels \
  -o "$out/fwd.cubin" "$out/inst.cu"
"$cuobj" -sass "$out/fwd.cubin" > "$out/fwd.sass"
grep -nE "LDG|STG|BAR.SYNC" "$out/fwd.sass"

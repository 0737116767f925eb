#!/bin/bash
# Model-level benchmark on a GPU: `python -m fastln bench --model NAME --device cuda` for each
# model, one process per model (an out-of-memory in one leaves the others), JSON under $OUT.
# Usage (repository root on the GPU machine, fastln installed with FASTLN_CUDA=ON, or BUILD=1):
#   OUT=/tmp/out bash bench/model_bench_gpu.sh
# Variables: MODELS (default "bert gpt2 llama t5 gemma cohere nemotron"), DTYPE (default bfloat16), ARGS (more
# options for every model, e.g. "--layers 4 --batch 4 --seq 1024 --budget 15"), BUILD=1 (build
# and install fastln from this checkout first; ARCHS, default 90), PYTHON (default python3).
# Sizes (fastln/model_bench.py, PRESETS["cuda"]): BERT-large / GPT-2 medium / Llama-2-7B /
# T5-v1.1-large / Gemma-2B / Command R7B / Nemotron-Mini-4B widths with 8 layers (t5: 6 + 6), 8 x 1024
# tokens (bert 16 x 512).
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
PYTHON=${PYTHON:-python3}
MODELS=${MODELS:-"bert gpt2 llama t5 gemma cohere nemotron"}
DTYPE=${DTYPE:-bfloat16}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
if [ "${BUILD:-0}" = 1 ]; then
  FASTLN_CUDA=ON $PYTHON -m pip install --no-build-isolation --no-deps -q \
    -C cmake.define.FASTLN_CUDA_ARCHITECTURES="${ARCHS:-90}" -C build-dir=/tmp/fastln-build . \
    > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
fi
# From /tmp: the installed fastln, not this checkout's src/ (which is not importable anyway).
cd /tmp || exit 1
$PYTHON -c "import fastln, torch; assert fastln._C.cuda, 'fastln is built without CUDA kernels (FASTLN_CUDA=ON)'; \
print('fastln', fastln.__version__, 'cuda archs', fastln._C.cuda_archs, 'torch', torch.__version__, \
'restore_norms', hasattr(fastln, 'restore_norms'))" || exit 2
$PYTHON -c "import transformers; print('transformers', transformers.__version__)" \
  || { echo "transformers is missing: pip install transformers"; exit 2; }
rc=0
for m in $MODELS; do
  echo "== $m"
  $PYTHON -m fastln bench --model "$m" --device cuda --dtype "$DTYPE" $ARGS \
    --json "$OUT/models_cuda_${DTYPE}_$m.json" 2>&1 | tee "$OUT/models_cuda_${DTYPE}_$m.log" | grep -v "^\[transformers\]"
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "$m failed (log: $OUT/models_cuda_${DTYPE}_$m.log)"; rc=1; }
done
# One table from all the JSON files.
$PYTHON - "$OUT" "$DTYPE" <<'PY' | tee "$OUT/models_cuda_${DTYPE}.txt"
import glob, json, sys
from fastln import model_bench
rows = []
for path in sorted(glob.glob(f"{sys.argv[1]}/models_cuda_{sys.argv[2]}_*.json")):
    rows += [model_bench.Row(**r) for r in json.load(open(path))["results"]]
print(model_bench.table(rows))
PY
exit $rc

#!/bin/bash
# One device call: build (sm_90 unless ARCHS is set), tests, sanitizers, benchmark.
# Usage (repo root on the device): STAGES="build test sanitize bench" bash bench/device_run.sh
# Stages: patch (git apply each file of PATCHES, e.g. a prepared diff of docs/journal, before a
# build), build, smoke (an error path), cpuonly (a FASTLN_CUDA=OFF build beside it: its error
# and packaging tests, with CUDA tensors), test, checks (test and sanitize side by side), huge (FASTLN_TEST_HUGE=1 test_huge.py, ~35 GB
# of GPU memory), sanitize (memcheck and racecheck side by side), bench, opsbench, sweep
# (launch-plan A/Bs: --suites plans --plans "$SWEEP_PLANS", e.g. SWEEP_PLANS=cluster_fwd=2,cluster_fwd=4), ktimes
# (the backward's time per kernel; KTIMES_ARGS), abs (several benchmark runs, ABS, one archive),
# profile (mid_fwd_ncu.py --profile over PROFILE_CASES), ncu (bwd_reg_kernel under Nsight Compute over
# NCU_CASES, e.g. "6721 19968 float16 bwd_lines=0; 6721 19968 float16 bwd_lines=1"). The benchmark stages run fastln.benchmark
# (python -m fastln bench --device cuda): bench = the default CUDA suites (kernel, ops, user, mixed,
# offset with the peers where importable, calls, devices), opsbench = --suites ops, ktimes = --suites
# bwd_kernels; BENCH_ARGS are more options (e.g. --quick); results in $OUT/<stage>/cuda_<card>.json
# (+ .md and plots.tgz), its log in $OUT/<stage>.log; `python -m fastln bench --merge` takes the JSON
# into bench/results.
# TEST_ARGS: pytest's arguments instead of the whole suite, quoted as on a command line
# (e.g. "tests/python/test_cuda.py -k 'staged or pdl'").
# The peers (Liger, Quack: ../shared/peers/device-peers.md; bench/fetch_peers.sh downloads and
# splits them here) travel as wheels in two calls on one warm machine: stash (carry .big/a: the first half of the cutlass-dsl cu13 wheel kept in
# /root/stash), then peers (carry .whl and .big/b: the wheels installed into /tmp/site, which
# every later stage and call on that machine puts on PYTHONPATH; the tree with .whl and .big/b
# passed the 64 MiB a call may carry in session 32: move docs/journal/data out of it for that
# call, the device needs none of it). models: bench/model_bench_gpu.sh
# (MODELS, ARGS as there).
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
ARCHS=${ARCHS:-90}
STAGES=${STAGES:-"build smoke test sanitize bench"}
export PYTHONUNBUFFERED=1
[ -d /tmp/site ] && export PYTHONPATH=/tmp/site:/tmp/site/nvidia_cutlass_dsl/dsl_packages
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv | tee $OUT/gpu.txt
# $OUT brings back at most 8 files: a benchmark stage writes its results in a folder of the
# machine (a fresh one, or an --out of BENCH_ARGS, which stays on the warm machine and is merged
# into call by call), then copies the JSON and table into $OUT/NAME and its plots as one archive:
# 4 files a stage with its log, so one benchmark stage a call beside build.log and gpu.txt.
bench_into() {  # NAME LOG_LINES ARGS...: python -m fastln bench --device cuda ARGS
  local name=$1 lines=$2 res out; shift 2
  res=$(mktemp -d /tmp/bench.XXXX); out=(--out "$res")
  # an --out of ARGS is the one folder (passed once: the results file's run line repeats it otherwise)
  [[ " $* " =~ \ --out\ ([^ ]+) ]] && res=${BASH_REMATCH[1]} && out=()
  (cd /tmp && python3 -m fastln bench --device cuda --no-progress "${out[@]}" "$@" 2>&1) | tee $OUT/$name.log | tail -$lines
  mkdir -p $OUT/$name && cp "$res"/*.json "$res"/*.md $OUT/$name/ 2>/dev/null
  (cd "$res" && ls *.png >/dev/null 2>&1 && tar czf $OUT/$name/plots.tgz *.png)
}
for st in $STAGES; do case $st in
patch)
  for d in $PATCHES; do git apply "$d" || { echo "patch: $d does not apply"; exit 1; }; echo "patch: $d"; done ;;
stash)
  mkdir -p /root/stash && cp .big/a/* /root/stash/ && echo "stash: $(ls /root/stash)" ;;
peers)
  CU13=nvidia_cutlass_dsl_libs_cu13-4.8.1-cp312-cp312-manylinux_2_28_x86_64.whl
  cat /root/stash/*_aa .big/b/*_ab > /tmp/$CU13 \
    && python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl /tmp/$CU13 \
    || { echo "peers: install failed"; exit 1; }
  export PYTHONPATH=/tmp/site:/tmp/site/nvidia_cutlass_dsl/dsl_packages
  (cd /tmp && python3 -c "import liger_kernel, quack; print('peers: liger', liger_kernel.__file__ and 'ok', 'quack', quack.__version__)") ;;
models)  # a JSON file and a log per model: one archive, as $OUT brings back at most 8 files
  OUT=$OUT/models bash bench/model_bench_gpu.sh; tar czf $OUT/models.tgz -C $OUT models && rm -rf $OUT/models ;;
build)
  # ninja rebuilds what is newer than its objects, and a call's copy of the tree keeps its files'
  # times: a source put back to an older text (the call before applied a patch, this one does not)
  # looked built, and session 34's "baseline" ran the patched kernels (build 22 s). Touch every
  # source whose text differs from the last build's (/tmp/fastln-build/src.sha).
  t0=$(date +%s); mkdir -p /tmp/fastln-build
  find CMakeLists.txt tools cuda src/cpp -type f | sort | xargs sha256sum > /tmp/src.sha
  if [ -f /tmp/fastln-build/src.sha ]; then
    diff /tmp/fastln-build/src.sha /tmp/src.sha | awk '/^>/ {print $3}' > /tmp/src.changed
  else awk '{print $2}' /tmp/src.sha > /tmp/src.changed; fi  # no stamp: a build dir of unknown sources
  xargs -r touch < /tmp/src.changed
  echo "build: $(wc -l < /tmp/src.changed) sources changed since the last build"
  FASTLN_CUDA=ON python3 -m pip install --no-build-isolation --no-deps -q \
    -C cmake.define.FASTLN_CUDA_ARCHITECTURES="$ARCHS" -C build-dir=/tmp/fastln-build . > $OUT/build.log 2>&1 \
    || { tail -50 $OUT/build.log; exit 1; }
  cp /tmp/src.sha /tmp/fastln-build/src.sha
  echo "build ok $(( $(date +%s) - t0 ))s"
  (cd /tmp && python3 -c "import fastln; print('cuda', fastln._C.cuda, fastln._C.cuda_archs)") ;;
smoke)
  cat > /tmp/smoke.py <<'PY'
import torch, fastln
try:
    fastln.layer_norm(torch.randn(2, 4), (5,))
except RuntimeError as e:
    print("smoke: error path ok")
PY
  (cd /tmp && python3 smoke.py) || (cd /tmp && cuda-gdb -batch -ex run -ex bt --args python3 smoke.py 2>&1 | tail -30) ;;
cpuonly)  # the same sources built without CUDA: every op on a CUDA tensor must say so
  FASTLN_CUDA=OFF python3 -m pip install --no-build-isolation --no-deps -q --target /tmp/cpuonly \
    -C build-dir=/tmp/fastln-build-cpu . > $OUT/build_cpu.log 2>&1 || tail -20 $OUT/build_cpu.log
  PYTHONPATH=/tmp/cpuonly python3 -m pytest tests/python/test_errors.py tests/python/test_package.py -q \
    -p no:cacheprovider > $OUT/pytest_cpuonly.log 2>&1
  echo "cpu-only build: $(tail -1 $OUT/pytest_cpuonly.log)" ;;
test)  # -v: each test's outcome as it ends; SIGINT at TEST_TIMEOUT: pytest still prints its summary;
  # --durations: which tests take the call's time (a 140 s limit cut the op table's CUDA parity cases);
  # one CPU thread a worker: 12 workers of 16 threads each on 16 cores left the op table's CUDA
  # parity cases (their float64 references on the CPU) unfinished after 430 s; with one, all 44
  # took 86 s and the whole suite 172 s (H100 machine, 2026-12-06)
  # TEST_ARGS is read as the shell reads a command line: -k 'staged or ahead' stays one argument
  # (split on spaces, its quotes went to pytest: session 28's call collected nothing)
  eval "test_args=(${TEST_ARGS:-tests/python})"
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} timeout -s INT ${TEST_TIMEOUT:-480} python3 -m pytest "${test_args[@]}" -v -rfE -n 12 -p no:cacheprovider \
    --durations=25 > $OUT/pytest.log 2>&1
  grep -E "^(FAILED|ERROR) |passed|failed" $OUT/pytest.log | tail -40 ;;
huge)
  FASTLN_TEST_HUGE=1 python3 -m pytest tests/python/test_huge.py -q -p no:cacheprovider --durations=5 \
    > $OUT/pytest_huge.log 2>&1
  echo "huge: $(tail -1 $OUT/pytest_huge.log)" ;;
sanitize)  # SANITIZE_TIMEOUT (s, 0: none): racecheck over the whole workload took more than 280 s
  # (H100, session 20); rc 124 is a cut, its log says how far it came. SANITIZE_OPS: op names of
  # sanitize_cuda.py to run alone, and KEY=VALUE plan overrides (e.g. fwd_hoist=1).
  # SANITIZE_TOOLS: the tools (default both; racecheck alone once memcheck has passed).
  for tool in ${SANITIZE_TOOLS:-memcheck racecheck}; do
    (timeout -s INT ${SANITIZE_TIMEOUT:-0} compute-sanitizer --tool $tool --error-exitcode 9 python3 bench/sanitize_cuda.py \
       $SANITIZE_OPS > $OUT/sanitize_$tool.log 2>&1
     echo "sanitizer $tool rc=$? $(tail -2 $OUT/sanitize_$tool.log | tr '\n' ' ')") &
  done
  wait ;;
checks)  # test and sanitize side by side (one GPU; session 20 ran them so): TEST_TIMEOUT, SANITIZE_TIMEOUT
  STAGES=sanitize bash "$0" & STAGES=test bash "$0"; wait ;;
bench)  # BENCH_ARGS e.g. "--deadline 400 --suites kernel --dtypes float16": the cases done are kept
  bench_into bench 60 $BENCH_ARGS ;;
opsbench)
  bench_into opsbench 60 --suites ops $BENCH_ARGS ;;
sweep)
  bench_into sweep 40 --suites plans --plans "$SWEEP_PLANS" $BENCH_ARGS ;;
ktimes)
  bench_into ktimes 60 --suites bwd_kernels $KTIMES_ARGS ;;
abs)  # several benchmark runs in one call, one archive back: ABS="NAME ARGS...; NAME ARGS..." (each
  # e.g. "persist --suites kernel --shapes 6711x20000 --plans fwd_persist=0 --deadline 200");
  # $OUT/abs.tgz holds each run's folder (JSON, table, log), merged or read here
  IFS=';' read -ra runs <<< "$ABS"
  for r in "${runs[@]}"; do
    read -r name args <<< "$r"
    [ -n "$name" ] || continue
    mkdir -p /tmp/abs/$name
    (cd /tmp && python3 -m fastln bench --device cuda --no-progress --out /tmp/abs/$name $args 2>&1) > /tmp/abs/$name/log
    echo "abs $name: $(grep -c '^| cuda' /tmp/abs/$name/log) rows"; grep "^Geometric" /tmp/abs/$name/log | tail -1
  done
  tar czf $OUT/abs.tgz -C /tmp abs ;;
ncu)  # the backward's register kernel under Nsight Compute, NCU_CASES="M N DTYPE [KEY=VALUE...]; ..."
  # (docs/journal/scripts/bwd16_ncu.py): per case its sections' text and its SASS source counters
  # (csv for sass_stalls.py), all in $OUT/ncu.tgz
  mkdir -p /tmp/ncu; IFS=';' read -ra cases <<< "$NCU_CASES"; i=0
  for c in "${cases[@]}"; do
    i=$((i + 1)); echo "== $i: $c" | tee -a /tmp/ncu/cases.txt
    ncu --clock-control none -k regex:bwd_reg_kernel --launch-skip 3 --launch-count 1 --section SpeedOfLight \
      --section WarpStateStats --section InstructionStats --section Occupancy --section SourceCounters \
      -o /tmp/ncu/c$i python3 docs/journal/scripts/bwd16_ncu.py $c > /tmp/ncu/c$i.log 2>&1
    ncu -i /tmp/ncu/c$i.ncu-rep --page details > /tmp/ncu/c$i.txt 2>&1
    ncu -i /tmp/ncu/c$i.ncu-rep --page source --print-source sass --csv 2>/dev/null | gzip > /tmp/ncu/c$i.csv.gz
    grep -E "Duration|Executed Ipc A|Issue Slots Busy|Warp Cycles Per Issued|Executed Instructions  " /tmp/ncu/c$i.txt
  done
  tar czf $OUT/ncu.tgz --exclude='*.ncu-rep' -C /tmp ncu ;;
profile)  # the mid-size forward's do_bench gap under CUPTI (docs/journal/scripts/mid_fwd_ncu.py
  # --profile), PROFILE_CASES="M N DTYPE; M N DTYPE --sleep CYCLES; M N DTYPE --clean" (a spin, or a
  # read of another 256 MB, between the memset and the call); the peers on PYTHONPATH when installed
  IFS=';' read -ra cases <<< "${PROFILE_CASES:-2048 4096 bfloat16; 16384 512 float16}"
  for c in "${cases[@]}"; do
    echo "== $c"; python3 docs/journal/scripts/mid_fwd_ncu.py $c --profile 2>&1 | grep -v "^USDT\|Warning"
  done | tee $OUT/profile.txt ;;
esac; done

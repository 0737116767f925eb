"""Drop the "compile" cells of bench/results/*.json that timed torch eager (session 35).

fastln.benchmark compiled one function per op for the whole process (torch.compile, dynamic=False),
and Dynamo runs a function's specializations past config.recompile_limit (8: each shape, dtype and
requires_grad is one) eagerly, with a warning in the log and no error. So in each benchmark process
only the first 8 cases of an op had a compiled "compile" column. The harness compiles each case
afresh since session 35 (benchmark._compiled; test_every_compile_case_runs_its_own_graph); the cells
measured before it are kept where they were among the first 8 of their process, from the run's
case order and log (journal.md, session 35), and dropped elsewhere:
  user (session 35's run, one process, bf16 before fp32, fwd and fwd+bwd a shape): the four first
    shapes of bf16 compiled, for each op; every other cell timed eager (compile / torch 0.98-1.02).
  mixed, session 24's cells (N <= 4096; calls, offset, mixed in one process, bf16+fp32 first):
    bf16+fp32 compiled (4 shapes x 2 modes an op); bf16, fp16 and fp32 eager.
  mixed, session 35's cells (N = 32768, 65536; ops then mixed in one process, bf16, bf16+fp32,
    fp32): bf16 and bf16+fp32 compiled; fp32 eager.
  cpu.json's user suite (2026-12-05, one process, fp32 then bf16, fwd and fwd+bwd a shape): the
    four first fp32 shapes compiled, the rest eager (bf16 compile / torch 1.01-1.13 there, against
    0.46-1.05 from the fixed harness on this machine in session 35). All 30 dropped: a geomean
    over the four smallest fp32 shapes alone (2.21x / 2.58x) would say less than none.
Run once from the repository root (rewrites the file, its table and plots), then
`python -m fastln bench --readme`:
    python docs/journal/scripts/drop_eager_compile_cells.py bench/results/cuda_h100.json
    python docs/journal/scripts/drop_eager_compile_cells.py bench/results/cpu.json
"""
import sys
from pathlib import Path

from fastln import benchmark as B

USER_COMPILED = {(131072, 1024), (65536, 2048), (32768, 4096), (16384, 8192)}


def compiled(r: dict) -> bool:
    if r["device"] == "cpu":
        return r["suite"] != "user"
    if r["suite"] == "user":
        return r["dtype"] == "bfloat16" and (r["M"], r["N"]) in USER_COMPILED
    if r["suite"] == "mixed":
        if r["N"] >= 32768:
            return r["dtype"] in ("bfloat16", "bfloat16+float32")
        return r["dtype"] == "bfloat16+float32"
    return True


path = Path(sys.argv[1])
data = B.load(path)
keep = [r for r in data["results"] if r["impl"] != "compile" or compiled(r)]
print(f"{path}: dropped {len(data['results']) - len(keep)} compile cells, kept "
      f"{sum(r['impl'] == 'compile' for r in keep)}")
data["results"] = keep
sys.exit(B.write_results(data, path.parent, path.stem, fresh=True, echo=False))

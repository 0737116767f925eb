"""Two kernels' executed instructions side by side, by opcode, from Nsight Compute's source pages
(journal.md, session 32: fp16's LINES backward kernel against its plain one). The csv files are
what bench/device_run.sh's ncu stage brings back (`ncu -i R --page source --print-source sass
--csv`, gzipped or not).

    python3 sass_exec_diff.py A.csv.gz B.csv.gz [TOP]

prints each kernel's executed instructions and stall samples, then the TOP opcodes whose executed
count differs most (thousands, A then B), then, for the opcodes given as more arguments, how
often each instruction of that opcode ran (count of instructions by times executed: the
per-iteration counts show up as the loop's trip count).
"""
import collections
import re
import sys

from ncu_csv import SourcePage


def load(path):
    """(opcode without its predicate, times executed, stall samples) an instruction"""
    page = SourcePage(path)
    return [(re.sub(r"^@!?U?P\w+\s+", "", page.sass(r)).split(" ")[0], page.num(r, "Instructions Executed"),
             page.num(r, "Warp Stall Sampling (All Samples)")) for r in page.rows]


a, b = load(sys.argv[1]), load(sys.argv[2])
top = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3].isdigit() else 20
ops = [x for x in sys.argv[3:] if not x.isdigit()]
ca, cb = collections.Counter(), collections.Counter()
for op, e, _ in a:
    ca[op] += e
for op, e, _ in b:
    cb[op] += e
for name, k in (("A", a), ("B", b)):
    print(f"{name}: {sum(e for _, e, _ in k) / 1e6:.2f} M instructions executed, {sum(s for *_, s in k):.0f} samples")
for op in sorted(set(ca) | set(cb), key=lambda o: -abs(cb[o] - ca[o]))[:top]:
    print(f"  {op:32s} {ca[op] / 1e3:9.0f}k {cb[op] / 1e3:9.0f}k {(cb[op] - ca[op]) / 1e3:+8.0f}k")
for op in ops:
    for name, k in (("A", a), ("B", b)):
        hist = collections.Counter(int(e) for o, e, _ in k if o == op)
        print(f"{op} {name}: " + ", ".join(f"{n} x {e}" for e, n in sorted(hist.items(), key=lambda x: -x[0] * x[1])[:6]))

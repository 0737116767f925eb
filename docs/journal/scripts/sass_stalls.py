"""Where a kernel's warps wait, instruction by instruction, from Nsight Compute's source page
(journal.md, session 28). On the device:

    ncu --clock-control none -k regex:fwd_staged --launch-count 1 --section WarpStateStats \\
        --section SourceCounters -o fwd python3 bwd16_ncu.py 6711 20000 float32
    ncu -i fwd.ncu-rep --page source --print-source sass --csv > sass_fwd.csv

Here: python3 sass_stalls.py sass_fwd.csv[.gz] [TOP] [FROM:TO ...]
prints the kernel's stall reasons over all samples, the TOP instructions by samples (in address
order: index, share of samples, times executed, SASS, the two main reasons), then the SASS of
each FROM:TO range of indices (the context of a hot instruction).
"""
import collections
import sys

from ncu_csv import SourcePage

page = SourcePage(sys.argv[1])
top = int(sys.argv[2]) if len(sys.argv) > 2 else 30
data, col, num = page.rows, page.col, page.num
reasons = [h for h in page.header if h.startswith("stall_") and "Not Issued" not in h]
SAMPLES = "Warp Stall Sampling (All Samples)"

total = sum(num(r, SAMPLES) for r in data) or 1.0
by_reason = collections.Counter()
for r in data:
    for s in reasons:
        by_reason[s] += num(r, s)
print(page.kernel)
print(f"{total:.0f} samples;", ", ".join(f"{s[6:]} {v / total:.1%}" for s, v in by_reason.most_common(8)))
hot = sorted(range(len(data)), key=lambda i: -num(data[i], SAMPLES))[:top]
for i in sorted(hot):
    r, n = data[i], num(data[i], SAMPLES)
    main = sorted(((num(r, s), s[6:]) for s in reasons), reverse=True)[:2]
    why = " ".join(f"{s}:{v / max(n, 1):.0%}" for v, s in main)
    print(f"{i:5d} {n / total:6.1%} {r[col['Instructions Executed']]:>9s}  {r[col['Source']].strip()[:64]:64s} {why}")
for span in sys.argv[3:]:
    a, b = (int(v) for v in span.split(":"))
    print(f"--- {a}:{b}")
    for i in range(a, min(b, len(data))):
        r = data[i]
        print(f"{i:5d} {num(r, SAMPLES) / total:6.1%} {r[col['Instructions Executed']]:>9s}  {r[col['Source']].strip()[:90]}")

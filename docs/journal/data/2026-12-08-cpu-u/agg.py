import json, statistics
def load(f):
    runs=[json.loads(l) for l in open(f)]
    return runs
old, new = load('e2e_old.jsonl'), load('e2e_new.jsonl')
print(f"{len(old)} old and {len(new)} new processes, alternated; per case: min over processes of the batch minima, median of the medians; µs")
print(f"{'case':22s} {'fastln old':>11s} {'new':>8s} {'new/old speedup min/med':>24s} | {'add old':>8s} {'new':>8s} {'speedup':>12s} | torch old/new (control)")
for case in old[0]:
    def agg(runs, k):
        return min(r[case][k][0] for r in runs)*1e6, statistics.median(r[case][k][1] for r in runs)*1e6
    fo, fn_ = agg(old,'fastln'), agg(new,'fastln'); ao, an = agg(old,'add'), agg(new,'add'); to, tn = agg(old,'torch'), agg(new,'torch')
    print(f"{case:22s} {fo[0]:8.1f} {fn_[0]:8.1f}   {fo[0]/fn_[0]:5.2f}x / {fo[1]/fn_[1]:5.2f}x        | {ao[0]:8.1f} {an[0]:8.1f} {ao[0]/an[0]:5.2f}x/{ao[1]/an[1]:4.2f}x | {to[0]/tn[0]:.2f} / {to[1]/tn[1]:.2f}")

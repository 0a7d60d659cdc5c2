"""The load benchmark's report (benches/load/compare.sh): per topology, medians over rounds with
every ratio to NGINX, then the paired ratios; peak and idle memory.

    report.py RESULTS_DECL TOPOLOGIES CONTENDERS IDLE_BEFORE_KB IDLE_AFTER_KB CASES

RESULTS_DECL is bash's `declare -p` of the results: keys TOPOLOGY:CONTENDER:CASE, each value
rounds of "rps p50_ms p99_ms cpu_ms_per_1k non2xx peak_rss_kb" separated by ";"; keys
rss:CONTENDER. CASES: the case names, in order.
"""
import re
import statistics
import sys

decl, topologies, contenders = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
idle_before, idle_after = int(sys.argv[4]), int(sys.argv[5])
res = dict(re.findall(r'\[([^\]]+)\]="([^"]*)"', decl))
CASES = sys.argv[6].split() if len(sys.argv) > 6 else ["small", "64k", "conns"]
others = [c for c in contenders if c != "nginx"]


def rows(key):
    return [list(map(float, r.split())) for r in res.get(key, "").split(";") if r.strip()]


def med(key, i):
    v = [r[i] for r in rows(key)]
    return statistics.median(v) if v else float("nan")


for topo in topologies:
    print(f"### Topology: {topo}")
    print()
    print("| case | contender | req/s | p50 ms | p99 ms | CPU ms / 1k req | non-2xx | peak RSS MB | req/s vs NGINX | CPU vs NGINX | p99 vs NGINX |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for case in CASES:
        n = {i: med(f"{topo}:nginx:{case}", i) for i in range(6)}
        for who in ["baseline"] + contenders:
            if not rows(f"{topo}:{who}:{case}"):
                continue
            v = {i: med(f"{topo}:{who}:{case}", i) for i in range(6)}
            ratio = lambda i: f"{v[i] / n[i]:.2f}x" if who != "baseline" and n[i] else "-"
            cpu = f"{v[3]:.3f}" if who != "baseline" else "-"
            rss = f"{v[5] / 1000:.1f}" if who != "baseline" else "-"
            print(f"| {case} | {who} | {v[0]:.0f} | {v[1]:.3f} | {v[2]:.3f} | {cpu} | {v[4]:.0f} | {rss} | {ratio(0)} | {ratio(3)} | {ratio(2)} |")
    print()
    # Each round runs the contenders back to back: a slow phase of a shared machine that spans a
    # round moves them alike, and cancels in that round's ratio; one that starts mid-round shows
    # as one odd round, which the median over rounds passes over.
    print(f"Paired ({topo}): the median over rounds of each round's ratio to that round's NGINX run.")
    print()
    print("| case | contender | req/s vs NGINX | CPU vs NGINX | p99 vs NGINX | peak RSS vs NGINX |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for case in CASES:
        base = rows(f"{topo}:nginx:{case}")
        for who in others:
            pairs = list(zip(rows(f"{topo}:{who}:{case}"), base))

            def paired(i):
                v = [w[i] / n[i] for w, n in pairs if n[i]]
                return f"{statistics.median(v):.2f}x" if v else "-"

            if pairs:
                print(f"| {case} | {who} | {paired(0)} | {paired(3)} | {paired(2)} | {paired(5)} |")
    print()
print("peak RSS (kB): " + ", ".join(f"{w} {res.get('rss:' + w, '?')}" for w in contenders))
print(f"canary-proxy RSS with 1000 idle keep-alive connections, after the load: {idle_after} kB "
      f"(before opening them: {idle_before} kB; a fresh process: benches/load/idle.sh)")

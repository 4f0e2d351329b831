#!/usr/bin/env python3
"""Training throughput ratios from a gpu_check bench.jsonl: for each model and
length, every elastic_train configuration (impl "elastic", "elastic ce-fused",
"elastic plain", ...) against the PyTorch peer of the same run, eager and
torch.compile (impl "torch", "torch compile"), with the device memory.

    python3 jobs/ratios.py runs/gpu_check/bench.jsonl

Lines without an "impl" (elastic_bench's) are skipped. Prints a Markdown
table; nothing when the file has no comparison."""
import json
import sys


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    runs = {}
    with open(sys.argv[1]) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "impl" not in r or "tokens_per_s" not in r or "L" not in r:
                continue
            runs.setdefault((r["model"], int(r["L"])), {})[r["impl"]] = r
    if not runs:
        return
    print("| model | L | configuration | tokens/s | x eager | x compile | device MB |")
    print("|---|---|---|---|---|---|---|")
    for (model, L), by in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        eager, comp = by.get("torch"), by.get("torch compile")
        for impl, r in sorted(by.items(), key=lambda kv: (kv[0].startswith("torch"), kv[0])):
            tps = r["tokens_per_s"]
            ratio = lambda peer: f"{tps / peer['tokens_per_s']:.2f}" \
                if peer and not impl.startswith("torch") else ""
            mem = r.get("gpu_peak_mib")
            if mem is None:
                mem = r.get("device_peak_mb")
            print(f"| {model} | {L} | {impl} | {tps:,.0f} | {ratio(eager)} | {ratio(comp)} | "
                  f"{'' if mem is None else f'{mem:,.0f}'} |")


if __name__ == "__main__":
    main()

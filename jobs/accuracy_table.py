#!/usr/bin/env python3
"""accuracy_table.py: one markdown row per elastic_train log of jobs/accuracy.sh,
for BENCHMARKS.md: the best validation NDCG@10 (what early stopping and any
tuning select on), test HR@10 / NDCG@10 with history unmasked and masked (the
model of the best validation), epochs run (epoch of the best model), wall time.

    jobs/accuracy_table.py runs/accuracy/beauty*.log

Standard library only. A log without test lines (a run still going, or one
that failed) gets a row saying so.
"""
import re
import sys


def row(path):
    text = open(path, errors="replace").read()
    cfg = dict(re.findall(r"^  ([\w-]+) +=\s*(.*)$", text, re.M))
    model = cfg.get("model", "?")
    keys = ["experts", "chunk", "mem-slots", "mem-topk"] if model == "elastic" else (
        ["chunk", "conv-kernel"] if model == "recgrela" else [])
    if cfg.get("no-memory") == "true":
        keys = ["experts", "chunk"]
    flags = [f"--{k} {cfg[k]}" for k in keys if k in cfg]
    flags += [f"--{k}" for k in ("no-memory", "no-local", "no-gate") if cfg.get(k) == "true"]
    flags.append(f"dropout {cfg.get('dropout', '?')}")
    if cfg.get("seed", "42") != "42":  # the trainer's default
        flags.append(f"seed {cfg['seed']}")
    tests = {}
    for masked, line in ((("history masked" in m.group(0)), m.group(0)) for m in
                         re.finditer(r"^test +step .*$", text, re.M)):
        hr = re.search(r"HR@10 ([0-9.]+)", line).group(1)
        nd = re.search(r"NDCG@10 ([0-9.]+)", line).group(1)
        tests[masked] = f"{hr} / {nd}"
    if not tests:
        return f"| {model} {' '.join(flags)} | | (no test yet) | | | |"
    steps_per_epoch = None
    best = re.search(r"model of step (\d+)", text)
    total = re.search(r"^step \d+/(\d+) ", text, re.M)  # planned steps = epochs x steps/epoch
    if total and cfg.get("epochs", "0") not in ("0", ""):
        steps_per_epoch = int(total.group(1)) / int(cfg["epochs"])
    stop = re.search(r"^done: (\d+) steps in (\S+),", text, re.M)
    epochs = ""
    if stop and steps_per_epoch and best:
        epochs = f"{round(int(stop.group(1)) / steps_per_epoch)} ({round(int(best.group(1)) / steps_per_epoch)})"
    time = stop.group(2) if stop else ""
    best_valid = re.findall(r"^valid .*NDCG@10 ([0-9.]+).*\(best\)$", text, re.M)
    return (f"| {model} {' '.join(flags)} | {best_valid[-1] if best_valid else ''} "
            f"| {tests.get(False, '')} | {tests.get(True, '')} "
            f"| {epochs} | {time} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print("| run | valid NDCG@10 | test HR@10 / NDCG@10, unmasked | masked | epochs (best) | time |")
    print("|---|---|---|---|---|---|")
    for p in sys.argv[1:]:
        print(row(p))

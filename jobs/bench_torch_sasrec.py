#!/usr/bin/env python3
"""bench_torch_sasrec.py: `bench_torch.py --model sasrec` (the PyTorch SASRec
peer), under the name BENCHMARKS.md's earlier commands use. See bench_torch.py."""
import os
import sys

sys.dont_write_bytecode = True  # leave no __pycache__ in the repo
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_torch  # noqa: E402

if __name__ == "__main__":
    sys.exit(bench_torch.main(["--model", "sasrec"] + sys.argv[1:]))

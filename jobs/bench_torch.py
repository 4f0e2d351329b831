#!/usr/bin/env python3
"""bench_torch.py: the PyTorch peers for elastic's throughput benchmarks, all models.

Trains each model the way a PyTorch user would: Adam(lr=1e-3, betas=(0.9,
0.98)), dropout 0.2, full cross-entropy over all items with F.cross_entropy.

Data: an elastic HDF5 dataset (/items int32, all histories concatenated;
/offsets int64 [n_users+1]; attribute n_items). Training windows are built as
the C loader builds them: per user the training history is all but the last 2
items (length m); windows of L+1 items end at m, m-L, m-2L, ... while the end
is >= 2, start at max(0, end-L-1), and are left-padded with 0; inputs = w[:L],
targets = w[1:], targets 0 wherever the input is padding. Windows are shuffled
with a seeded permutation (reshuffled every epoch) and cut into batches of B.
Reports, over the --steps steps after --warmup steps: tokens/s (non-padding
target positions processed per second), ms/step, peak RSS (and GPU peak), and
the final loss; prints one line and writes --json. --model:

  sasrec    the reference SASRec (tests/reference/sasrec.py)
  elastic   ElasticPeer (jobs/torch_peers.py): chunk-wise aggregation and dispatch,
            linear in L; --experts --chunk --mem-slots --mem-topk --mem-heads
            --mem-dk --no-memory. The memory bank is a dense Parameter updated by
            the dense Adam (its full [mem-slots, d] gradient and moments every
            step); --sparse-bank reads it with a sparse gradient and updates it
            with torch.optim.SparseAdam (lazy, touched rows only, as the C
            trainer's row-wise Adam).
  recgrela  RecGRELAPeer: chunked causal linear attention (--chunk),
            --conv-kernel --no-local --no-gate.

ELASTIC and RecGRELA are initialised with the C trainer's init distributions
(src/models/*.c). Option defaults are the C trainer's (src/config.c).

    python3 jobs/bench_torch.py --model elastic --data ml.h5 --L 200 --batch 128 \\
        --steps 50 --warmup 5 --threads 2 --json out.json

For testing without a dataset, --make-data FILE writes a random one
(--users, --items, --mean-len) and exits.
"""
import argparse
import json
import math
import os
import platform
import resource
import sys
import time

import h5py
import numpy as np
import torch

sys.dont_write_bytecode = True  # leave no __pycache__ in the repo
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from torch_peers import ElasticPeer, RecGRELAPeer  # noqa: E402  (puts tests/reference on the path)
from sasrec import SASRec  # noqa: E402


HOLDOUT = 2  # last two items of each history: validation and test targets


def build_windows(items, offsets, L):
    """All training windows [W, L+1] (int32), user by user, newest first."""
    n_users = len(offsets) - 1
    m = (offsets[1:] - offsets[:-1]) - HOLDOUT              # training history lengths
    m = np.maximum(m, 0)
    nwin = np.where(m >= 2, (m - 2) // L + 1, 0)            # ends m, m-L, ... >= 2
    user = np.repeat(np.arange(n_users), nwin)
    first = np.cumsum(nwin) - nwin                          # first window of each user
    j = np.arange(len(user)) - first[user]                  # window number within the user
    end = m[user] - j * L                                   # exclusive end within history
    rel = end[:, None] - (L + 1) + np.arange(L + 1)[None, :]  # history position of w[i]
    valid = rel >= 0
    idx = offsets[user][:, None] + np.where(valid, rel, 0)
    w = np.where(valid, items[idx], 0).astype(np.int32)
    return w


def load_windows(path, L):
    with h5py.File(path, "r") as f:
        items = f["items"][()].astype(np.int32)
        offsets = f["offsets"][()].astype(np.int64)
        n_items = int(f.attrs["n_items"])
    w = build_windows(items, offsets, L)
    inputs = np.ascontiguousarray(w[:, :L])
    targets = np.ascontiguousarray(w[:, 1:])
    targets[inputs == 0] = 0
    return inputs, targets, n_items, len(offsets) - 1


def make_data(path, users, n_items, mean_len, seed):
    rng = np.random.default_rng(seed)
    lens = np.maximum(3, rng.poisson(mean_len, size=users)).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    # Zipf-ish popularity so the data is not uniform noise.
    p = 1.0 / np.arange(1, n_items + 1) ** 0.8
    items = rng.choice(n_items, size=int(offsets[-1]), p=p / p.sum()).astype(np.int32) + 1
    with h5py.File(path, "w") as f:
        f.create_dataset("items", data=items)
        f.create_dataset("offsets", data=offsets)
        f.attrs["n_users"] = np.int64(users)
        f.attrs["n_items"] = np.int64(n_items)
        f.attrs["source"] = np.bytes_("random:bench_torch.py")
        f.attrs["filter"] = np.bytes_("")
        f.attrs["format_version"] = np.int64(1)
    print(f"wrote {path}: {users} users, {n_items} items, {int(offsets[-1])} interactions")


def batches(n_windows, batch, seed):
    """Endless (epoch, row indices) stream: a seeded shuffle per epoch, last partial batch dropped."""
    epoch = 0
    while True:
        perm = np.random.default_rng([seed, epoch]).permutation(n_windows)
        for i in range(n_windows // batch):
            yield perm[i * batch:(i + 1) * batch]
        epoch += 1


def build_model(a, n_items):
    if a.model == "sasrec":
        return SASRec(n_items, a.L, a.d, a.heads, a.layers, dropout=a.dropout, dtype=torch.float32)
    if a.model == "elastic":
        n = math.isqrt(a.mem_slots)
        if n * n != a.mem_slots:
            sys.exit(f"--mem-slots must be a perfect square, got {a.mem_slots}")
        m = ElasticPeer(n_items, a.d, a.heads, a.layers, a.experts, a.chunk, a.mem_heads, a.mem_dk,
                        n, a.mem_topk, memory=not a.no_memory, dropout=a.dropout,
                        dtype=torch.float32, sparse_bank=a.sparse_bank and not a.no_memory)
    else:
        m = RecGRELAPeer(n_items, a.d, a.heads, a.layers, a.conv_kernel, local=not a.no_local,
                         gate=not a.no_gate, dropout=a.dropout, dtype=torch.float32, chunk=a.chunk)
    m.init_like_c()
    return m


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("sasrec", "elastic", "recgrela"), default="sasrec")
    ap.add_argument("--data", help="elastic HDF5 dataset")
    ap.add_argument("--L", type=int, default=50)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=50, help="timed steps (after warmup)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch default)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (peak memory is then the GPU's)")
    ap.add_argument("--tf32", action="store_true", help="on cuda: TF32 matrix products")
    ap.add_argument("--compile", action="store_true", help="torch.compile the loss")
    ap.add_argument("--gather", action="store_true",
                    help="compute logits only at positions with a target (what elastic does)")
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="after the timed steps, N more under torch.profiler: the kernels "
                         "(operators on the CPU) by their own time, per step")
    g = ap.add_argument_group("ELASTIC / RecGRELA (defaults: src/config.c)")
    g.add_argument("--experts", type=int, default=8, help="ELASTIC: interest experts per layer (k)")
    g.add_argument("--chunk", type=int, default=64,
                   help="ELASTIC: dispatch chunk C; RecGRELA: linear-attention chunk")
    g.add_argument("--mem-slots", type=int, default=65536, help="ELASTIC: bank rows, a square n*n")
    g.add_argument("--mem-topk", type=int, default=8, help="ELASTIC: slots read per lookup")
    g.add_argument("--mem-heads", type=int, default=2, help="ELASTIC: memory heads sharing the bank")
    g.add_argument("--mem-dk", type=int, default=32, help="ELASTIC: memory key width (even)")
    g.add_argument("--no-memory", action="store_true", help="ELASTIC: no memory bank")
    g.add_argument("--sparse-bank", action="store_true",
                   help="ELASTIC: sparse bank gradient + torch.optim.SparseAdam for the bank")
    g.add_argument("--conv-kernel", type=int, default=4, help="RecGRELA: causal conv width")
    g.add_argument("--no-local", action="store_true", help="RecGRELA: no local (conv) branch")
    g.add_argument("--no-gate", action="store_true", help="RecGRELA: no SiLU gate")
    ap.add_argument("--make-data", metavar="FILE", help="write a random dataset and exit")
    ap.add_argument("--users", type=int, default=6000)
    ap.add_argument("--items", type=int, default=12000)
    ap.add_argument("--mean-len", type=float, default=100)
    a = ap.parse_args(argv)

    if a.make_data:
        make_data(a.make_data, a.users, a.items, a.mean_len, a.seed)
        return 0
    if not a.data:
        ap.error("--data is required (or --make-data FILE to create one)")
    sparse = a.model == "elastic" and a.sparse_bank and not a.no_memory

    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    t0 = time.perf_counter()
    inputs_all, targets_all, n_items, n_users = load_windows(a.data, a.L)
    load_s = time.perf_counter() - t0
    W = len(inputs_all)
    if W < a.batch:
        sys.exit(f"{a.data}: {W} training windows, fewer than one batch of {a.batch}")

    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = a.tf32
        torch.backends.cudnn.allow_tf32 = a.tf32
    model = build_model(a, n_items)
    model.to(dev)
    model.train()
    if sparse:
        dense_params = [p for n, p in model.named_parameters() if n != "bank"]
        opts = [torch.optim.Adam(dense_params, lr=a.lr, betas=(0.9, 0.98)),
                torch.optim.SparseAdam([model.bank], lr=a.lr, betas=(0.9, 0.98))]
    else:
        opts = [torch.optim.Adam(model.parameters(), lr=a.lr, betas=(0.9, 0.98))]

    def gathered_loss(inputs, pad, targets):
        h = model.forward(inputs, pad)
        keep = targets.reshape(-1) != 0
        logits = model.logits(h.reshape(-1, h.shape[-1])[keep])
        return torch.nn.functional.cross_entropy(logits, targets.reshape(-1)[keep].long() - 1)

    base_loss = gathered_loss if a.gather else model.loss
    loss_fn = torch.compile(base_loss) if a.compile else base_loss

    stream = batches(W, a.batch, a.seed)

    def one_step():  # one training step on the next batch: (its targets, its loss)
        rows = next(stream)
        inputs = torch.from_numpy(inputs_all[rows]).to(dev, non_blocking=True)
        targets = torch.from_numpy(targets_all[rows]).to(dev, non_blocking=True)
        pad = (inputs == 0).sum(dim=1, dtype=torch.int32)   # left-padded: zeros are leading
        loss = loss_fn(inputs, pad, targets)
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in opts:
            opt.step()
        return int((targets != 0).sum()), loss.item()

    tokens = 0
    losses = []
    t_start = None
    for step in range(a.warmup + a.steps):
        if step == a.warmup:
            if dev.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t_start = time.perf_counter()
            tokens = 0
        n, loss = one_step()
        tokens += n
        losses.append(loss)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t_start
    gpu_peak_mib = torch.cuda.max_memory_allocated() / 1048576.0 if dev.type == "cuda" else None

    if a.profile > 0:  # where the peer's step goes, to read beside elastic_bench --profile
        from torch.profiler import ProfilerActivity, profile
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        with profile(activities=acts) as prof:
            for _ in range(a.profile):
                one_step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
        key = "self_device_time_total" if dev.type == "cuda" else "self_cpu_time_total"
        print(f"torch.profiler, {a.profile} steps (times are totals over them):")
        print(prof.key_averages().table(sort_by=key, row_limit=18, max_name_column_width=60))

    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    res = {
        "model": a.model,
        "impl": "torch" + (" gather" if a.gather else "") + (" compile" if a.compile else "")
                + (" sparse-bank" if sparse else ""),
        "torch_version": torch.__version__,
        "device": a.device if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "tf32": a.tf32,
        "gpu_peak_mib": gpu_peak_mib,
        "host": platform.node(),
        "data": os.path.abspath(a.data),
        "n_users": n_users, "n_items": n_items, "windows": W,
        "L": a.L, "d": a.d, "layers": a.layers, "heads": a.heads, "batch": a.batch,
        "dropout": a.dropout, "lr": a.lr, "compile": a.compile,
        "threads": torch.get_num_threads(),
        "warmup": a.warmup, "steps": a.steps,
        "tokens": tokens,
        "seconds": elapsed,
        "tokens_per_s": tokens / elapsed,
        "ms_per_step": 1000.0 * elapsed / a.steps,
        "peak_rss_mib": peak_rss_mib,
        "final_loss": losses[-1],
        "first_loss": losses[0],
        "load_s": load_s,
        "n_params": sum(p.numel() for p in model.parameters()),
    }
    tag = ""
    if a.model == "elastic":
        res.update(experts=a.experts, chunk=a.chunk, memory=not a.no_memory,
                   mem_slots=a.mem_slots, mem_topk=a.mem_topk, mem_heads=a.mem_heads,
                   mem_dk=a.mem_dk, sparse_bank=sparse)
        tag = (f" k={a.experts} C={a.chunk} "
               + (f"mem={a.mem_slots}/top{a.mem_topk}/h{a.mem_heads}/dk{a.mem_dk}"
                  + (" sparse-bank" if sparse else "") if not a.no_memory else "no-memory"))
    elif a.model == "recgrela":
        res.update(chunk=a.chunk, conv_kernel=a.conv_kernel, local=not a.no_local,
                   gate=not a.no_gate)
        tag = (f" C={a.chunk} K={a.conv_kernel}" + (" no-local" if a.no_local else "")
               + (" no-gate" if a.no_gate else ""))
    print(f"torch {a.model} L={a.L} d={a.d} layers={a.layers} heads={a.heads} batch={a.batch} "
          f"N={n_items}{tag} threads={res['threads']}{' compile' if a.compile else ''}"
          f"{' gather' if a.gather else ''}: "
          f"{res['tokens_per_s']:.0f} tokens/s, {res['ms_per_step']:.1f} ms/step, "
          f"peak RSS {peak_rss_mib:.0f} MiB"
          + (f", GPU peak {gpu_peak_mib:.0f} MiB on {res['device']}" if gpu_peak_mib else "")
          + f", loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory per rank and step time of the sharded ArcFace loss on CPU ranks (gloo), and the PartialFC
approximation.

Memory method: each rank is its own process; its peak resident set size (``ru_maxrss``, the kernel's
high-water mark) is read after the timed steps, and the RSS measured after ``import torch`` and
``init_process_group`` (before the loss module exists) is subtracted. The difference is what the loss costs
that rank: its shard of ``W``, the gradient, the SGD momentum buffer, the chunk buffers and the gathered
embeddings. A training step is forward + backward + ``SGD(momentum=0.9, weight_decay=5e-4).step()`` on ``W``
(insightface's settings); the embeddings are random leaf tensors (no backbone).

Usage, from the repository root (on a quiet machine: every rank shares its cores)::

    python -m benchmarks.distributed_memory            # memory and time
    python -m benchmarks.distributed_memory --approx   # PartialFC vs full softmax

Results are appended to ``benchmarks/results/distributed_memory.csv`` / ``distributed_partial_fc.csv`` in the
shared schema (:data:`benchmarks.common.FIELDS`): one row per setting and metric, summarised over the ranks
(memory, time) or the trials (approximation).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from arcloss import ArcFaceLoss
from arcloss.distributed import Sharding
from benchmarks import common

RESULTS = common.RESULTS
BENCHMARK = "distributed_memory"


def _rss_mib() -> float:
    return common.rss_bytes() / 2**20


def _peak_rss_mib() -> float:
    return common.peak_rss_bytes() / 2**20


def _rank_main(rank: int, world: int, args: argparse.Namespace, sample_rate: float, tmp: str) -> None:
    threads = max(1, (os.cpu_count() or 1) // world)
    torch.set_num_threads(threads)
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp}/init", rank=rank, world_size=world, timeout=datetime.timedelta(minutes=20)
    )
    baseline, peak_before = _rss_mib(), _peak_rss_mib()
    loss_fn = ArcFaceLoss(args.classes, args.dim, sharding=Sharding(sample_rate=sample_rate, seed=0))
    optimizer = torch.optim.SGD(loss_fn.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(1000 + rank)
    local = args.batch // world + (rank < args.batch % world)
    loss_times, step_times = [], []
    for step in range(args.warmup + args.steps):
        x = torch.randn(local, args.dim, generator=g).requires_grad_()
        y = torch.randint(0, args.classes, (local,), generator=g)
        dist.barrier()
        t0 = time.perf_counter()
        loss = loss_fn(x, y)
        loss.backward()
        t1 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        dist.barrier()
        t2 = time.perf_counter()
        if step >= args.warmup:
            loss_times.append(t1 - t0)
            step_times.append(t2 - t0)
    peak = _peak_rss_mib()
    result = {
        "rank": rank,
        "threads_per_rank": threads,
        "local_classes": loss_fn.sharding.local_classes,
        "w_shard_mib": loss_fn.W.numel() * loss_fn.W.element_size() / 2**20,
        "baseline_rss_mib": baseline,
        "peak_rss_before_loss_mib": peak_before,
        "peak_rss_mib": peak,
        "peak_minus_baseline_mib": peak - baseline,
        "fwd_bwd_s_median": statistics.median(loss_times),
        "step_s_median": statistics.median(step_times),
        "loss_last": loss.item(),
    }
    Path(tmp, f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


# per-rank result key -> (metric, unit, factor)
MEMORY_METRICS = {
    "peak_minus_baseline_mib": ("memory_rank", "MB", 1.0),
    "w_shard_mib": ("w_shard", "MB", 1.0),
    "fwd_bwd_s_median": ("time_fwd_bwd", "ms", 1e3),
    "step_s_median": ("time_step", "ms", 1e3),
}
APPROX_METRICS = {"loss_gap": "1", "grad_x_cosine": "1", "grad_x_norm_ratio": "1"}


def run_memory(args: argparse.Namespace) -> None:
    rows = []
    env, date = common.environment(torch.device("cpu")), common.now_utc()
    for world in args.ranks:
        for rate in args.sample_rates:
            with tempfile.TemporaryDirectory() as tmp:
                mp.spawn(_rank_main, args=(world, args, rate, tmp), nprocs=world, join=True)
                per_rank = [json.loads(Path(tmp, f"rank{rank}.json").read_text()) for rank in range(world)]
            config = {
                "num_classes": args.classes,
                "dim": args.dim,
                "global_batch": args.batch,
                "sample_rate": rate,
                "timed_steps": args.steps,
                "threads_per_rank": per_rank[0]["threads_per_rank"],
                "backend": "gloo",
            }
            for key, (metric, unit, k) in MEMORY_METRICS.items():
                values = [k * r[key] for r in per_rank]
                rows.append(
                    common.row(BENCHMARK, "arcface-sharded", metric, unit, "ranks", world, values, config, env, date)
                )
            summary = {m: round(max(k * r[key] for r in per_rank), 1) for key, (m, _, k) in MEMORY_METRICS.items()}
            print(json.dumps({"ranks": world, "sample_rate": rate, "max over ranks": summary}), flush=True)
    _write(rows, args.out)


def run_approx(args: argparse.Namespace) -> None:
    """PartialFC loss and embedding gradient vs the full softmax on the same batch (one process).

    Embeddings are ``W[:, y] / |W[:, y]| + noise * unit noise`` (``noise=inf``: pure noise, an untrained
    model); the noise sets the target cosine. For each sample rate the sampled loss of a training-mode
    step is compared with the full loss (``eval()``: every class) of the same batch and W.
    """
    torch.set_num_threads(os.cpu_count() or 1)
    env, date = common.environment(torch.device("cpu")), common.now_utc()
    measured: dict[tuple[float, float], dict[str, list[float]]] = {}
    loss_fn = ArcFaceLoss(args.classes, args.dim, sharding=Sharding(seed=0))
    loss_fn.W.requires_grad_(False)  # only the loss and the embedding gradient are compared
    w = loss_fn.W.detach()
    for trial in range(args.trials):
        g = torch.Generator().manual_seed(trial)
        y = torch.randint(0, args.classes, (args.batch,), generator=g)
        noise = torch.nn.functional.normalize(torch.randn(args.batch, args.dim, generator=g), dim=1)
        centres = torch.nn.functional.normalize(w[:, y].t(), dim=1)
        for level in args.noise:
            x = noise if level == float("inf") else centres + level * noise
            results = {}
            for rate in [1.0, *args.approx_rates]:
                loss_fn.sharding.sample_rate = rate
                loss_fn.train(rate < 1.0)
                xr = x.clone().requires_grad_()
                loss = loss_fn(xr, y)
                loss.backward()
                results[rate] = (loss.item(), xr.grad.flatten())
            full_loss, full_grad = results[1.0]
            target_cos = float(torch.nn.functional.cosine_similarity(x, centres).mean())
            for rate in args.approx_rates:
                sampled_loss, sampled_grad = results[rate]
                values = {
                    "loss_gap": full_loss - sampled_loss,
                    "grad_x_cosine": float(torch.nn.functional.cosine_similarity(sampled_grad, full_grad, 0)),
                    "grad_x_norm_ratio": float(sampled_grad.norm() / full_grad.norm()),
                    "mean_target_cos": target_cos,
                }
                for k, v in values.items():
                    measured.setdefault((level, rate), {}).setdefault(k, []).append(v)
                print(json.dumps({"trial": trial, "noise": level, "sample_rate": rate, **values}), flush=True)
    rows = []
    for (level, rate), by_metric in measured.items():
        config = {
            "num_classes": args.classes,
            "dim": args.dim,
            "batch": args.batch,
            "scale": loss_fn.scale,
            "margin_deg": loss_fn.margin,
            "noise": str(level),
            "mean_target_cos": round(statistics.fmean(by_metric["mean_target_cos"]), 4),
        }
        for metric, unit in APPROX_METRICS.items():
            rows.append(
                common.row(
                    "distributed_partial_fc",
                    "PartialFC",
                    metric,
                    unit,
                    "sample_rate",
                    rate,
                    by_metric[metric],
                    config,
                    env,
                    date,
                )
            )
    _write(rows, args.out)


def _write(rows: list[dict], out: Path) -> None:
    common.append_rows(out, rows)
    print(f"appended {len(rows)} rows to {out}", file=sys.stderr)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classes", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--batch", type=int, default=256, help="global batch, split evenly over the ranks")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--sample-rates", type=float, nargs="+", default=[1.0, 0.1])
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--approx", action="store_true", help="measure the PartialFC approximation instead")
    p.add_argument("--approx-rates", type=float, nargs="+", default=[0.1, 0.3])
    p.add_argument("--noise", type=float, nargs="+", default=[float("inf"), 2.0, 1.5, 1.0])
    p.add_argument("--trials", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.approx:
        args.out = args.out or RESULTS / "distributed_partial_fc.csv"
        run_approx(args)
    else:
        args.out = args.out or RESULTS / "distributed_memory.csv"
        run_memory(args)


if __name__ == "__main__":
    main()

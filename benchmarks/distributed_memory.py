"""Peak memory per rank and step time of the sharded ArcFace loss on CPU ranks (gloo), and the PartialFC
approximation.

Memory method: each rank is its own process; its peak resident set size (``ru_maxrss``, the kernel's
high-water mark) is read after the timed steps, and the RSS measured after ``import torch`` and
``init_process_group`` (before the loss module exists) is subtracted. The difference is what the loss costs
that rank: its shard of ``W``, the gradient, the SGD momentum buffer, the chunk buffers and the gathered
embeddings. A training step is forward + backward + ``SGD(momentum=0.9, weight_decay=5e-4).step()`` on ``W``
(insightface's settings); the embeddings are random leaf tensors (no backbone).

Usage (run once, under the shared-CPU lock)::

    flock /tmp/arcloss-cpu.lock python benchmarks/distributed_memory.py            # memory and time
    flock /tmp/arcloss-cpu.lock python benchmarks/distributed_memory.py --approx   # PartialFC vs full softmax
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import arcloss
from arcloss import ArcFaceLoss
from arcloss.distributed import Sharding

RESULTS = Path(__file__).resolve().parent / "results"


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


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


def _environment() -> dict:
    cpu = "unknown"
    if Path("/proc/cpuinfo").exists():
        cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), cpu)
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "arcloss": arcloss.__version__,
        "backend": "gloo",
    }


def run_memory(args: argparse.Namespace) -> None:
    rows = []
    env = _environment()
    for world in args.ranks:
        for rate in args.sample_rates:
            with tempfile.TemporaryDirectory() as tmp:
                mp.spawn(_rank_main, args=(world, args, rate, tmp), nprocs=world, join=True)
                for rank in range(world):
                    r = json.loads(Path(tmp, f"rank{rank}.json").read_text())
                    row = {
                        **env,
                        "ranks": world,
                        "sample_rate": rate,
                        "num_classes": args.classes,
                        "dim": args.dim,
                        "global_batch": args.batch,
                        "timed_steps": args.steps,
                        **r,
                    }
                    rows.append(row)
                    print(
                        json.dumps(
                            {
                                k: row[k]
                                for k in (
                                    "ranks",
                                    "sample_rate",
                                    "rank",
                                    "w_shard_mib",
                                    "peak_minus_baseline_mib",
                                    "step_s_median",
                                )
                            }
                        ),
                        flush=True,
                    )
    _write(rows, args.out)


def run_approx(args: argparse.Namespace) -> None:
    """PartialFC loss and embedding gradient vs the full softmax on the same batch (one process).

    Embeddings are ``W[:, y] / |W[:, y]| + noise * unit noise`` (``noise=inf``: pure noise, an untrained
    model); the noise sets the target cosine. For each sample rate the sampled loss of a training-mode
    step is compared with the full loss (``eval()``: every class) of the same batch and W.
    """
    torch.set_num_threads(os.cpu_count() or 1)
    env = _environment()
    rows = []
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
                rows.append(
                    {
                        **env,
                        "num_classes": args.classes,
                        "dim": args.dim,
                        "batch": args.batch,
                        "scale": loss_fn.scale,
                        "margin_deg": loss_fn.margin,
                        "trial": trial,
                        "noise": level,
                        "mean_target_cos": target_cos,
                        "sample_rate": rate,
                        "full_loss": full_loss,
                        "sampled_loss": sampled_loss,
                        "loss_gap": full_loss - sampled_loss,
                        "grad_x_cosine": float(torch.nn.functional.cosine_similarity(sampled_grad, full_grad, 0)),
                        "grad_x_norm_ratio": float(sampled_grad.norm() / full_grad.norm()),
                    }
                )
                print(
                    json.dumps(
                        {
                            k: rows[-1][k]
                            for k in (
                                "noise",
                                "mean_target_cos",
                                "sample_rate",
                                "full_loss",
                                "sampled_loss",
                                "grad_x_cosine",
                            )
                        }
                    ),
                    flush=True,
                )
    _write(rows, args.out)


def _write(rows: list[dict], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out}", file=sys.stderr)


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

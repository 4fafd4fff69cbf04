"""Speed and memory of ArcFace implementations against plain softmax, across class counts.

Usage (from the repository root)::

    python -m benchmarks.speed                             # N=256, D=512, C in 1k,10k,100k,1M, all providers
    python -m benchmarks.speed --classes 1000 10000 --repeats 5
    python -m benchmarks.speed --device cuda               # on a GPU
    python -m benchmarks.speed.plot                        # the figure, from the CSV

Providers come from one setup factory, :mod:`benchmarks.speed.providers`.

Time: every provider runs side by side in this one process, interleaved repeat by repeat; each repeat times
the forward and the backward separately (``full`` is their sum for the same repeat). Reported: median and
the 25-75 % spread, and the ratio of medians to plain softmax.

Memory: on CUDA, ``max_memory_allocated`` during one training step minus what was allocated before it. On a
CPU, each (provider, C) runs in a fresh subprocess with the default allocator. It first runs one step of the
provider at C=16 (loading libraries and thread pools), then allocates the real inputs and parameters and records
the resident set size as the baseline, resets the kernel's peak counter (``/proc/self/clear_refs``), runs one
forward+backward, and reads the peak (``VmHWM``). ``peak - baseline`` (metric ``memory_step``) is the memory the
step adds above inputs and parameters, including the gradient of ``W`` the step leaves behind. With
``--also-tuned-malloc`` the same is measured a second time with glibc's mmap threshold pinned at 64 KiB, so
that freed buffers go back to the OS at once (metric ``memory_step_mmap64k``, reported beside the default).

Results are appended to ``benchmarks/results/speed_memory.csv`` in the shared schema
(:data:`benchmarks.common.FIELDS`): machine, device, versions and date on every row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks import common
from benchmarks.speed import providers

BENCHMARK = "speed_memory"
DEFAULT_CSV = common.RESULTS / "speed_memory.csv"
INTERLEAVE_BYTES = 2 * 2**30
TUNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def _time_case(case: providers.Case, device: torch.device) -> tuple[float, float]:
    """One forward and the backward of its result, in ms each; the gradients are freed afterwards."""
    case.zero_grad()
    common.sync(device)
    start = time.perf_counter()
    loss = case.loss()
    common.sync(device)
    middle = time.perf_counter()
    loss.backward()
    common.sync(device)
    end = time.perf_counter()
    case.zero_grad()
    return (middle - start) * 1e3, (end - middle) * 1e3


def time_providers(names: list[str], num_classes: int, args, device) -> dict[str, dict[str, list[float]]]:
    """Per provider and mode, the list of times in ms.

    Providers are interleaved repeat by repeat while all their parameters fit in ``INTERLEAVE_BYTES``; above
    that (C=1M: 2 GB of W each) they run one after the other in this process, one provider's tensors alive
    at a time.
    """
    times = {name: {"forward": [], "backward": [], "full": []} for name in names}
    repeats = args.repeats or max(3, min(20, int(2e6 // num_classes)))
    interleave = len(names) * num_classes * args.dim * 4 <= INTERLEAVE_BYTES
    groups = [names] if interleave else [[name] for name in names]
    for group in groups:
        cases = {
            name: providers.make_case(name, num_classes, args.batch, args.dim, device, precision=args.precision)
            for name in group
        }
        for rep in range(repeats + args.warmup):
            for name, case in cases.items():
                forward, backward = _time_case(case, device)
                if rep >= args.warmup:
                    times[name]["forward"].append(forward)
                    times[name]["backward"].append(backward)
                    times[name]["full"].append(forward + backward)
        del cases
    return times


def memory_child(
    name: str, num_classes: int, batch: int, dim: int, device: torch.device, precision: str = "fp32"
) -> float:
    """Bytes one training step adds above the inputs and parameters (see module docstring)."""
    # load libraries, start thread pools
    providers.make_case(name, 16, batch, dim, device, precision=precision).loss().backward()
    case = providers.make_case(name, num_classes, batch, dim, device, precision=precision)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        case.loss().backward()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    base = common.rss_bytes()
    if not common.reset_peak_rss():
        raise SystemExit("memory on CPU needs Linux's /proc/self/clear_refs")
    case.loss().backward()
    return common.peak_rss_bytes() - base


def measure_memory(name: str, num_classes: int, args, device, tuned: bool = False) -> float:
    """Run :func:`memory_child` in a fresh process (default allocator, or ``TUNED_MALLOC``); returns MB."""
    command = [sys.executable, "-m", "benchmarks.speed.run", "--_memory-child", name, str(num_classes)]
    command += ["--batch", str(args.batch), "--dim", str(args.dim), "--device", str(device)]
    command += ["--precision", args.precision]
    env = dict(os.environ, **TUNED_MALLOC) if tuned else dict(os.environ)
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env, cwd=common.ROOT.parent)
    return json.loads(out.stdout.strip().splitlines()[-1])["bytes"] / 2**20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, nargs="+", default=[1000, 10_000, 100_000, 1_000_000])
    parser.add_argument(
        "--providers",
        nargs="+",
        choices=providers.PROVIDERS,
        help="default: all on CUDA; " + ", ".join(providers.CPU_DEFAULT) + " on a CPU",
    )
    parser.add_argument(
        "--precision",
        choices=tuple(providers.PRECISIONS),
        default="fp32",
        help="fp32, or bf16/fp16 autocast around the loss (parameters stay float32)",
    )
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=0, help="default: more for small C, at least 3")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-time", action="store_true", help="measure memory only")
    parser.add_argument("--no-memory", action="store_true", help="measure time only")
    parser.add_argument(
        "--also-tuned-malloc", action="store_true", help="also measure memory with MALLOC_MMAP_THRESHOLD_=65536"
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda")
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--_memory-child", nargs=2, metavar=("PROVIDER", "C"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = common.resolve_device(args.device)
    if args._memory_child:
        name, num_classes = args._memory_child
        extra = memory_child(name, int(num_classes), args.batch, args.dim, device, args.precision)
        print(json.dumps({"bytes": extra}))
        return

    requested = args.providers or providers.default_providers(device)
    names = [p for p in requested if providers.available(p, device)]
    skipped = sorted(set(requested) - set(names))
    if skipped:
        print(f"skipping unavailable providers: {', '.join(skipped)}")
    env = common.environment(device)
    date = common.now_utc()
    precision = "float32" if args.precision == "fp32" else f"{args.precision} autocast"
    config = {"batch": args.batch, "dim": args.dim, "dtype": precision}
    print(f"{common.describe_environment(env)} | N={args.batch} D={args.dim} {precision}")
    for num_classes in args.classes:
        rows = []
        w_mb = num_classes * args.dim * 4 / 2**20
        times = {} if args.no_time else time_providers(names, num_classes, args, device)
        memory, tuned = {}, {}
        if not args.no_memory:
            memory = {n: measure_memory(n, num_classes, args, device) for n in names}
            if args.also_tuned_malloc and device.type == "cpu":
                tuned = {n: measure_memory(n, num_classes, args, device, tuned=True) for n in names}
        base = statistics.median(times["softmax"]["full"]) if "softmax" in times else None
        print(f"\nC={num_classes:,}  (W = {w_mb:.0f} MB)")
        print(
            f"{'provider':>15} {'full ms':>9} {'p25-p75':>13} {'x softmax':>9} {'extra MB':>9} {'x |W|':>6}"
            + (f" {'MB, mmap 64k':>13}" if tuned else "")
        )

        def add(provider: str, metric: str, unit: str, values: list[float], rows=rows, c=num_classes) -> None:
            rows.append(common.row(BENCHMARK, provider, metric, unit, "num_classes", c, values, config, env, date))

        for name in names:
            for mode, values in times.get(name, {}).items():
                add(name, f"time_{mode}", "ms", values)
            if name in memory:
                add(name, "memory_step", "MB", [memory[name]])
            if name in tuned:
                add(name, "memory_step_mmap64k", "MB", [tuned[name]])
            full = statistics.median(times[name]["full"]) if name in times else None
            spread = statistics.quantiles(times[name]["full"], n=4) if name in times else None
            print(
                f"{name:>15} "
                + (f"{full:9.1f} {spread[0]:6.0f}-{spread[2]:<6.0f} " if full else f"{'-':>9} {'-':>13} ")
                + (f"{full / base:9.2f} " if full and base else f"{'-':>9} ")
                + (f"{memory[name]:9.0f} {memory[name] / w_mb:6.2f}" if name in memory else f"{'-':>9} {'-':>6}")
                + (f" {tuned[name]:13.0f}" if name in tuned else "")
            )
        common.append_rows(args.csv, rows)
        print(f"appended {len(rows)} rows to {args.csv}")


if __name__ == "__main__":
    main()

"""Speed and memory of ArcFace implementations against plain softmax, across class counts.

Usage::

    python benchmarks/speed_memory.py                       # N=256, D=512, C in 1k,10k,100k,1M, all providers
    python benchmarks/speed_memory.py --classes 1000 10000 --repeats 5
    python benchmarks/plot_speed_memory.py                  # the PNG figures from the CSV

Time: every provider runs side by side in this one process, interleaved repeat by repeat; each repeat times
the forward and the backward separately (``full`` is their sum for the same repeat). Reported: median and
the 25-75 % spread, and the ratio of medians to plain softmax.

Memory: on CUDA, ``max_memory_allocated`` during one training step minus what was allocated before it. On a
CPU, each (provider, C) runs in a fresh subprocess with glibc's mmap threshold pinned at 64 KiB (so freed
buffers go back to the OS and resident memory tracks live tensors). It first runs one step of the provider
at C=16 (loading libraries and thread pools), then allocates the real inputs and parameters and records the
resident set size as the baseline, resets the kernel's peak counter (``/proc/self/clear_refs``), runs one
forward+backward, and reads the peak (``VmHWM``). ``peak - baseline`` is the memory the step adds above
inputs and parameters, including the gradient of ``W`` the step leaves behind.

Results are appended to a CSV with the machine, versions and date.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed_providers as providers

import arcloss

DEFAULT_CSV = Path(__file__).resolve().parent / "results" / "speed_memory.csv"
INTERLEAVE_BYTES = 2 * 2**30
FIELDS = [
    "date",
    "machine",
    "device",
    "torch",
    "arcloss",
    "threads",
    "provider",
    "num_classes",
    "batch",
    "dim",
    "dtype",
    "mode",
    "median_ms",
    "p25_ms",
    "p75_ms",
    "repeats",
    "extra_mem_mb",
    "w_mb",
]


def machine_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} x{os.cpu_count()}"


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_case(case: providers.Case, device: torch.device) -> tuple[float, float]:
    """One forward and one backward, in ms; the gradients are freed afterwards."""
    case.zero_grad()
    _sync(device)
    start = time.perf_counter()
    loss = case.loss()
    _sync(device)
    middle = time.perf_counter()
    loss.backward()
    _sync(device)
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
        cases = {name: providers.make_case(name, num_classes, args.batch, args.dim, device) for name in group}
        for rep in range(repeats + args.warmup):
            for name, case in cases.items():
                forward, backward = _time_case(case, device)
                if rep >= args.warmup:
                    times[name]["forward"].append(forward)
                    times[name]["backward"].append(backward)
                    times[name]["full"].append(forward + backward)
        del cases
    return times


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_child(name: str, num_classes: int, batch: int, dim: int, device: torch.device) -> float:
    """Bytes one training step adds above the inputs and parameters (see module docstring)."""
    providers.make_case(name, 16, batch, dim, device).loss().backward()  # load libraries, start thread pools
    case = providers.make_case(name, num_classes, batch, dim, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        case.loss().backward()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    base = _rss_bytes()
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter to the current RSS
    case.loss().backward()
    return _peak_rss_bytes() - base


def measure_memory(name: str, num_classes: int, args, device) -> float:
    """Run :func:`memory_child` in a fresh process; returns MB."""
    command = [
        sys.executable,
        __file__,
        "--_memory-child",
        name,
        str(num_classes),
        "--batch",
        str(args.batch),
        "--dim",
        str(args.dim),
        "--device",
        str(device),
    ]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])["bytes"] / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, nargs="+", default=[1000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--providers", nargs="+", default=list(providers.PROVIDERS))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=0, help="default: more for small C, at least 3")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--_memory-child", nargs=2, metavar=("PROVIDER", "C"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args._memory_child:
        name, num_classes = args._memory_child
        print(json.dumps({"bytes": memory_child(name, int(num_classes), args.batch, args.dim, device)}))
        return

    names = [p for p in args.providers if providers.available(p, device)]
    skipped = sorted(set(args.providers) - set(names))
    if skipped:
        print(f"skipping unavailable providers: {', '.join(skipped)}")
    meta = dict(
        date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        machine=machine_name(),
        device=device_name(device),
        torch=torch.__version__,
        arcloss=arcloss.__version__,
        threads=torch.get_num_threads(),
        batch=args.batch,
        dim=args.dim,
        dtype="float32",
    )
    print(
        f"{meta['machine']} | {meta['device']} | torch {meta['torch']} | {meta['threads']} threads | "
        f"N={args.batch} D={args.dim} float32"
    )
    for num_classes in args.classes:
        rows = []
        w_mb = num_classes * args.dim * 4 / 2**20
        times = time_providers(names, num_classes, args, device)
        memory = {} if args.no_memory else {n: measure_memory(n, num_classes, args, device) for n in names}
        base = statistics.median(times["softmax"]["full"]) if "softmax" in times else None
        print(f"\nC={num_classes:,}  (W = {w_mb:.0f} MB)")
        print(
            f"{'provider':>15} {'forward ms':>11} {'backward ms':>12} {'full ms':>9} {'p25-p75':>13} "
            f"{'x softmax':>9} {'extra MB':>9} {'x |W|':>6}"
        )
        for name in names:
            stats = {}
            for mode, values in times[name].items():
                q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
                stats[mode] = (statistics.median(values), q[0], q[2], len(values))
                rows.append(
                    dict(
                        meta,
                        provider=name,
                        num_classes=num_classes,
                        mode=mode,
                        median_ms=f"{stats[mode][0]:.2f}",
                        p25_ms=f"{q[0]:.2f}",
                        p75_ms=f"{q[2]:.2f}",
                        repeats=len(values),
                        extra_mem_mb=f"{memory[name]:.1f}" if mode == "full" and name in memory else "",
                        w_mb=f"{w_mb:.1f}",
                    )
                )
            full = stats["full"]
            ratio = f"{full[0] / base:.2f}" if base else "-"
            mem = f"{memory[name]:.0f}" if name in memory else "-"
            mem_ratio = f"{memory[name] / w_mb:.2f}" if name in memory else "-"
            print(
                f"{name:>15} {stats['forward'][0]:11.1f} {stats['backward'][0]:12.1f} {full[0]:9.1f} "
                f"{full[1]:6.0f}-{full[2]:<6.0f} {ratio:>9} {mem:>9} {mem_ratio:>6}"
            )
        append_csv(args.csv, rows)
        print(f"appended {len(rows)} rows to {args.csv}")


def append_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()

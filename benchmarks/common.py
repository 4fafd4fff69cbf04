"""Helpers every benchmark shares: machine and versions, device choice, timing, memory, one CSV schema.

Every benchmark appends its measurements to a CSV with the columns :data:`FIELDS` (one row per provider, metric
and x value, with the machine and versions it ran on), in the manner of Liger-Kernel's benchmark CSVs; plots and
tables read the newest row of each key (:func:`latest_rows`).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

import arcloss

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"

FIELDS = [
    "date",  # UTC, ISO 8601, seconds: one value per invocation
    "benchmark",  # speed_memory | face_verification | distributed_memory | ...
    "provider",  # what was measured: an implementation or a loss
    "metric",  # e.g. time_full, memory_step, accuracy_flip
    "unit",  # ms | MB | % | 1
    "x_name",  # the swept variable: num_classes | epochs | ranks
    "x_value",
    "median",
    "p25",
    "p75",
    "mean",
    "std",
    "n",  # number of measurements (repeats, seeds, ranks) summarised in the row
    "config",  # JSON: the fixed settings of the measurement
    "machine",
    "device",
    "python",
    "torch",
    "arcloss",
    "threads",
]
KEY = ("benchmark", "device", "provider", "metric", "x_name", "x_value", "config")


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def cpu_name() -> str:
    """CPU model and logical core count, e.g. ``Intel(R) Xeon(R) Processor @ 2.50GHz x2``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} x{os.cpu_count()}"


def resolve_device(name: str) -> torch.device:
    """``"auto"``: CUDA when available, else CPU; ``"cpu"``; ``"cuda"`` (an error when there is none)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch")
    return device


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def environment(device: torch.device) -> dict[str, Any]:
    """The machine and version columns of :data:`FIELDS`."""
    return {
        "machine": cpu_name(),
        "device": device_name(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "arcloss": arcloss.__version__,
        "threads": torch.get_num_threads(),
    }


def describe_environment(env: dict[str, Any]) -> str:
    return (
        f"{env['machine']} | {env['device']} | python {env['python']} | torch {env['torch']} | "
        f"arcloss {env['arcloss']} | {env['threads']} threads"
    )


# --- timing -----------------------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``(fn(*args, **kwargs), seconds)``."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def summarize(values: Iterable[float]) -> dict[str, float]:
    """median, 25th and 75th percentiles, mean, standard deviation (0 for one value) and count."""
    v = list(values)
    if not v:
        raise ValueError("nothing to summarize")
    q = statistics.quantiles(v, n=4, method="inclusive") if len(v) > 1 else [v[0]] * 3
    return {
        "median": statistics.median(v),
        "p25": q[0],
        "p75": q[2],
        "mean": statistics.fmean(v),
        "std": statistics.stdev(v) if len(v) > 1 else 0.0,
        "n": len(v),
    }


# --- memory -----------------------------------------------------------------------------------------------------


def rss_bytes() -> int:
    """Resident set size of this process now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """The kernel's high-water mark of this process's resident set (``VmHWM``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux); False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# --- the CSV ----------------------------------------------------------------------------------------------------


def row(
    benchmark: str,
    provider: str,
    metric: str,
    unit: str,
    x_name: str,
    x_value: Any,
    values: Iterable[float],
    config: dict[str, Any],
    env: dict[str, Any],
    date: str,
) -> dict[str, Any]:
    """One CSV row: the summary of ``values`` (repeats, seeds or ranks) for one provider, metric and x value."""
    stats = summarize(values)
    fmt = {k: (f"{v:.6g}" if k != "n" else v) for k, v in stats.items()}
    return {
        "date": date,
        "benchmark": benchmark,
        "provider": provider,
        "metric": metric,
        "unit": unit,
        "x_name": x_name,
        "x_value": x_value,
        **fmt,
        "config": json.dumps(config, sort_keys=True),
        **env,
    }


def append_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append ``rows`` to the CSV at ``path`` (header written when the file is new); every column of
    :data:`FIELDS` must be present."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="raise")
        if new:
            writer.writeheader()
        writer.writerows(rows)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != FIELDS:
            raise ValueError(f"{path}: columns {reader.fieldnames} are not the shared schema {FIELDS}")
        return list(reader)


def latest_rows(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """For each :data:`KEY`, the newest row (a rerun of some points replaces only those)."""
    latest: dict[tuple[str, ...], dict[str, str]] = {}
    for r in rows:
        key = tuple(r[k] for k in KEY)
        if key not in latest or r["date"] >= latest[key]["date"]:
            latest[key] = r
    return list(latest.values())

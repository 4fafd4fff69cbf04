"""Plot the speed/memory CSV written by ``python -m benchmarks.speed``: time and memory against C, log axes.

Usage: ``python -m benchmarks.speed.plot [--csv benchmarks/results/speed_memory.csv] [--out docs/img]``.
For each device, provider, class count and metric, uses the newest row (a rerun of some class counts replaces
only those points; every provider of one class count is measured side by side in one run).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks import common
from benchmarks.speed.run import BENCHMARK, DEFAULT_CSV

MEMORY_METRICS = {
    "memory_step": ("", "default allocator"),
    "memory_step_mmap64k": (" (mmap threshold 64 KiB)", "glibc mmap threshold pinned at 64 KiB"),
}


def plot(rows: list[dict[str, str]], out: Path) -> list[Path]:
    written = []
    by_device = defaultdict(list)
    for r in rows:
        if r["benchmark"] == BENCHMARK:
            by_device[r["device"]].append(r)
    for device, device_rows in by_device.items():
        fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(12, 4.4))
        time_series: dict[str, dict[int, tuple[float, float, float]]] = defaultdict(dict)
        mem_series: dict[str, dict[int, float]] = defaultdict(dict)
        w_mb: dict[int, float] = {}
        for r in device_rows:
            c = int(r["x_value"])
            w_mb[c] = c * json.loads(r["config"])["dim"] * 4 / 2**20
            if r["metric"] == "time_full":
                time_series[r["provider"]][c] = (float(r["median"]), float(r["p25"]), float(r["p75"]))
            elif r["metric"] in MEMORY_METRICS:
                mem_series[r["provider"] + MEMORY_METRICS[r["metric"]][0]][c] = float(r["median"])
        colors = {}
        for name, data in sorted(time_series.items()):
            cs = sorted(data)
            med = [data[c][0] for c in cs]
            err = [
                [m - data[c][1] for c, m in zip(cs, med, strict=True)],
                [data[c][2] - m for c, m in zip(cs, med, strict=True)],
            ]
            line = ax_time.errorbar(cs, med, yerr=err, capsize=3, marker="o", label=name)
            colors[name] = line[0].get_color()
        for name, data in sorted(mem_series.items()):
            cs = sorted(data)
            provider = name.split(" (")[0]
            tuned = "(" in name
            ax_mem.plot(
                cs,
                [data[c] for c in cs],
                marker="s" if tuned else "o",
                linestyle="--" if tuned else "-",
                color=colors.get(provider),
                label=name,
            )
        cs = sorted(w_mb)
        ax_mem.plot(cs, [w_mb[c] for c in cs], linestyle=":", color="grey", label="size of W (reference)")
        first = device_rows[0]
        cfg = json.loads(first["config"])
        for ax, label in (
            (ax_time, "forward + backward time, ms (median, bars: 25-75 %)"),
            (ax_mem, "memory one step adds above inputs + parameters, MB"),
        ):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("number of classes C")
            ax.set_ylabel(label, fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
        ax_time.legend(fontsize=8, loc="upper left", title="provider", title_fontsize=8)
        ax_mem.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
        machines = sorted({r["machine"] for r in device_rows})
        where = " / ".join(machines) if device == "cpu" else device
        fig.suptitle(
            f"ArcFace vs softmax, N={cfg['batch']}, D={cfg['dim']}, {cfg['dtype']} - {where} - torch {first['torch']}"
            + (" (points from several machines: see the CSV)" if len(machines) > 1 else ""),
            fontsize=9,
        )
        fig.tight_layout()
        path = out / f"speed_memory_{'cpu' if device == 'cpu' else 'cuda'}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--out", type=Path, default=common.ROOT.parent / "docs" / "img")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in plot(common.latest_rows(common.read_rows(args.csv)), args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

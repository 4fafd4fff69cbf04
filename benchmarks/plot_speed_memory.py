"""Plot the speed/memory CSV written by ``speed_memory.py``: time and memory against C, log axes.

Usage: ``python benchmarks/plot_speed_memory.py [--csv benchmarks/results/speed_memory.csv] [--out docs/img]``.
For each device, provider, class count and mode, uses the newest row in the CSV (a rerun of some class counts
replaces only those points; every provider of one class count is measured side by side in one run).
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent


def latest_rows(path: Path) -> list[dict]:
    latest: dict[tuple, dict] = {}
    for row in csv.DictReader(path.open()):
        key = (row["device"], row["provider"], row["num_classes"], row["mode"])
        if key not in latest or row["date"] >= latest[key]["date"]:
            latest[key] = row
    return list(latest.values())


def plot(rows: list[dict], out: Path) -> list[Path]:
    written = []
    by_device = defaultdict(list)
    for row in rows:
        by_device[row["device"]].append(row)
    for device, device_rows in by_device.items():
        fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(11, 4.2))
        series = defaultdict(lambda: defaultdict(dict))
        for row in device_rows:
            if row["mode"] != "full":
                continue
            c = int(row["num_classes"])
            series[row["provider"]]["time"][c] = (float(row["median_ms"]), float(row["p25_ms"]), float(row["p75_ms"]))
            if row["extra_mem_mb"]:
                series[row["provider"]]["mem"][c] = float(row["extra_mem_mb"])
            series["|W| (reference)"]["mem"][c] = float(row["w_mb"])
        for name, data in series.items():
            style = dict(marker="o", label=name)
            if name.startswith("|W|"):
                style = dict(linestyle=":", color="grey", label=name)
            if data.get("time"):
                cs = sorted(data["time"])
                med = [data["time"][c][0] for c in cs]
                ax_time.errorbar(
                    cs,
                    med,
                    yerr=[
                        [m - data["time"][c][1] for c, m in zip(cs, med, strict=True)],
                        [data["time"][c][2] - m for c, m in zip(cs, med, strict=True)],
                    ],
                    capsize=3,
                    **style,
                )
            if data.get("mem"):
                cs = sorted(data["mem"])
                ax_mem.plot(cs, [data["mem"][c] for c in cs], **style)
        first = device_rows[0]
        for ax, label in ((ax_time, "forward + backward, median ms"), (ax_mem, "memory above inputs + params, MB")):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("number of classes C")
            ax.set_ylabel(label)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(
            f"ArcFace vs softmax, N={first['batch']}, D={first['dim']}, {first['dtype']} - "
            f"{first['machine'] if device == 'cpu' else device} - torch {first['torch']}",
            fontsize=9,
        )
        fig.tight_layout()
        path = out / f"speed_memory_{'cpu' if device == 'cpu' else 'cuda'}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--csv", type=Path, default=HERE / "results" / "speed_memory.csv")
    parser.add_argument("--out", type=Path, default=HERE.parent / "docs" / "img")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for path in plot(latest_rows(args.csv), args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

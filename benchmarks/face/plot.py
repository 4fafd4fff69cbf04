"""Figures of the face benchmark from its ``results.json`` (matplotlib, Agg backend).

    python -m benchmarks.face.plot benchmarks/results/face_lfw_cpu [--out DIR]

``face_budget.png``: accuracy and TAR@FAR=1e-2 against epochs trained; ``face_roc.png``: ROC curves;
``face_angles.png``: angles between test-pair embeddings; ``face_train_loss.png``: training loss per loss.
Legends sit outside the axes; run names are the descriptive names of ``benchmarks.face.losses.display_name``.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _title(result: dict) -> str:
    data = "SYNTHETIC identities" if result["synthetic"] else result["data_tag"].upper()
    return f"{data}, held-out identities; {result['environment']['device']}"


def _colors(result: dict) -> dict[str, str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {label: cycle[i % len(cycle)] for i, label in enumerate(result["losses"])}


def plot_budget(result: dict, path: Path) -> Path:
    """Accuracy and TAR@1e-2 against epochs: schedule ends (markers, ± std bars) and the evaluations within the
    longest schedule (line, ± std band)."""
    colors, names = _colors(result), result["names"]
    schedules = result["schedules"]
    longest = str(schedules[-1])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, metric, ylabel in (
        (axes[0], "accuracy_flip", "10-fold verification accuracy, %"),
        (axes[1], "tar@0.01_flip", "TAR at FAR = 1e-2, %"),
    ):
        for label in result["losses"]:
            by_sched = result["summary"][label]
            within = by_sched[longest]
            xs = [int(e) for e in within]
            mean = [100 * within[e][metric]["mean"] for e in within]
            std = [100 * within[e][metric]["std"] for e in within]
            one = len(schedules) == 1
            ax.plot(xs, mean, "-o" if one else ":", color=colors[label], label=names[label] if one else None)
            ax.fill_between(
                xs,
                [m - s for m, s in zip(mean, std, strict=True)],
                [m + s for m, s in zip(mean, std, strict=True)],
                color=colors[label],
                alpha=0.15 if one else 0.07,
                linewidth=0,
            )
            if len(schedules) > 1:
                ends = [(s, by_sched[str(s)][str(s)][metric]) for s in schedules]
                ax.errorbar(
                    [s for s, _ in ends],
                    [100 * st["mean"] for _, st in ends],
                    yerr=[100 * st["std"] for _, st in ends],
                    fmt="-o",
                    capsize=3,
                    color=colors[label],
                    label=names[label],
                )
        ax.set_xlabel("epochs trained")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    n = len(result["seeds"])
    if len(schedules) == 1:
        note = (
            f"evaluated during one {schedules[0]}-epoch schedule (cosine learning-rate decay); "
            f"mean ± std over {n} seeds"
        )
    else:
        note = (
            f"markers: end of a full schedule of that many epochs (± std over {n} seeds); "
            f"dotted: evaluations during the {longest}-epoch schedule"
        )
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=1, fontsize=8, frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(f"Accuracy against training budget - {_title(result)}\n{note}", fontsize=9)
    fig.tight_layout(rect=(0, 0.06 * len(result["losses"]) / 2 + 0.05, 1, 1))
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_roc(result: dict, path: Path) -> Path:
    colors, names = _colors(result), result["names"]
    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    for label, c in result["roc_first_seed_longest"].items():
        ax.plot(c["far"], c["tar"], lw=1.5, color=colors[label], label=f"{names[label]}\n(AUC {c['auc']:.4f})")
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("false accept rate (FAR), log scale")
    ax.set_ylabel("true accept rate (TAR)")
    ax.set_title(
        f"ROC after {result['schedules'][-1]} epochs, seed {result['seeds'][0]}, flip TTA - {_title(result)}",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, labelspacing=1.0)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_angles(result: dict, path: Path) -> Path:
    """One panel per loss: the angle between the two embeddings of same-identity and different-identity pairs."""
    hists, names = result["angle_hist_first_seed_longest"], result["names"]
    n = len(hists)
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), sharex=True, squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    edges = list(range(181))
    for ax, (label, h) in zip(axes.flat[:n], hists.items(), strict=True):
        for kind, color, text in (("neg", "tab:red", "different identity"), ("pos", "tab:blue", "same identity")):
            total = max(1, sum(h[kind]))
            ax.stairs([c / total for c in h[kind]], edges, fill=True, alpha=0.5, color=color, label=text)
        ax.set_title("\n".join(textwrap.wrap(names[label], 40)), fontsize=8)
        ax.set_xlim(0, 150)
        ax.set_xlabel("angle between the pair's embeddings, degrees")
    for row in axes:
        row[0].set_ylabel("fraction of pairs per degree")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize=8, frameon=False)
    fig.suptitle(
        f"Test-pair angles after {result['schedules'][-1]} epochs, seed {result['seeds'][0]} - {_title(result)}",
        fontsize=9,
        x=0.02,
        ha="left",
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_train_loss(result: dict, path: Path) -> Path:
    """One panel per loss, each on its own scale: the losses differ in scale and are not comparable to each other."""
    colors, names = _colors(result), result["names"]
    losses = result["losses"]
    cols = min(3, len(losses))
    rows = -(-len(losses) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax in axes.flat[len(losses) :]:
        ax.axis("off")
    for ax, label in zip(axes.flat, losses, strict=False):
        for sched in result["schedules"]:
            runs = [r["train_loss"] for r in result["runs"] if r["loss"] == label and r["epochs"] == sched]
            epochs = range(1, len(runs[0]) + 1)
            cols_ = list(zip(*runs, strict=True))
            mean = [sum(c) / len(c) for c in cols_]
            (line,) = ax.plot(
                epochs, mean, color=colors[label], lw=1.2, alpha=0.4 + 0.6 * (sched == result["schedules"][-1])
            )
            ax.fill_between(
                epochs, [min(c) for c in cols_], [max(c) for c in cols_], color=line.get_color(), alpha=0.15
            )
        ax.set_title("\n".join(textwrap.wrap(names[label], 40)), fontsize=8)
        ax.set_xlabel("epoch")
        ax.set_ylabel("mean training loss (nats)")
        ax.grid(True, alpha=0.3)
    fig.suptitle(
        f"Training loss, mean and min-max over seeds; each loss on its own scale (not comparable across panels) - "
        f"{_title(result)}",
        fontsize=9,
        x=0.02,
        ha="left",
    )
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_vs_degradation(
    curves: dict[str, dict[str, list[list[float]]]],
    ticks: dict[str, list[str]],
    units: dict[str, str],
    ylabel: str,
    path: Path,
    title: str,
) -> None:
    """One panel per degradation kind: ``curves[kind][label]`` = one list per seed of a value at each level
    (clean first); plots the mean over seeds and the min–max band. ``ticks[kind]``: the level names."""
    kinds = list(curves)
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.6 * len(kinds), 3.4), squeeze=False, sharey=True)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for label, runs in curves[kind].items():
            xs = range(len(runs[0]))
            cols = list(zip(*runs, strict=True))
            mean = [sum(c) / len(c) for c in cols]
            (line,) = ax.plot(xs, mean, marker="o", ms=3, lw=1.5, label=label)
            ax.fill_between(xs, [min(c) for c in cols], [max(c) for c in cols], color=line.get_color(), alpha=0.2)
        ax.set_xticks(range(len(ticks[kind])), ticks[kind])
        ax.set_xlabel(f"{kind}: {units[kind]}", fontsize=9)
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_all(result: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    return [
        plot_budget(result, out / "face_budget.png"),
        plot_roc(result, out / "face_roc.png"),
        plot_angles(result, out / "face_angles.png"),
        plot_train_loss(result, out / "face_train_loss.png"),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="a directory holding results.json (or the file itself)")
    parser.add_argument("--out", type=Path, default=None, help="default: beside results.json")
    args = parser.parse_args(argv)
    path = args.results / "results.json" if args.results.is_dir() else args.results
    for written in plot_all(json.loads(path.read_text()), args.out or path.parent):
        print(f"wrote {written}")


if __name__ == "__main__":
    main()

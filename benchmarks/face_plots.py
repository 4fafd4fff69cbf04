"""Figures of the face benchmark (matplotlib, Agg backend): ROC curves, pair-angle histograms, training loss."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot_roc(curves: dict[str, tuple[list[float], list[float], float]], path: Path, title: str) -> None:
    """``curves[label] = (far, tar, auc)``; FAR on a log axis (1e-4 … 1)."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, (far, tar, auc) in curves.items():
        ax.plot(far, tar, label=f"{label} (AUC {auc:.4f})", lw=1.5)
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("false accept rate (FAR)")
    ax.set_ylabel("true accept rate (TAR)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_angles(hists: dict[str, tuple[list[float], list[float]]], path: Path, title: str) -> None:
    """``hists[label] = (positive_angles, negative_angles)`` in degrees; one panel per loss."""
    n = len(hists)
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), sharex=True, squeeze=False)
    bins = [i * 2.0 for i in range(76)]  # 0..150 degrees
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (label, (pos, neg)) in zip(axes.flat[:n], hists.items(), strict=True):
        ax.hist(neg, bins=bins, density=True, alpha=0.6, color="tab:red", label="different")
        ax.hist(pos, bins=bins, density=True, alpha=0.6, color="tab:blue", label="same")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("angle between embeddings (°)")
    for row in axes:
        row[0].set_ylabel("density")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training(curves: dict[str, list[list[float]]], path: Path, title: str) -> None:
    """``curves[label]`` = one per-epoch training-loss list per seed; plots the mean and the min–max band."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, runs in curves.items():
        epochs = range(1, len(runs[0]) + 1)
        cols = list(zip(*runs, strict=True))
        mean = [sum(c) / len(c) for c in cols]
        (line,) = ax.plot(epochs, mean, label=label, lw=1.5)
        ax.fill_between(epochs, [min(c) for c in cols], [max(c) for c in cols], color=line.get_color(), alpha=0.2)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (mean over the epoch)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

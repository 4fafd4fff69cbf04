"""Target-logit curves of the margin family against the angle: the figure on docs/margins.md.

Usage: ``python -m benchmarks.plot_margins [--out docs/img/margins.png]``. Evaluates each member's
:class:`arcloss.AngularMargin` (the code the losses run), not a re-derivation.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from arcloss import AngularMargin

MEMBERS = {
    "softmax (no margin)": AngularMargin(),
    "ArcFace m=28.6°": AngularMargin(m2=28.6),
    "ArcFace m=28.6°, easy margin": AngularMargin(m2=28.6, easy_margin=True),
    "CosFace m=0.35": AngularMargin(m3=0.35),
    "combined (1, 17.2°, 0.2)": AngularMargin(1.0, 17.2, 0.2),
    "SphereFace-style m1=1.35": AngularMargin(m1=1.35),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "img" / "margins.png"
    )
    args = parser.parse_args()
    theta = torch.linspace(0, math.pi, 2001, dtype=torch.float64)
    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    for name, margin in MEMBERS.items():
        phi, _ = margin(torch.cos(theta))
        ax.plot(torch.rad2deg(theta), phi, label=name, linestyle="--" if "easy" in name else "-")
    ax.set_xlabel("angle to the class centre θ (degrees)")
    ax.set_ylabel("target logit / s (dimensionless)")
    ax.set_xlim(0, 180)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    ax.set_title("Target logit of each margin (easy margin jumps back to cos θ at 90°)", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120, bbox_inches="tight")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Face verification on held-out identities, clean and degraded: where the quality-adaptive losses claim their gain.

Trains one backbone per (loss, seed) exactly as the main face benchmark (:mod:`benchmarks.face`) does (same data,
identity split, initial weights, batch order, augmentation and optimiser; the training images are never degraded
unless ``--train-degrade`` asks for it), then evaluates on the held-out identities' images

- clean (the main benchmark's protocol);
- degraded by one kind at three levels (``DEGRADATIONS``: Gaussian blur, low resolution, additive noise), both
  images of every pair degraded;
- "mixed": every test image degraded once by a random kind and level (seeded), scored both ways: both images
  of each pair degraded (``mixed``), and the first image clean against the second degraded (``probe``: an
  enrolment photo against a poor capture).

It also records the mean feature norm (the backbone's raw output, before normalisation) at each degradation
level: MagFace and AdaFace read the norm as quality, so it should fall as the images degrade.

    python -m benchmarks.face.degraded                 # softmax, arcface, adaface, magface; 3 seeds; LFW
    python -m benchmarks.face.degraded --smoke         # tiny synthetic run (seconds)

Writes one JSON per run to ``OUT/runs/`` (``--resume`` reuses those with the same settings), then ``results.json``,
``results.csv`` (the shared benchmark schema), ``face_degraded.png`` (accuracy against degradation level) and
``face_norm_vs_degradation.png`` to ``--out`` (default ``benchmarks/results/face_adaptive``).
See docs/adaptive_margins.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from arcloss.verification import embed, evaluate_pairs, pair_scores
from benchmarks import common
from benchmarks.common import timed
from benchmarks.face.data import DEFAULT_LFW, REPO_ROOT, resolve_data, split_identities, synthetic_identities
from benchmarks.face.losses import LOSS_NAMES, describe, make_loss, parse_spec
from benchmarks.face.models import make_backbone
from benchmarks.face.plot import plot_vs_degradation
from benchmarks.face.train import TrainConfig, heldout_pairs, to_float, train

# Three levels per kind, for 48 px crops: Gaussian blur sigma (px), the side the image is shrunk to before being
# enlarged back (px), and the standard deviation of additive Gaussian noise (grey levels of 255).
DEGRADATIONS: dict[str, tuple[float, ...]] = {"blur": (1.0, 2.0, 3.0), "lowres": (20, 14, 10), "noise": (10, 20, 35)}
FAR = "0.01"


def degrade(images: Tensor, kind: str, level: float, gen: torch.Generator | None = None) -> Tensor:
    """``images`` uint8 ``(N, 1, S, S)`` degraded by ``kind`` at ``level`` (see ``DEGRADATIONS``), uint8."""
    x = images.float()
    size = x.shape[-1]
    if kind == "blur":
        radius = max(1, int(3 * level + 0.5))
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        k = torch.exp(-(t**2) / (2 * level**2))
        k = k / k.sum()
        x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
        x = F.conv2d(F.conv2d(x, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))
    elif kind == "lowres":
        small = F.interpolate(x, size=(int(level), int(level)), mode="bilinear", antialias=True, align_corners=False)
        x = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    elif kind == "noise":
        x = x + level * torch.randn(x.shape, generator=gen)
    else:
        raise ValueError(f"unknown degradation {kind!r}; choose from {tuple(DEGRADATIONS)}")
    return x.round().clamp(0, 255).to(torch.uint8)


def degraded_sets(
    images: Tensor, seed: int, fraction: float = 1.0
) -> tuple[dict[tuple[str, int], Tensor], Tensor, Tensor]:
    """Every (kind, level index 1..3) version of ``images``, and the mixed set: each image degraded by a random
    kind at a random level (1..3), or, with probability ``1 - fraction``, left clean (level 0); and the levels."""
    gen = torch.Generator().manual_seed(seed)
    sets = {
        (kind, i + 1): degrade(images, kind, level, gen)
        for kind, levels in DEGRADATIONS.items()
        for i, level in enumerate(levels)
    }
    kinds = list(DEGRADATIONS)
    pick = torch.randint(0, len(kinds), (images.shape[0],), generator=gen)
    level = torch.randint(1, 4, (images.shape[0],), generator=gen)
    level[torch.rand(images.shape[0], generator=gen) >= fraction] = 0
    mixed = images.clone()
    for k, kind in enumerate(kinds):
        for lv in (1, 2, 3):
            rows = (pick == k) & (level == lv)
            mixed[rows] = sets[(kind, lv)][rows]
    return sets, mixed, level


@torch.no_grad()
def raw_norms(backbone: nn.Module, images: Tensor, batch_size: int = 512) -> Tensor:
    """The backbone's output norms ``(N,)`` in eval mode (no flip), before any normalisation."""
    backbone.eval()
    out = [torch.linalg.vector_norm(backbone(to_float(b)), dim=1) for b in torch.split(images, batch_size)]
    return torch.cat(out)


def _ranks(v: Tensor) -> Tensor:
    """Ranks 1..n of ``v``, ties sharing their mean rank."""
    _, inverse, counts = torch.unique(v, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    return ((ends - counts.double() + 1 + ends) / 2)[inverse]


def _spearman(a: Tensor, b: Tensor) -> float:
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def _metrics(scores: Tensor, same: Tensor) -> dict[str, float]:
    r = evaluate_pairs(scores, same)
    return {"accuracy": r.accuracy_mean, "tar": r.tar_at_far[float(FAR)], "auc": r.auc}


def evaluate_degraded(backbone: nn.Module, images: Tensor, pairs: tuple[Tensor, Tensor, Tensor], seed: int) -> dict:
    """Flip-TTA metrics (10-fold accuracy, TAR@FAR=1e-2, AUC) and mean raw norms, clean and degraded."""
    a, b, same = pairs
    sets, mixed, mixed_level = degraded_sets(images, seed)
    clean = embed(backbone, to_float(images), flip_tta=True)
    out: dict = {"clean": _metrics(pair_scores(clean, a, b), same), "levels": {}, "norms": {}}
    clean_norm = raw_norms(backbone, images)
    out["norms"]["clean"] = float(clean_norm.mean())
    for (kind, lv), imgs in sets.items():
        e = embed(backbone, to_float(imgs), flip_tta=True)
        out["levels"][f"{kind}{lv}"] = _metrics(pair_scores(e, a, b), same)
        out["norms"][f"{kind}{lv}"] = float(raw_norms(backbone, imgs).mean())
    e = embed(backbone, to_float(mixed), flip_tta=True)
    out["mixed"] = _metrics(pair_scores(e, a, b), same)
    out["probe"] = _metrics((clean[a] * e[b]).sum(dim=1), same)
    mixed_norm = raw_norms(backbone, mixed)
    # Does the norm rank images by quality? Fraction of (clean, degraded) image pairs of the same image where the
    # clean one has the larger norm (0.5: the norm ignores the degradation).
    out["norm_clean_above_degraded"] = float((clean_norm > mixed_norm).double().mean())
    out["mixed_norm_by_level"] = [float(mixed_norm[mixed_level == lv].mean()) for lv in (1, 2, 3)]
    # Spearman rank correlation between the norm and the degradation level over the clean and mixed images.
    levels = torch.cat([torch.zeros_like(mixed_level), mixed_level]).double()
    norms = torch.cat([clean_norm, mixed_norm]).double()
    out["norm_level_spearman"] = _spearman(norms, levels)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default="auto", help="as benchmarks.face: 'auto', 'synthetic' or an ImageFolder path")
    p.add_argument(
        "--losses",
        nargs="+",
        default=["softmax", "arcface", "adaface", "magface"],
        help=f"loss specs NAME[:key=value,...], NAME in {LOSS_NAMES} (see benchmarks/face/losses.py)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--embedding-size", type=int, default=128)
    p.add_argument("--test-fraction", type=float, default=0.29)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--resume", action="store_true", help="reuse OUT/runs/*.json written with the same settings")
    p.add_argument(
        "--train-degrade",
        type=float,
        default=0.0,
        help="fraction of the TRAINING images replaced, once and seeded, by a degraded version (a random kind\n"
        "and level, as the mixed test set); default 0: the training images are never degraded",
    )
    p.add_argument("--smoke", action="store_true", help="tiny synthetic set (24 ids x 6, 32 px), 1 epoch, 1 seed")
    args = p.parse_args(argv)
    if args.smoke:
        args.epochs, args.seeds, args.size, args.batch_size = 1, args.seeds[:1], 32, 32
    return args


def _settings(args: argparse.Namespace) -> dict:
    keys = ("data", "epochs", "batch_size", "lr", "size", "embedding_size", "test_fraction", "split_seed", "smoke")
    settings = {k: getattr(args, k) for k in keys}
    if args.train_degrade:
        settings["train_degrade"] = args.train_degrade
    return settings


def _run_path(out: Path, label: str, seed: int) -> Path:
    return out / "runs" / f"{re.sub(r'[^A-Za-z0-9_.=-]+', '_', label)}_seed{seed}.json"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    if args.smoke:
        faces = synthetic_identities(num_identities=24, per_identity=6, size=args.size)
    else:
        faces = resolve_data(args.data, size=args.size)
    is_lfw = not args.smoke and args.data == "auto" and DEFAULT_LFW.is_dir()
    out = args.out or REPO_ROOT / "benchmarks" / "results" / "face_adaptive"
    (out / "runs").mkdir(parents=True, exist_ok=True)
    num_ids = len(faces.names)
    train_ids, test_ids = split_identities(num_ids, max(2, round(args.test_fraction * num_ids)), args.split_seed)
    train_set, test_set = faces.subset(train_ids), faces.subset(test_ids)
    pairs = heldout_pairs(test_set.labels, seed=args.split_seed)
    print(f"data: {faces.description}{' (LFW)' if is_lfw else ''}")
    n_test = test_set.labels.numel()
    print(f"split: {len(train_ids)} train identities, {len(test_ids)} test identities ({n_test} images)")
    train_images = train_set.images
    if args.train_degrade:
        _, train_images, train_level = degraded_sets(train_images, args.split_seed + 1, args.train_degrade)
        print(f"training images degraded: {int((train_level > 0).sum())} of {train_level.numel()}")
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    specs = [parse_spec(s) for s in args.losses]
    runs = []
    for spec in specs:
        for seed in args.seeds:
            torch.manual_seed(seed)
            backbone = make_backbone("small", args.embedding_size)
            torch.manual_seed(10_000 + seed)
            loss_fn = make_loss(spec, len(train_ids), args.embedding_size)
            key = describe(spec, loss_fn)
            if seed == args.seeds[0]:
                print(f"{spec.label} = {key}")
            path = _run_path(out, spec.label, seed)
            if args.resume and path.exists():
                saved = json.loads(path.read_text())
                if saved["key"] == key and saved["settings"] == _settings(args):
                    runs.append(saved)
                    print(f"  {spec.label:<12} seed {seed}: reused {path.name}")
                    continue
            history, secs = timed(
                train,
                backbone,
                loss_fn,
                train_images,
                train_set.labels,
                cfg,
                seed,
                loss_lr_mult=spec.lr,
                margin_warmup_epochs=spec.warmup,
            )
            metrics = evaluate_degraded(backbone, test_set.images, pairs, args.split_seed)
            run = {
                "loss": spec.label,
                "seed": seed,
                "key": key,
                "settings": _settings(args),
                "train_loss": history,
                "train_seconds": round(secs, 1),
                **metrics,
            }
            path.write_text(json.dumps(run, indent=1))
            runs.append(run)
            print(
                f"  {spec.label:<12} seed {seed}: clean acc {100 * run['clean']['accuracy']:.2f}  mixed acc "
                f"{100 * run['mixed']['accuracy']:.2f}  probe acc {100 * run['probe']['accuracy']:.2f}  "
                f"norm clean>degraded {100 * run['norm_clean_above_degraded']:.1f} %  ({secs:.0f} s)",
                flush=True,
            )
    return _report(runs, specs, args, faces.description, out, time.perf_counter() - t_start)


def _ms(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def report_columns(runs: list[dict]) -> list[tuple[str, Callable[[dict], float]]]:
    """The reported metrics: (name, value of one run as a fraction)."""
    columns: list[tuple[str, Callable[[dict], float]]] = [
        ("clean acc", lambda r: r["clean"]["accuracy"]),
        (f"clean TAR@{FAR}", lambda r: r["clean"]["tar"]),
        ("mixed acc", lambda r: r["mixed"]["accuracy"]),
        (f"mixed TAR@{FAR}", lambda r: r["mixed"]["tar"]),
        ("probe acc", lambda r: r["probe"]["accuracy"]),
        *((f"{kind}3 acc", lambda r, k=kind: r["levels"][f"{k}3"]["accuracy"]) for kind in DEGRADATIONS),
        ("norm clean>deg.", lambda r: r["norm_clean_above_degraded"]),
    ]
    if all("norm_level_spearman" in r for r in runs):
        columns.append(("norm~level rho", lambda r: r["norm_level_spearman"]))
    return columns


def csv_rows(by_loss: dict[str, list[dict]], columns, settings: dict, env: dict) -> list[dict]:
    """One row per (loss, metric) in the shared benchmark schema, summarising the seeds (values in %)."""
    date = common.now_utc()
    return [
        common.row(
            "face_degraded",
            label,
            name,
            "%",
            "epochs",
            settings["epochs"],
            [100 * get(r) for r in rs],
            {**settings, "seeds": sorted(r["seed"] for r in rs)},
            env,
            date,
        )
        for label, rs in by_loss.items()
        for name, get in columns
    ]


def _report(runs: list[dict], specs, args, description: str, out: Path, wall: float) -> dict:
    by_loss = {s.label: [r for r in runs if r["loss"] == s.label] for s in specs}
    columns = report_columns(runs)
    summary, rows = {}, []
    for label, rs in by_loss.items():
        summary[label] = {}
        row = [label]
        for name, get in columns:
            mean, std = _ms([get(r) for r in rs])
            summary[label][name] = {"mean": mean, "std": std}
            row.append(f"{100 * mean:.2f} ± {100 * std:.2f}")
        rows.append(row)
    header = ["loss", *(name + " %" for name, _ in columns)]
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    lines = [" | ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)) for row in [header, *rows]]
    lines.insert(1, "-|-".join("-" * w for w in widths))
    print(f"\n{description}; {len(args.seeds)} seed(s), {args.epochs} epochs; mean ± std over seeds (flip TTA)")
    print("\n".join(lines))
    print(f"wall time {wall:.0f} s; results in {out}")

    results_csv = out / "results.csv"
    results_csv.unlink(missing_ok=True)
    common.append_rows(
        results_csv, csv_rows(by_loss, columns, _settings(args), common.environment(torch.device("cpu")))
    )

    levels = [0, 1, 2, 3]
    acc_curves, norm_curves = {}, {}
    for kind in DEGRADATIONS:
        names = ["clean", *(f"{kind}{lv}" for lv in levels[1:])]
        acc_curves[kind], norm_curves[kind] = {}, {}
        for label, rs in by_loss.items():
            accs = [[r["clean"]["accuracy"] if n == "clean" else r["levels"][n]["accuracy"] for n in names] for r in rs]
            norms = [[r["norms"][n] / r["norms"]["clean"] for n in names] for r in rs]
            acc_curves[kind][label] = [[100 * v for v in a] for a in accs]
            norm_curves[kind][label] = norms
    units = {"blur": "Gaussian σ (px)", "lowres": "side before upscaling (px)", "noise": "noise σ (grey levels)"}
    ticks = {kind: ["clean", *(f"{v:g}" for v in vals)] for kind, vals in DEGRADATIONS.items()}
    title = f"{len(args.seeds)} seed(s), {args.epochs} epochs: mean, min–max over seeds"
    plot_vs_degradation(
        acc_curves, ticks, units, "verification accuracy % (flip TTA)", out / "face_degraded.png", title
    )
    plot_vs_degradation(
        norm_curves,
        ticks,
        units,
        "mean feature norm / clean mean",
        out / "face_norm_vs_degradation.png",
        f"feature norm against degradation — {title}",
    )
    result = {
        "data": description,
        "command": " ".join(["python", "-m", "benchmarks.face.degraded", *sys.argv[1:]]),
        "settings": _settings(args),
        "degradations": {k: list(v) for k, v in DEGRADATIONS.items()},
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
            "machine": platform.machine(),
        },
        "losses": {s.label: by_loss[s.label][0]["key"] for s in specs if by_loss[s.label]},
        "wall_seconds": round(wall, 1),
        "summary": summary,
        "runs": runs,
    }
    (out / "results.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()

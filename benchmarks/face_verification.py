"""Face verification on identities never seen in training: plain softmax vs normalised softmax vs ArcFace/CosFace.

Trains one backbone per (loss, seed) with identical initial weights, data order, augmentation and optimiser, then
evaluates LFW-style on the held-out identities (10-fold accuracy, TAR@FAR, ROC/AUC), with and without flip TTA.

    python benchmarks/face_verification.py                      # LFW from ../shared/data if present, else synthetic
    python benchmarks/face_verification.py --data PATH          # any ImageFolder tree (one folder per identity)
    python benchmarks/face_verification.py --smoke              # tiny synthetic run, 1 epoch (seconds)

Writes ``results.json``, ``summary.csv`` and ``face_roc.png``, ``face_angles.png``, ``face_train_loss.png`` to
``--out`` (default ``benchmarks/results/face_<data>``). See docs/face_benchmark.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from face_data import DEFAULT_LFW, REPO_ROOT, resolve_data, split_identities, synthetic_identities
from face_losses import LOSS_NAMES, describe, make_loss, parse_spec
from face_models import BACKBONES, make_backbone
from face_plots import plot_angles, plot_roc, plot_training
from face_train import RunResult, TrainConfig, evaluate, heldout_pairs, timed, train

FARS = ("0.1", "0.01", "0.001")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--data",
        default="auto",
        help="'auto' (default): ../shared/data/lfw-deepfunneled if present, else 'synthetic';\n"
        "'synthetic': procedurally generated identities; or an ImageFolder path",
    )
    p.add_argument(
        "--losses",
        nargs="+",
        default=["softmax", "arcface", "norm-softmax", "cosface", "arcface-default"],
        help=f"loss specs NAME[:key=value,...], NAME in {LOSS_NAMES} (see face_losses.py)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1, help="backbone SGD learning rate (peak)")
    p.add_argument("--size", type=int, default=48, help="side of the grey face crop fed to the network, pixels")
    p.add_argument("--embedding-size", type=int, default=128)
    p.add_argument("--test-fraction", type=float, default=0.29, help="fraction of identities held out for test")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the identity split and of the test pairs")
    p.add_argument("--backbone", default="small", choices=BACKBONES)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    p.add_argument(
        "--resume",
        action="store_true",
        help="reuse runs saved in OUT/runs.pt by an earlier run with the same settings: a (loss, seed) run is reused\n"
        "when the loss's effective hyper-parameters (printed per loss) match",
    )
    p.add_argument("--smoke", action="store_true", help="tiny synthetic set (24 ids x 6, 32 px), 1 epoch, 1 seed")
    args = p.parse_args(argv)
    if args.smoke:
        args.epochs, args.seeds, args.size, args.batch_size = 1, args.seeds[:1], 32, 32
    return args


def _summary(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _fmt(values: list[float], pct: bool = True) -> str:
    mean, std = _summary(values)
    k = 100.0 if pct else 1.0
    return f"{k * mean:.2f} ± {k * std:.2f}" if pct else f"{mean:.4f} ± {std:.4f}"


def _downsample_roc(far: list[float], tar: list[float], points: int = 300) -> tuple[list[float], list[float]]:
    """ROC points at log-spaced FARs (for the JSON and the plot): the best TAR with FAR <= each grid value."""
    f, t = torch.tensor(far), torch.tensor(tar)
    grid = torch.logspace(-4, 0, points, dtype=torch.float64)
    best = [float(t[f <= g + 1e-12].max()) for g in grid]
    return grid.tolist(), best


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    if args.smoke:
        faces = synthetic_identities(num_identities=24, per_identity=6, size=args.size)
        data_tag = "smoke"
    else:
        faces = resolve_data(args.data, size=args.size)
        is_lfw = args.data == "auto" and DEFAULT_LFW.is_dir()
        data_tag = "lfw" if is_lfw else ("synthetic" if args.data in ("auto", "synthetic") else Path(args.data).name)
    out = args.out or REPO_ROOT / "benchmarks" / "results" / f"face_{data_tag}"
    out.mkdir(parents=True, exist_ok=True)
    num_ids = len(faces.names)
    train_ids, test_ids = split_identities(num_ids, max(2, round(args.test_fraction * num_ids)), args.split_seed)
    train_set, test_set = faces.subset(train_ids), faces.subset(test_ids)
    pairs = heldout_pairs(test_set.labels, seed=args.split_seed)
    n_pos = int(pairs[2].sum())
    print(f"data: {faces.description}")
    print(
        f"split: {len(train_ids)} train identities ({train_set.labels.numel()} images), {len(test_ids)} test "
        f"identities ({test_set.labels.numel()} images); {n_pos} positive + {n_pos} negative test pairs"
    )
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, threads=args.threads)
    specs = [parse_spec(s) for s in args.losses]
    checkpoint = out / "runs.pt"
    done = _load_checkpoint(checkpoint, args) if args.resume else {}
    runs: list[RunResult] = []
    for spec in specs:
        for seed in args.seeds:
            torch.manual_seed(seed)
            backbone = make_backbone(args.backbone, args.embedding_size)
            torch.manual_seed(10_000 + seed)
            loss_fn = make_loss(spec, len(train_ids), args.embedding_size)
            key = describe(spec, loss_fn)
            if seed == args.seeds[0]:
                print(f"{spec.label} = {key}")
            if (key, seed) in done:
                runs.append(replace(done[(key, seed)], loss=spec.label))
                print(f"  {spec.label:<28} seed {seed}: reused from {checkpoint}")
                continue
            history, secs = timed(
                train,
                backbone,
                loss_fn,
                train_set.images,
                train_set.labels,
                cfg,
                seed,
                loss_lr_mult=spec.lr,
                margin_warmup_epochs=spec.warmup,
                progress=None if args.no_progress else f"{spec.label} seed {seed}",
            )
            run = RunResult(spec.label, seed, history, secs, evaluate(backbone, test_set.images, pairs), key)
            runs.append(run)
            saved = {**done, **{(r.key, r.seed): r for r in runs}}
            torch.save({"config": _run_config(args), "runs": [vars(r) for r in saved.values()]}, checkpoint)
            m = run.metrics["flip"]
            print(
                f"  {spec.label:<28} seed {seed}: acc {100 * run.metrics['plain']['accuracy']:.2f} / flip "
                f"{100 * m['accuracy']:.2f}  TAR@1e-2 {100 * m['tar_at_far']['0.01']:.2f}  "
                f"final train loss {history[-1]:.3f}  ({secs:.0f} s)",
                flush=True,
            )
    wall = time.perf_counter() - t_start
    table = _report(runs, specs, args, faces.description, out, wall)
    return table


def _run_config(args: argparse.Namespace) -> dict:
    """The settings a saved run must share to be reused by ``--resume``."""
    keys = ("data", "epochs", "batch_size", "lr", "size", "embedding_size", "test_fraction", "split_seed", "backbone")
    return {k: getattr(args, k) for k in keys}


def _load_checkpoint(path: Path, args: argparse.Namespace) -> dict[tuple[str, int], RunResult]:
    if not path.exists():
        return {}
    saved = torch.load(path, weights_only=True)
    if saved["config"] != _run_config(args):
        raise SystemExit(f"{path} was written with other settings {saved['config']}; drop --resume or --out")
    return {(r["key"], r["seed"]): RunResult(**r) for r in saved["runs"]}


def _report(runs: list[RunResult], specs, args, description: str, out: Path, wall: float) -> dict:
    by_loss = {s.label: [r for r in runs if r.loss == s.label] for s in specs}
    header = ["loss", "acc %", "acc % (flip)", "TAR@1e-1 %", "TAR@1e-2 %", "TAR@1e-3 %", "AUC"]
    rows, summary = [], {}
    for label, rs in by_loss.items():
        fl = [r.metrics["flip"] for r in rs]
        cols = {
            "accuracy": [r.metrics["plain"]["accuracy"] for r in rs],
            "accuracy_flip": [m["accuracy"] for m in fl],
            **{f"tar@{f}": [m["tar_at_far"][f] for m in fl] for f in FARS},
            "auc": [m["auc"] for m in fl],
        }
        summary[label] = {k: dict(zip(("mean", "std"), _summary(v), strict=True)) for k, v in cols.items()}
        rows.append(
            [
                label,
                *(_fmt(cols[k]) for k in ("accuracy", "accuracy_flip", *(f"tar@{f}" for f in FARS))),
                _fmt(cols["auc"], pct=False),
            ]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = [" | ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)) for row in [header, *rows]]
    lines.insert(1, "-|-".join("-" * w for w in widths))
    print(
        f"\n{description}; {len(args.seeds)} seed(s), {args.epochs} epochs; mean ± std over seeds "
        f"(TAR and AUC with flip TTA)"
    )
    print("\n".join(lines))
    print(f"wall time {wall:.0f} s; results in {out}")

    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "loss",
                "seed",
                "accuracy",
                "accuracy_flip",
                *(f"tar@{x}_flip" for x in FARS),
                "auc_flip",
                "final_train_loss",
                "train_seconds",
            ]
        )
        for r in runs:
            m = r.metrics["flip"]
            w.writerow(
                [
                    r.loss,
                    r.seed,
                    r.metrics["plain"]["accuracy"],
                    m["accuracy"],
                    *(m["tar_at_far"][x] for x in FARS),
                    m["auc"],
                    r.train_loss[-1],
                    round(r.seconds, 1),
                ]
            )
    first = {label: rs[0] for label, rs in by_loss.items()}
    rocs = {}
    for label, r in first.items():
        far, tar = _downsample_roc(r.metrics["flip"]["roc_far"], r.metrics["flip"]["roc_tar"])
        rocs[label] = (far, tar, r.metrics["flip"]["auc"])
    name = Path(description.split(" (")[0].split()[-1]).name if "ImageFolder" in description else "synthetic"
    title = f"{name}, seed {args.seeds[0]}, flip TTA"
    plot_roc(rocs, out / "face_roc.png", f"ROC on held-out identities — {title}")
    plot_angles(
        {label: (r.metrics["flip"]["angles_pos"], r.metrics["flip"]["angles_neg"]) for label, r in first.items()},
        out / "face_angles.png",
        f"angle between test-pair embeddings — {title}",
    )
    plot_training(
        {label: [r.train_loss for r in rs] for label, rs in by_loss.items()},
        out / "face_train_loss.png",
        "training loss (mean, min–max over seeds)",
    )
    result = {
        "data": description,
        "command": " ".join(["python", "benchmarks/face_verification.py", *sys.argv[1:]]),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
            "machine": platform.machine(),
        },
        "wall_seconds": round(wall, 1),
        "summary": summary,
        "runs": [
            {
                "loss": r.loss,
                "seed": r.seed,
                "train_loss": r.train_loss,
                "train_seconds": round(r.seconds, 1),
                **{
                    mode: {k: v for k, v in m.items() if k not in ("roc_far", "roc_tar", "angles_pos", "angles_neg")}
                    for mode, m in r.metrics.items()
                },
            }
            for r in runs
        ],
        "roc_seed0_flip": {label: {"far": v[0], "tar": v[1]} for label, v in rocs.items()},
        "angle_hist_seed0_flip": {  # counts per 1-degree bin, 0..180
            label: {
                kind: torch.histc(torch.tensor(r.metrics["flip"][f"angles_{kind}"]), 180, 0, 180).int().tolist()
                for kind in ("pos", "neg")
            }
            for label, r in first.items()
        },
    }
    (out / "results.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()

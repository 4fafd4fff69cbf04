"""Face verification on identities never seen in training: plain softmax against ArcFace, across training budgets.

Trains one backbone per (loss, seed, schedule) with identical initial weights, data order, augmentation and
optimiser, evaluates LFW-style on held-out identities (10-fold accuracy, TAR@FAR, ROC/AUC, flip TTA) at several
epochs of each run, prints a verdict in words and writes the results and figures.

    python -m benchmarks.face                       # LFW at ../shared/data/lfw-deepfunneled if present, else the
                                                    # embedded synthetic identities; CUDA when present
    python -m benchmarks.face --device cpu          # force the CPU
    python -m benchmarks.face --epochs 12 20 40     # one full schedule per budget (the default on CUDA: 12 20 40 60)
    python -m benchmarks.face --full                # + normalised softmax, CosFace and ArcFace at s=16
    python -m benchmarks.face --data PATH           # any ImageFolder tree (one folder per identity)
    python -m benchmarks.face --smoke               # tiny synthetic run, 1 epoch (seconds)

Writes ``results.json``, ``results.csv`` (the shared benchmark schema, appended) and the figures (see
:mod:`benchmarks.face.plot`) to ``--out`` (default ``benchmarks/results/face_<data>_<device>``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from benchmarks import common
from benchmarks.face import plot, report
from benchmarks.face.data import DEFAULT_LFW, REPO_ROOT, resolve_data, split_identities, synthetic_identities
from benchmarks.face.losses import LOSS_NAMES, describe, display_name, make_loss, parse_spec
from benchmarks.face.models import BACKBONES, make_backbone
from benchmarks.face.train import TrainConfig, evaluate, heldout_pairs, steps_per_epoch, train

DEFAULT_LOSSES = ["softmax", "arcface", "arcface-default"]
FULL_LOSSES = ["softmax", "arcface", "norm-softmax", "cosface", "arcface-default", "arcface:s=16"]
CPU_EPOCHS = [12]
CUDA_EPOCHS = [12, 20, 40, 60]
CUDA_EXTRA_LOSSES = ["arcface:s=16"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--data",
        default="auto",
        help="'auto' (default): ../shared/data/lfw-deepfunneled if present, else 'synthetic';\n"
        "'synthetic': procedurally generated identities; or an ImageFolder path",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CUDA when available")
    p.add_argument(
        "--losses",
        nargs="+",
        default=None,
        help=f"loss specs NAME[:key=value,...], NAME in {LOSS_NAMES} (see benchmarks/face/losses.py);\n"
        f"default: {' '.join(DEFAULT_LOSSES)} (on CUDA also {' '.join(CUDA_EXTRA_LOSSES)})",
    )
    p.add_argument("--full", action="store_true", help=f"the full comparison: {' '.join(FULL_LOSSES)}")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--epochs",
        type=int,
        nargs="+",
        default=None,
        help="training budgets: one full schedule (warm-up, cosine decay to 0) per value;\n"
        f"default {CPU_EPOCHS} on CPU, {CUDA_EPOCHS} on CUDA",
    )
    p.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help="also evaluate every this many epochs within each run (0: a quarter of the run)",
    )
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1, help="backbone SGD learning rate (peak)")
    p.add_argument("--size", type=int, default=48, help="side of the grey face crop fed to the network, pixels")
    p.add_argument("--embedding-size", type=int, default=128)
    p.add_argument("--test-fraction", type=float, default=0.29, help="fraction of identities held out for test")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the identity split and of the test pairs")
    p.add_argument("--backbone", default="small", choices=BACKBONES)
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads; 0 (default): torch's default, or 1 when other processes already keep the cores busy\n"
        "(measured here: on a busy 2-core machine, 2 threads trained 3-5x slower than 1)",
    )
    p.add_argument("--out", type=Path, default=None)
    p.add_argument(
        "--loss-backend",
        default="auto",
        choices=["auto", "torch", "triton"],
        help="arcloss backend (auto: Triton for CUDA tensors when it imports and runs)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-figures", action="store_true", help="results only (python -m benchmarks.face.plot draws them)")
    p.add_argument(
        "--smoke", action="store_true", help="tiny synthetic set (24 ids x 6, 32 px); 1 epoch, 1 seed unless given"
    )
    args = p.parse_args(argv)
    args.device = common.resolve_device(args.device)
    cuda = args.device.type == "cuda"
    if args.losses is None:
        args.losses = FULL_LOSSES if args.full else DEFAULT_LOSSES + (CUDA_EXTRA_LOSSES if cuda else [])
    if args.smoke:  # 1 epoch and 1 seed unless given
        args.epochs = args.epochs or [1]
        args.seeds = args.seeds if "--seeds" in (argv if argv is not None else sys.argv) else args.seeds[:1]
        args.size, args.batch_size = 32, 32
    if args.epochs is None:
        args.epochs = CUDA_EPOCHS if cuda else CPU_EPOCHS
    args.epochs = sorted(set(args.epochs))
    return args


def cpu_threads(requested: int, device: torch.device) -> int:
    """``requested``, or for 0: torch's default, but 1 on a CPU run when the 1-minute load average shows the cores
    already busy (threads that wait for a descheduled sibling make a training step several times slower)."""
    if requested:
        return requested
    default = torch.get_num_threads()
    if device.type == "cpu" and default > 1 and hasattr(os, "getloadavg"):
        busy = os.getloadavg()[0] >= 0.75 * (os.cpu_count() or 1)
        if busy:
            print(f"the CPU is busy (load average {os.getloadavg()[0]:.1f}): training with 1 thread (--threads N)")
            return 1
    return default


def loss_backend(requested: str, device: torch.device) -> str:
    """``requested``; for ``"auto"`` on CUDA, one tiny forward + backward first: if the Triton path fails on this
    machine, say so and use the PyTorch backend rather than stop the benchmark."""
    if requested != "auto" or device.type != "cuda":
        return requested
    from arcloss import ArcFaceLoss

    try:
        probe = ArcFaceLoss(10, 8, device=device)
        probe(torch.randn(4, 8, device=device, requires_grad=True), torch.arange(4, device=device)).backward()
        torch.cuda.synchronize(device)
    except Exception as e:  # report and carry on with the PyTorch path
        print(f"arcloss backend 'auto' failed on {device} ({type(e).__name__}: {e}); using backend='torch'")
        return "torch"
    return requested


def checkpoints(epochs: int, every: int) -> list[int]:
    """The epochs after which a run of ``epochs`` epochs is evaluated (always including the last)."""
    every = every or max(1, epochs // 4)
    return sorted({*range(every, epochs + 1, every), epochs})


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = args.device
    torch.set_num_threads(cpu_threads(args.threads, device))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes
    t_start = time.perf_counter()
    if args.smoke:
        faces = synthetic_identities(num_identities=24, per_identity=6, size=args.size)
        data_tag = "smoke"
    else:
        faces = resolve_data(args.data, size=args.size)
        is_lfw = args.data == "auto" and DEFAULT_LFW.is_dir()
        data_tag = "lfw" if is_lfw else ("synthetic" if args.data in ("auto", "synthetic") else Path(args.data).name)
    out = args.out or REPO_ROOT / "benchmarks" / "results" / f"face_{data_tag}_{device.type}"
    out.mkdir(parents=True, exist_ok=True)
    num_ids = len(faces.names)
    train_ids, test_ids = split_identities(num_ids, max(2, round(args.test_fraction * num_ids)), args.split_seed)
    train_set, test_set = faces.subset(train_ids), faces.subset(test_ids)
    pairs = heldout_pairs(test_set.labels, seed=args.split_seed)
    n_pos = int(pairs[2].sum())
    env = common.environment(device)
    print(common.describe_environment(env))
    print(f"data: {faces.description}")
    print(
        f"split: {len(train_ids)} train identities ({train_set.labels.numel()} images), {len(test_ids)} test "
        f"identities ({test_set.labels.numel()} images); {n_pos} positive + {n_pos} negative test pairs"
    )
    train_images, train_labels = train_set.images.to(device), train_set.labels.to(device)
    test_images = test_set.images.to(device)
    specs = [parse_spec(s) for s in args.losses]
    backend = loss_backend(args.loss_backend, device)
    names = {}
    for spec in specs:
        loss = make_loss(spec, len(train_ids), args.embedding_size, backend)
        names[spec.label] = display_name(spec, loss)
        print(f"  {spec.label:<18} {names[spec.label]}  [{describe(spec, loss)}]")
    per_epoch = steps_per_epoch(train_images.shape[0], args.batch_size)
    total_steps = len(specs) * len(args.seeds) * sum(args.epochs) * per_epoch
    print(
        f"{len(specs)} losses x {len(args.seeds)} seeds x schedules of {args.epochs} epochs "
        f"({per_epoch} steps of {args.batch_size} images per epoch) on {env['device']}"
    )
    bar = _progress(total_steps, args.no_progress)
    runs = []
    for epochs in args.epochs:
        cfg = TrainConfig(epochs=epochs, batch_size=args.batch_size, lr=args.lr)
        evals_at = checkpoints(epochs, args.eval_every)
        for spec in specs:
            for seed in args.seeds:
                torch.manual_seed(seed)
                backbone = make_backbone(args.backbone, args.embedding_size).to(device)
                torch.manual_seed(10_000 + seed)
                loss_fn = make_loss(spec, len(train_ids), args.embedding_size, backend).to(device)
                evals: dict[int, dict] = {}

                def on_checkpoint(epoch: int, backbone=backbone, evals=evals, last=epochs) -> None:
                    evals[epoch] = evaluate(backbone, test_images, pairs, full=epoch == last)

                if bar is not None:
                    bar.set_description(f"{spec.label} seed {seed}, {epochs} epochs")
                t0 = time.perf_counter()
                history = train(
                    backbone,
                    loss_fn,
                    train_images,
                    train_labels,
                    cfg,
                    seed,
                    loss_lr_mult=spec.lr,
                    margin_warmup_epochs=spec.warmup,
                    checkpoints=evals_at,
                    on_checkpoint=on_checkpoint,
                    on_step=None if bar is None else _bar_step(bar),
                )
                secs = time.perf_counter() - t0
                run = {"loss": spec.label, "seed": seed, "epochs": epochs, "train_loss": history}
                run.update(seconds=round(secs, 2), evals=evals)
                runs.append(run)
                final = evals[epochs]
                line = (
                    f"  {spec.label:<18} seed {seed} {epochs:>3} epochs: acc {100 * final['flip']['accuracy']:.2f} % "
                    f"(flip)  TAR@1e-2 {100 * final['flip']['tar_at_far']['0.01']:.2f} %  "
                    f"train loss {history[-1]:.3f}  ({secs:.0f} s)"
                )
                print(line, flush=True) if bar is None else bar.write(line)
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - t_start
    result = report.build(args, faces.description, data_tag, env, names, runs, wall, sys.argv[1:])
    (out / "results.json").write_text(json.dumps(result, indent=1))
    common.append_rows(out / "results.csv", report.csv_rows(result))
    report.print_report(result)
    if not args.no_figures:
        for path in plot.plot_all(result, out):
            print(f"wrote {path}")
    print(f"wall time {wall:.0f} s; results in {out}")
    return result


def _progress(total: int, disabled: bool):
    if disabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="step", dynamic_ncols=True, smoothing=0.05)


def _bar_step(bar):
    def step(loss: float) -> None:
        bar.update(1)
        if loss == loss and bar.n % 10 == 0:
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    return step


if __name__ == "__main__":
    main()

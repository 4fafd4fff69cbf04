"""Training one backbone with one loss, and evaluating it on held-out identities.

Determinism across losses: for a given seed the backbone's initial weights, the batch order and every augmentation
draw are identical whatever the loss (each comes from its own seeded CPU generator, also when training on CUDA),
so runs differ only by the loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from arcloss.recipes import MarginWarmup
from arcloss.verification import embed, evaluate_pairs, make_pairs, pair_scores


@dataclass
class TrainConfig:
    """Optimiser and schedule, shared by every loss. Learning rates are per step of SGD (momentum 0.9, Nesterov)."""

    epochs: int = 12
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0  # linear lr warm-up, then cosine decay to 0 at the end of `epochs`


def to_float(images: Tensor) -> Tensor:
    """uint8 ``(N, 1, S, S)`` → float in [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def augment(x: Tensor, gen: torch.Generator) -> Tensor:
    """Random horizontal flip, translation (±8 % of the side) with scale (0.9–1.1), brightness (±0.2) and contrast
    (×0.7–1.3), per image; ``x`` ``(N, 1, S, S)`` float in [-1, 1] on any device, ``gen`` a CPU generator."""
    n = x.shape[0]
    r = torch.rand(n, 6, generator=gen).to(x.device)
    flip = torch.where(r[:, 0] < 0.5, -1.0, 1.0)
    zoom = 0.9 + 0.2 * r[:, 1]
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = flip / zoom
    theta[:, 1, 1] = 1.0 / zoom
    theta[:, :, 2] = (r[:, 2:4] - 0.5) * 0.16
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    contrast = (0.7 + 0.6 * r[:, 4]).view(n, 1, 1, 1)
    brightness = ((r[:, 5] - 0.5) * 0.4).view(n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + brightness).clamp_(-1.0, 1.0)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def steps_per_epoch(num_images: int, batch_size: int) -> int:
    """Optimiser steps per epoch (the last partial batch is dropped, for BatchNorm)."""
    return num_images // batch_size


def train(
    backbone: nn.Module,
    loss_fn: nn.Module,
    images: Tensor,
    labels: Tensor,
    cfg: TrainConfig,
    seed: int,
    loss_lr_mult: float = 1.0,
    margin_warmup_epochs: float = 0.0,
    checkpoints: Iterable[int] = (),
    on_checkpoint: Callable[[int], None] | None = None,
    on_step: Callable[[float], None] | None = None,
) -> list[float]:
    """Train ``backbone`` + ``loss_fn`` (both in one SGD optimiser; the loss's parameters at ``lr × loss_lr_mult``)
    on uint8 ``images`` ``(N, 1, S, S)`` with ``labels`` ``(N,)``, all on the device of ``backbone``.

    After each epoch listed in ``checkpoints`` (1-based) calls ``on_checkpoint(epoch)`` (e.g. to evaluate), then
    resumes training. ``on_step(loss)`` is called after every step (e.g. a progress bar). Returns the mean
    training loss of each epoch."""
    n = images.shape[0]
    per_epoch = steps_per_epoch(n, cfg.batch_size)
    total = cfg.epochs * per_epoch
    checkpoints = set(checkpoints)
    decay, no_decay = [], []
    for p in backbone.parameters():
        (no_decay if p.dim() == 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay, "lr_mult": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_mult": 1.0},
        {"params": list(loss_fn.parameters()), "weight_decay": cfg.weight_decay, "lr_mult": loss_lr_mult},
    ]
    opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    warm = MarginWarmup(loss_fn, round(margin_warmup_epochs * per_epoch)) if hasattr(loss_fn, "margin") else None
    order_gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator().manual_seed(seed + 1_000_003)
    x_all = to_float(images)
    history, step = [], 0
    for epoch in range(1, cfg.epochs + 1):
        backbone.train()
        loss_fn.train()
        perm = torch.randperm(n, generator=order_gen).to(images.device)
        running = torch.zeros((), device=images.device)
        for b in range(per_epoch):
            idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            factor = _lr_factor(step, total, round(cfg.warmup_epochs * per_epoch))
            for g in opt.param_groups:
                g["lr"] = cfg.lr * factor * g["lr_mult"]
            loss = loss_fn(backbone(augment(x_all[idx], aug_gen)), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if warm is not None:
                warm.step()
            running += loss.detach()
            step += 1
            if on_step is not None:
                on_step(float(loss.detach()) if images.device.type == "cpu" else math.nan)
        mean_loss = float(running) / per_epoch
        if not math.isfinite(mean_loss):
            raise FloatingPointError(f"non-finite training loss in epoch {epoch}")
        history.append(mean_loss)
        if epoch in checkpoints and on_checkpoint is not None:
            on_checkpoint(epoch)
    return history


def evaluate(
    backbone: nn.Module, images: Tensor, pairs: tuple[Tensor, Tensor, Tensor], full: bool = True
) -> dict[str, dict]:
    """Metrics on held-out ``images`` (on the backbone's device) for the given pairs, with flip TTA (``"flip"``)
    and, when ``full``, without it (``"plain"``) plus the ROC points and the pair angles.

    Each entry: 10-fold accuracy mean/std over folds, TAR@FAR, AUC (and ROC points, positive/negative angles)."""
    a, b, same = pairs
    out = {}
    for mode, tta in (("plain", False), ("flip", True)) if full else (("flip", True),):
        emb = embed(backbone, to_float(images), flip_tta=tta).cpu()
        scores = pair_scores(emb, a, b)
        r = evaluate_pairs(scores, same)
        out[mode] = {
            "accuracy": r.accuracy_mean,
            "accuracy_fold_std": r.accuracy_std,
            "tar_at_far": {f"{k:g}": v for k, v in r.tar_at_far.items()},
            "auc": r.auc,
        }
        if full:
            angles = torch.rad2deg(torch.arccos(scores.clamp(-1, 1)))
            out[mode].update(
                roc_far=r.roc_far,
                roc_tar=r.roc_tar,
                angles_pos=angles[same].tolist(),
                angles_neg=angles[~same].tolist(),
            )
    return out


def heldout_pairs(labels: Tensor, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """All positive pairs of the test identities and as many seeded negatives (on the CPU)."""
    return make_pairs(labels.cpu(), seed=seed)

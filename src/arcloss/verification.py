"""Face-verification evaluation: pairs, cosine scores, LFW 10-fold accuracy, TAR@FAR, ROC/AUC, flip TTA.

Everything here works on torch tensors (CPU or GPU) and needs nothing beyond torch. A *score* is the
cosine similarity of two embeddings; a pair is predicted "same identity" when its score is **>=** a threshold.

Typical use::

    emb = embed(model, images, flip_tta=True)                   # (N, D), rows of unit norm
    a, b, same = make_pairs(labels, seed=0)                     # indices into emb, same: bool (P,)
    report = evaluate_pairs(pair_scores(emb, a, b), same)       # accuracy, TAR@FAR, AUC, ROC
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

__all__ = [
    "VerificationReport",
    "angles_degrees",
    "cosine_similarity",
    "embed",
    "evaluate_pairs",
    "kfold_accuracy",
    "make_pairs",
    "pair_scores",
    "roc_auc",
    "roc_curve",
    "tar_at_far",
]


def make_pairs(
    labels: Tensor | Sequence[int], num_positive: int | None = None, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """Same/different pairs from identity labels.

    Positives are all pairs ``i < j`` with ``labels[i] == labels[j]``, or ``num_positive`` of them drawn
    without replacement. Negatives are as many distinct pairs of different identities, drawn uniformly
    without replacement. Both draws use a ``torch.Generator`` seeded with ``seed``, so pairs are reproducible.

    Args:
        labels: ``(N,)`` integer identity labels.
        num_positive: number of positive pairs to keep (``None``: all).
        seed: seed of the draws.

    Returns:
        ``(idx_a, idx_b, same)``: ``(P,)`` int64 indices into ``labels`` with ``idx_a < idx_b``, and ``(P,)``
        bool, positives first then negatives (``P = 2 * positives``).
    """
    labels = torch.as_tensor(labels).reshape(-1).cpu()
    n = labels.numel()
    gen = torch.Generator().manual_seed(seed)
    ia, ib = torch.triu_indices(n, n, offset=1)
    pos = labels[ia] == labels[ib]
    pos_a, pos_b = ia[pos], ib[pos]
    if num_positive is not None and num_positive < pos_a.numel():
        keep = torch.randperm(pos_a.numel(), generator=gen)[:num_positive].sort().values
        pos_a, pos_b = pos_a[keep], pos_b[keep]
    num_neg_available = int((~pos).sum())
    num_pos = pos_a.numel()
    if num_pos == 0:
        raise ValueError("no positive pairs: every identity has a single image")
    if num_neg_available < num_pos:
        raise ValueError(f"only {num_neg_available} negative pairs for {num_pos} positives")
    neg_a, neg_b = _sample_negatives(labels, num_pos, gen)
    same = torch.cat([torch.ones(num_pos, dtype=torch.bool), torch.zeros(num_pos, dtype=torch.bool)])
    return torch.cat([pos_a, neg_a]), torch.cat([pos_b, neg_b]), same


def _sample_negatives(labels: Tensor, k: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """``k`` distinct pairs ``i < j`` of different labels, uniform without replacement (rejection sampling)."""
    n = labels.numel()
    chosen: dict[int, None] = {}  # insertion-ordered set of flat indices i * n + j
    while len(chosen) < k:
        need = k - len(chosen)
        a = torch.randint(n, (2 * need + 16,), generator=gen)
        b = torch.randint(n, (2 * need + 16,), generator=gen)
        lo, hi = torch.minimum(a, b), torch.maximum(a, b)
        ok = (lo != hi) & (labels[lo] != labels[hi])
        for flat in (lo[ok] * n + hi[ok]).tolist():
            if len(chosen) == k:
                break
            chosen.setdefault(flat, None)
    flat = torch.tensor(list(chosen), dtype=torch.int64)
    return flat // n, flat % n


def cosine_similarity(a: Tensor, b: Tensor, eps: float = 1e-12) -> Tensor:
    """Row-wise cosine similarity of ``(P, D)`` and ``(P, D)``, rows L2-normalised; ``(P,)`` float64 in [-1, 1]."""
    a = nn.functional.normalize(a.double(), dim=1, eps=eps)
    b = nn.functional.normalize(b.double(), dim=1, eps=eps)
    return (a * b).sum(dim=1).clamp(-1.0, 1.0)


def pair_scores(embeddings: Tensor, idx_a: Tensor, idx_b: Tensor) -> Tensor:
    """Cosine similarity ``(P,)`` of the pairs ``(embeddings[idx_a], embeddings[idx_b])``; embeddings ``(N, D)``."""
    idx_a, idx_b = idx_a.to(embeddings.device), idx_b.to(embeddings.device)
    return cosine_similarity(embeddings[idx_a], embeddings[idx_b])


def angles_degrees(scores: Tensor) -> Tensor:
    """Angle in degrees between the two embeddings of each pair, from their cosine ``scores``."""
    return torch.rad2deg(torch.arccos(scores.double().clamp(-1.0, 1.0)))


def roc_curve(scores: Tensor, same: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """ROC of the rule "same if score >= threshold", one point per distinct score.

    Equals ``sklearn.metrics.roc_curve(same, scores, drop_intermediate=False)``.

    Args:
        scores: ``(P,)`` similarity scores (higher = more similar).
        same: ``(P,)`` bool ground truth; both classes must occur.

    Returns:
        ``(far, tar, thresholds)``, each ``(T + 1,)`` float64 with ``T`` distinct scores: false accept rate
        (FPR), true accept rate (TPR) and thresholds in decreasing order; the first point is ``(0, 0, +inf)``.
    """
    scores, same = _check_scores(scores, same)
    order = torch.argsort(scores, descending=True, stable=True)
    s, y = scores[order], same[order].double()
    last_of_run = torch.ones_like(s, dtype=torch.bool)
    last_of_run[:-1] = s[1:] != s[:-1]
    tp, fp = torch.cumsum(y, 0)[last_of_run], torch.cumsum(1.0 - y, 0)[last_of_run]
    zero = torch.zeros(1, dtype=torch.float64)
    tar = torch.cat([zero, tp / tp[-1]])
    far = torch.cat([zero, fp / fp[-1]])
    thresholds = torch.cat([torch.tensor([math.inf], dtype=torch.float64), s[last_of_run]])
    return far, tar, thresholds


def roc_auc(scores: Tensor, same: Tensor) -> float:
    """Area under the ROC curve (trapezoidal, ties counted half), as ``sklearn.metrics.roc_auc_score``."""
    far, tar, _ = roc_curve(scores, same)
    return float(torch.trapezoid(tar, far))


def tar_at_far(scores: Tensor, same: Tensor, fars: Sequence[float] = (1e-1, 1e-2, 1e-3)) -> dict[float, float]:
    """True accept rate at each false accept rate target: the best TAR of any threshold with FAR <= target.

    With ``n`` negative pairs a target below ``1 / n`` can only be met at FAR = 0, so read TAR@1e-3 with at least
    1000 negatives. Returns ``{far_target: tar}``.
    """
    far, tar, _ = roc_curve(scores, same)
    n_neg = int((~same.bool()).sum())
    false_accepts = torch.round(far * n_neg)  # exact counts: a FAR equal to the target counts as meeting it
    return {f: float(tar[false_accepts <= math.floor(f * n_neg * (1 + 1e-12))].max()) for f in fars}


def _best_threshold(scores: Tensor, same: Tensor) -> float:
    """Threshold maximising accuracy of "same if score >= t" on these pairs: the midpoint between the lowest
    accepted score and the next lower distinct score (ties broken towards the higher threshold)."""
    far, tar, thr = roc_curve(scores, same)
    n_pos, n_neg = float(same.sum()), float((~same).sum())
    correct = tar * n_pos + (1.0 - far) * n_neg
    k = int(torch.argmax(correct))  # first maximum: the highest threshold among equally accurate ones
    if k == 0:
        return math.inf
    if k == thr.numel() - 1:
        return float(thr[k]) - 1e-6
    return 0.5 * float(thr[k] + thr[k + 1])


def kfold_accuracy(
    scores: Tensor, same: Tensor, n_folds: int = 10, seed: int = 0, folds: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """LFW-protocol accuracy: split the pairs into ``n_folds`` folds, pick the most accurate threshold on the
    other ``n_folds - 1`` folds and measure accuracy on the held-out fold.

    Pairs are shuffled with ``seed`` before the split; fold sizes are as ``sklearn.model_selection.KFold`` (the
    first ``P % n_folds`` folds one larger). Or pass ``folds``: ``(P,)`` fold index in ``[0, n_folds)`` of each
    pair (e.g. LFW's ``pairs.txt``: 10 consecutive blocks of 600), which replaces the shuffle.

    Returns:
        ``(accuracies, thresholds)``, both ``(n_folds,)`` float64: accuracy in [0, 1] and threshold of each fold.
        Report ``accuracies.mean()`` ± ``accuracies.std()``.
    """
    scores, same = _check_scores(scores, same)
    p = scores.numel()
    if not 2 <= n_folds <= p:
        raise ValueError(f"n_folds must be in [2, {p}], got {n_folds}")
    if folds is None:
        perm = torch.randperm(p, generator=torch.Generator().manual_seed(seed))
        sizes = [p // n_folds + (1 if i < p % n_folds else 0) for i in range(n_folds)]
        tests = list(torch.split(perm, sizes))
    else:
        folds = torch.as_tensor(folds).reshape(-1).cpu()
        if folds.numel() != p or folds.min() < 0 or folds.max() >= n_folds:
            raise ValueError(f"folds must be ({p},) with values in [0, {n_folds})")
        tests = [torch.nonzero(folds == k).reshape(-1) for k in range(n_folds)]
    accs, thresholds = [], []
    for test in tests:
        train_mask = torch.ones(p, dtype=torch.bool)
        train_mask[test] = False
        t = _best_threshold(scores[train_mask], same[train_mask])
        thresholds.append(t)
        accs.append(float(((scores[test] >= t) == same[test]).double().mean()))
    return torch.tensor(accs, dtype=torch.float64), torch.tensor(thresholds, dtype=torch.float64)


def _check_scores(scores: Tensor, same: Tensor) -> tuple[Tensor, Tensor]:
    scores = torch.as_tensor(scores).detach().reshape(-1).double().cpu()
    same = torch.as_tensor(same).reshape(-1).bool().cpu()
    if scores.numel() != same.numel():
        raise ValueError(f"scores ({scores.numel()}) and same ({same.numel()}) differ in length")
    if not torch.isfinite(scores).all():
        raise ValueError("scores must be finite")
    if bool(same.all()) or not bool(same.any()):
        raise ValueError("need both same and different pairs")
    return scores, same


@dataclass
class VerificationReport:
    """Metrics of one set of pairs. Accuracies and rates are fractions in [0, 1]."""

    accuracy_mean: float
    accuracy_std: float
    tar_at_far: dict[float, float]
    auc: float
    num_pairs: int
    fold_accuracies: list[float] = field(repr=False)
    roc_far: list[float] = field(repr=False)
    roc_tar: list[float] = field(repr=False)


def evaluate_pairs(
    scores: Tensor, same: Tensor, n_folds: int = 10, fars: Sequence[float] = (1e-1, 1e-2, 1e-3), seed: int = 0
) -> VerificationReport:
    """All metrics at once: ``n_folds``-fold accuracy (mean, population std), TAR@FAR, AUC and the ROC points."""
    accs, _ = kfold_accuracy(scores, same, n_folds=n_folds, seed=seed)
    far, tar, _ = roc_curve(scores, same)
    return VerificationReport(
        accuracy_mean=float(accs.mean()),
        accuracy_std=float(accs.std(unbiased=False)),
        tar_at_far=tar_at_far(scores, same, fars),
        auc=float(torch.trapezoid(tar, far)),
        num_pairs=int(torch.as_tensor(same).numel()),
        fold_accuracies=accs.tolist(),
        roc_far=far.tolist(),
        roc_tar=tar.tolist(),
    )


@torch.no_grad()
def embed(
    model: Callable[[Tensor], Tensor],
    images: Tensor,
    *,
    flip_tta: bool = False,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> Tensor:
    """Unit-norm embeddings ``(N, D)`` of ``images`` ``(N, C, H, W)`` under ``model`` (any callable image → embedding).

    With ``flip_tta`` the embedding is ``normalise(normalise(model(x)) + normalise(model(flip(x))))`` where
    ``flip`` mirrors the width axis. An ``nn.Module`` is put in eval mode for the call and restored after.
    Images are moved to ``device`` (default: the model's parameters' device, else the images') batch by batch.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
        if device is None:
            param = next(model.parameters(), None)
            device = param.device if param is not None else None
    device = device if device is not None else images.device
    out = []
    try:
        for batch in torch.split(images, batch_size):
            x = batch.to(device)
            e = nn.functional.normalize(model(x).float(), dim=1)
            if flip_tta:
                e = nn.functional.normalize(e + nn.functional.normalize(model(x.flip(-1)).float(), dim=1), dim=1)
            out.append(e)
    finally:
        if was_training:
            model.train()
    return torch.cat(out)

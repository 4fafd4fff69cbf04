"""arcloss.verification against scikit-learn and brute-force definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve
from sklearn.model_selection import KFold

from arcloss import verification as V


def _scores(seed: int, n: int = 300, ties: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    same = torch.rand(n, generator=g) < 0.5
    same[0], same[1] = True, False
    scores = torch.randn(n, generator=g, dtype=torch.float64) * 0.3 + same.double() * 0.4
    if ties:
        scores = (scores * 5).round() / 5
    return scores, same


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_curve_and_auc_match_sklearn(seed: int, ties: bool) -> None:
    scores, same = _scores(seed, ties=ties)
    far, tar, thr = V.roc_curve(scores, same)
    sk_far, sk_tar, sk_thr = sk_roc_curve(same.numpy(), scores.numpy(), drop_intermediate=False)
    np.testing.assert_allclose(far.numpy(), sk_far)
    np.testing.assert_allclose(tar.numpy(), sk_tar)
    np.testing.assert_allclose(thr.numpy()[1:], sk_thr[1:])
    assert thr[0] == math.inf
    assert V.roc_auc(scores, same) == pytest.approx(roc_auc_score(same.numpy(), scores.numpy()), abs=1e-12)


def test_tar_at_far_brute_force() -> None:
    scores, same = _scores(3, n=2000)
    got = V.tar_at_far(scores, same, fars=(0.1, 0.01, 0.001))
    s, y = scores.numpy(), same.numpy()
    for target, tar in got.items():
        best = 0.0
        for t in np.unique(s):
            accept = s >= t
            if accept[~y].mean() <= target:
                best = max(best, accept[y].mean())
        assert tar == pytest.approx(best)
    assert got[0.1] >= got[0.01] >= got[0.001]


def test_perfect_and_inverted_scores() -> None:
    same = torch.tensor([True, True, False, False])
    assert V.roc_auc(torch.tensor([0.9, 0.8, 0.1, 0.2]), same) == 1.0
    assert V.roc_auc(torch.tensor([0.1, 0.2, 0.9, 0.8]), same) == 0.0
    assert V.tar_at_far(torch.tensor([0.9, 0.8, 0.1, 0.2]), same, fars=(0.01,))[0.01] == 1.0


def _brute_kfold(scores: np.ndarray, same: np.ndarray, n_folds: int, perm: np.ndarray) -> list[float]:
    """Reference: KFold over the permuted pairs; best accuracy threshold among midpoints of sorted distinct scores."""
    accs = []
    for train, test in KFold(n_splits=n_folds).split(perm):
        tr, te = perm[train], perm[test]
        u = np.unique(scores[tr])[::-1]
        candidates = np.concatenate([[np.inf], (u[:-1] + u[1:]) / 2, [u[-1] - 1e-6]])
        train_acc = [((scores[tr] >= t) == same[tr]).mean() for t in candidates]
        t = candidates[int(np.argmax(train_acc))]
        accs.append(((scores[te] >= t) == same[te]).mean())
    return accs


@pytest.mark.parametrize("ties", [False, True])
def test_kfold_accuracy_matches_brute_force(ties: bool) -> None:
    scores, same = _scores(4, n=403, ties=ties)
    accs, thresholds = V.kfold_accuracy(scores, same, n_folds=10, seed=7)
    perm = torch.randperm(403, generator=torch.Generator().manual_seed(7)).numpy()
    ref = _brute_kfold(scores.numpy(), same.numpy(), 10, perm)
    np.testing.assert_allclose(accs.numpy(), ref)
    assert thresholds.shape == (10,)
    assert 0.6 < float(accs.mean()) < 1.0  # separable-ish synthetic scores: well above chance


def test_kfold_accuracy_explicit_folds() -> None:
    scores, same = _scores(6, n=200)
    folds = torch.arange(200) // 20  # 10 consecutive blocks, as LFW's pairs.txt
    accs, _ = V.kfold_accuracy(scores, same, folds=folds)
    ref = _brute_kfold(scores.numpy(), same.numpy(), 10, np.arange(200))
    np.testing.assert_allclose(accs.numpy(), ref)
    with pytest.raises(ValueError, match="folds"):
        V.kfold_accuracy(scores, same, folds=torch.zeros(10, dtype=torch.long))


def test_kfold_accuracy_separable_is_perfect() -> None:
    same = torch.arange(100) % 2 == 0
    scores = 2.0 * same.double() + 0.01 * torch.arange(100)  # gap of 1 between the classes
    accs, _ = V.kfold_accuracy(scores, same)
    assert torch.all(accs == 1.0)


def test_make_pairs_all_positives_and_balanced_negatives() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])
    a, b, same = V.make_pairs(labels, seed=1)
    expected_pos = {(i, j) for i in range(10) for j in range(i + 1, 10) if labels[i] == labels[j]}
    got_pos = {(int(i), int(j)) for i, j, s in zip(a, b, same, strict=True) if s}
    assert got_pos == expected_pos
    neg = [(int(i), int(j)) for i, j, s in zip(a, b, same, strict=True) if not s]
    assert len(neg) == len(expected_pos) == len(set(neg))
    assert all(i < j and labels[i] != labels[j] for i, j in neg)
    a2, b2, _ = V.make_pairs(labels, seed=1)
    assert torch.equal(a, a2) and torch.equal(b, b2)
    a3, b3, _ = V.make_pairs(labels, seed=2)
    assert not (torch.equal(a, a3) and torch.equal(b, b3))


def test_make_pairs_sampled_positives() -> None:
    labels = torch.arange(50).repeat_interleave(6)  # 50 identities x 15 positive pairs
    a, b, same = V.make_pairs(labels, num_positive=100, seed=0)
    assert int(same.sum()) == 100 and int((~same).sum()) == 100
    assert torch.all((labels[a] == labels[b]) == same)
    assert len({(int(i), int(j)) for i, j in zip(a[same], b[same], strict=True)}) == 100


def test_make_pairs_rejects_singletons() -> None:
    with pytest.raises(ValueError, match="no positive pairs"):
        V.make_pairs(torch.arange(5))


def test_cosine_similarity_and_angles() -> None:
    a = torch.tensor([[1.0, 0.0], [3.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 2.0], [-1.0, 0.0], [2.0, 2.0]])
    np.testing.assert_allclose(V.cosine_similarity(a, b).numpy(), [0.0, -1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(V.angles_degrees(V.cosine_similarity(a, b)).numpy(), [90.0, 180.0, 0.0], atol=1e-3)
    emb = torch.randn(6, 4)
    got = V.pair_scores(emb, torch.tensor([0, 2]), torch.tensor([1, 5]))
    ref = torch.nn.functional.cosine_similarity(emb[[0, 2]], emb[[1, 5]])
    torch.testing.assert_close(got, ref.double())


class _Asymmetric(torch.nn.Module):
    """Embedding = the image's left-half and right-half sums: mirroring swaps the two coordinates."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.shape[-1] // 2
        return torch.stack([x[..., :w].sum((1, 2, 3)), x[..., w:].sum((1, 2, 3))], dim=1) + self.dummy


def test_embed_flip_tta() -> None:
    x = torch.zeros(3, 1, 2, 4)
    x[..., :2] = 1.0  # all mass on the left: embedding (4, 0) -> (1, 0); mirrored (0, 4) -> (0, 1)
    model = _Asymmetric().train()
    plain = V.embed(model, x, batch_size=2)
    torch.testing.assert_close(plain, torch.tensor([[1.0, 0.0]] * 3))
    tta = V.embed(model, x, flip_tta=True)
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(tta, torch.tensor([[s, s]] * 3))
    assert model.training  # mode restored


def test_evaluate_pairs_report() -> None:
    scores, same = _scores(5, n=500)
    r = V.evaluate_pairs(scores, same)
    assert r.num_pairs == 500 and len(r.fold_accuracies) == 10
    assert r.accuracy_mean == pytest.approx(np.mean(r.fold_accuracies))
    assert r.auc == pytest.approx(roc_auc_score(same.numpy(), scores.numpy()))
    assert set(r.tar_at_far) == {0.1, 0.01, 0.001}


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="both"):
        V.roc_curve(torch.tensor([0.1, 0.2]), torch.tensor([True, True]))
    with pytest.raises(ValueError, match="length"):
        V.roc_curve(torch.tensor([0.1, 0.2]), torch.tensor([True]))
    with pytest.raises(ValueError, match="finite"):
        V.roc_curve(torch.tensor([0.1, float("nan")]), torch.tensor([True, False]))


@pytest.mark.parametrize(("target", "expected"), [(0.25, 1.0), (0.2, 0.5), (0.3, 1.0), (0.5, 1.0)])
def test_tar_at_far_counts_a_far_equal_to_the_target(target, expected) -> None:
    """4 negatives: accepting the top negative gives FAR = 0.25 exactly, and with it the second positive."""
    scores = torch.tensor([0.9, 0.8, 0.5, 0.3, 0.2, 0.1])
    same = torch.tensor([True, False, True, False, False, False])
    assert V.tar_at_far(scores, same, fars=(target,))[target] == expected
    ten = torch.tensor([1.0] + [0.9 - 0.01 * i for i in range(10)] + [0.5])
    same_ten = torch.tensor([True] + [False] * 10 + [True])
    assert V.tar_at_far(ten, same_ten, fars=(0.3,))[0.3] == 0.5  # 3 / 10 is not exactly 0.3 in binary

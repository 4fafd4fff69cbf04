"""Bad input: a clear TypeError/ValueError naming the value, never a NaN and never a corrupted parameter."""

from __future__ import annotations

import math

import pytest
import torch

from arcloss import ArcFaceLoss, CosFaceLoss
from arcloss.functional import arcface_loss


@pytest.fixture
def loss_fn():
    return ArcFaceLoss(10, 4)


GOOD_X = torch.randn(3, 4)
GOOD_Y = torch.tensor([0, 5, 9])


@pytest.mark.parametrize(
    ("embeddings", "labels", "error", "message"),
    [
        (GOOD_X, torch.tensor([0.0, 1.0, 2.0]), TypeError, "integer tensor.*torch.float32"),
        (GOOD_X, torch.tensor([True, False, True]), TypeError, "integer tensor.*torch.bool"),
        (GOOD_X, [0, 1, 2], TypeError, "labels must be a torch.Tensor.*list"),
        (GOOD_X, torch.tensor([[0, 1, 2]]), ValueError, r"1-D.*\(1, 3\)"),
        (GOOD_X, torch.tensor([0, 1, 10]), ValueError, "got label 10"),
        (GOOD_X, torch.tensor([0, -1, 2]), ValueError, "got label -1"),
        (GOOD_X, torch.tensor([0, 1]), ValueError, "3 rows, labels have 2"),
        (torch.randn(3, 5), GOOD_Y, ValueError, "width 5.*embedding_size=4"),
        (torch.randn(3), GOOD_Y, ValueError, r"2-D.*\(3,\)"),
        (torch.randint(0, 5, (3, 4)), GOOD_Y, TypeError, "floating-point.*torch.int64"),
        (GOOD_X.numpy(), GOOD_Y, TypeError, "torch.Tensor.*ndarray"),
    ],
)
def test_bad_inputs_raise_naming_the_value(loss_fn, embeddings, labels, error, message):
    with pytest.raises(error, match=message):
        loss_fn(embeddings, labels)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_embeddings_rejected_and_weights_untouched(loss_fn, bad):
    before = loss_fn.W.detach().clone()
    optimizer = torch.optim.SGD(loss_fn.parameters(), lr=0.1)
    x = torch.randn(4, 4, requires_grad=True)
    poisoned = x.clone()
    poisoned[2, 1] = bad
    with pytest.raises(ValueError, match=r"NaN or Inf \(rows \[2\]\)"):
        loss_fn(poisoned, torch.tensor([0, 1, 2, 3]))
    assert loss_fn.W.grad is None
    optimizer.step()
    assert torch.equal(loss_fn.W, before)


def test_validation_can_be_switched_off_for_speed():
    loss_fn = ArcFaceLoss(10, 4, validate=False)
    x = torch.randn(2, 4)
    x[0, 0] = math.nan
    assert torch.isnan(loss_fn(x, torch.tensor([0, 1])))  # no check, no sync: the NaN propagates
    with pytest.raises(ValueError, match="width"):  # shape checks are free and always on
        loss_fn(torch.randn(2, 3), torch.tensor([0, 1]))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(num_classes=0), ValueError, "num_classes must be >= 1, got 0"),
        (dict(num_classes=2.5), TypeError, "num_classes must be an int, got 2.5"),
        (dict(embedding_size=-3), ValueError, "embedding_size must be >= 1, got -3"),
        (dict(margin=180.0), ValueError, r"margin must be in \[0, 180\) degrees, got 180.0"),
        (dict(margin=-1), ValueError, "got -1"),
        (dict(margin=math.nan), ValueError, "margin must be finite, got nan"),
        (dict(margin="28.6"), TypeError, "margin must be a real number, got '28.6'"),
        (dict(scale=0), ValueError, "scale must be > 0, got 0"),
        (dict(scale=-64), ValueError, "scale must be > 0, got -64"),
        (dict(reduction="avg"), ValueError, "reduction must be one of.*'avg'"),
        (dict(backend="cuda"), ValueError, "backend must be one of.*'cuda'"),
        (dict(reducer=object()), ValueError, "reducer: reducers are not supported"),
        (dict(weight_regularizer=object()), ValueError, "weight_regularizer"),
        (dict(embedding_regularizer=object()), ValueError, "embedding_regularizer"),
        (dict(collect_stats=True), ValueError, "collect_stats"),
        (dict(tpyo=1), TypeError, "unexpected keyword argument.*tpyo"),
        (dict(rows_per_chunk=-1), ValueError, "rows_per_chunk must be a positive int or None, got -1"),
        (dict(rows_per_chunk=True), ValueError, "rows_per_chunk must be a positive int or None, got True"),
        (dict(easy_margin=1), TypeError, "easy_margin must be a bool, got 1"),
    ],
)
def test_bad_construction(kwargs, error, message):
    args = dict(num_classes=10, embedding_size=4) | kwargs
    with pytest.raises(error, match=message):
        ArcFaceLoss(**args)


def test_non_cosine_distance_rejected_cosine_accepted():
    distances = pytest.importorskip("pytorch_metric_learning.distances")
    with pytest.raises(ValueError, match="distance=.*LpDistance.*cosine similarity only"):
        ArcFaceLoss(10, 4, distance=distances.LpDistance())
    ArcFaceLoss(10, 4, distance=distances.CosineSimilarity())


@pytest.mark.parametrize("name", ["indices_tuple", "ref_emb", "ref_labels"])
def test_miner_and_reference_arguments_rejected(loss_fn, name):
    with pytest.raises(ValueError, match=f"{name} is not supported"):
        loss_fn(GOOD_X, GOOD_Y, **{name: GOOD_X})


def test_cosface_margin_checked():
    with pytest.raises(ValueError, match="margin must be >= 0, got -0.1"):
        CosFaceLoss(10, 4, margin=-0.1)


def test_functional_rejects_bad_rows_per_chunk():
    with pytest.raises(ValueError, match="rows_per_chunk must be a positive int or None, got 0"):
        arcface_loss(GOOD_X, torch.randn(4, 10), GOOD_Y, rows_per_chunk=0)


def test_triton_backend_on_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    loss_fn = ArcFaceLoss(10, 4, backend="triton")
    with pytest.raises((ValueError, RuntimeError), match="triton"):
        loss_fn(GOOD_X, GOOD_Y)


def test_assigning_an_invalid_margin_raises_and_keeps_the_old_one():
    loss_fn = ArcFaceLoss(10, 4)
    with pytest.raises(ValueError, match=r"margin must be in \[0, 180\) degrees, got 200"):
        loss_fn.margin = 200
    assert loss_fn.margin == 28.6 and loss_fn.margin_fn.m2 == 28.6

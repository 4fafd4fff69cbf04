"""The margin family on the one fused path: CosFace, combined margins, sub-centre ArcFace, easy margin."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import arcloss
import arcloss.functional as AF
from arcloss import AngularMargin, ArcFaceLoss, CombinedMarginLoss, CosFaceLoss, SubCenterArcFaceLoss

from . import reference as ref

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")


def combined_reference(x, w, labels, m1, m2_deg, m3, scale, easy_margin=False, sub_centers=1):
    """float64, from the equation: phi = cos(m1 theta + m2) - m3, with the documented monotone fallback."""
    cos = ref.cosines(x, w)
    if sub_centers > 1:
        cos = cos.view(len(x), -1, sub_centers).amax(dim=2)
    c = cos[torch.arange(len(labels)), labels].clamp(-1, 1)
    theta, m2 = torch.acos(c), math.radians(m2_deg)
    phi = torch.cos(m1 * theta + m2) - m3
    threshold = (math.pi - m2) / m1
    if threshold < math.pi:
        shift = m2 * math.sin(m2) if m1 == 1 else 1 + math.cos(threshold)
        phi = torch.where(theta > threshold, c - shift - m3, phi)
    if easy_margin:
        phi = torch.where(c > 0, phi, c)
    return ref.margin_softmax_loss(cos, labels, phi, scale, "none")


@st.composite
def problems(draw):
    n, d, c = draw(st.integers(1, 6)), draw(st.integers(2, 5)), draw(st.integers(1, 7))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    k = draw(st.sampled_from([1, 2, 3]))
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(d, c * k, generator=g, dtype=torch.float64)
    return x, w, torch.randint(0, c, (n,), generator=g), k


def _check(got_fn, expected_fn, x, w):
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    xo, wo = x.clone().requires_grad_(), w.clone().requires_grad_()
    expected, got = expected_fn(xr, wr), got_fn(xo, wo)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    expected.sum().backward()
    got.sum().backward()
    assert torch.isfinite(xo.grad).all() and torch.isfinite(wo.grad).all()
    torch.testing.assert_close(xo.grad, xr.grad, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(wo.grad, wr.grad, rtol=1e-6, atol=1e-8)


@given(problems(), st.floats(1.0, 4.0), st.floats(0.0, 60.0), st.floats(0.0, 0.5), st.booleans())
def test_combined_margin_equals_its_equation(problem, m1, m2, m3, easy):
    x, w, labels, k = problem
    _check(
        lambda a, b: AF.combined_margin_loss(
            a, b, labels, m1, m2, m3, scale=10.0, easy_margin=easy, sub_centers=k, reduction="none"
        ),
        lambda a, b: combined_reference(a, b, labels, m1, m2, m3, 10.0, easy, k),
        x,
        w,
    )


@given(problems(), st.floats(0.0, 0.6))
def test_cosface_equals_its_equation(problem, margin):
    x, w, labels, _ = problem
    _check(
        lambda a, b: AF.cosface_loss(a, b, labels, margin, scale=20.0, reduction="none"),
        lambda a, b: ref.cosface_loss(a, b, labels, margin, 20.0, "none"),
        x,
        w,
    )


@given(problems(), st.floats(0.0, 80.0))
def test_combined_reduces_to_arcface_and_cosface(problem, margin):
    x, w, labels, _ = problem
    arc = ArcFaceLoss(w.shape[1], x.shape[1], margin=margin, scale=30, dtype=torch.float64, reduction="none")
    comb = CombinedMarginLoss(w.shape[1], x.shape[1], 1.0, margin, 0.0, 30, dtype=torch.float64, reduction="none")
    cos = CosFaceLoss(w.shape[1], x.shape[1], margin / 100, 30, dtype=torch.float64, reduction="none")
    comb_cos = CombinedMarginLoss(w.shape[1], x.shape[1], 1.0, 0.0, margin / 100, 30, dtype=torch.float64)
    comb_cos.reduction = "none"
    for module in (arc, comb, cos, comb_cos):
        module.load_state_dict({"W": w})
    assert torch.equal(arc(x, labels), comb(x, labels))
    assert torch.equal(cos(x, labels), comb_cos(x, labels))


def test_easy_margin_applies_only_where_cosine_positive():
    w = torch.eye(3, dtype=torch.float64)
    x = torch.tensor([[1.0, 0.2, 0.0], [-1.0, 0.3, 0.0]], dtype=torch.float64)  # cos > 0, cos < 0 with class 0
    labels = torch.tensor([0, 0])
    easy = AF.arcface_loss(x, w, labels, 28.6, 10.0, easy_margin=True, reduction="none")
    hard = AF.arcface_loss(x, w, labels, 28.6, 10.0, reduction="none")
    none = AF.arcface_loss(x, w, labels, 0.0, 10.0, reduction="none")
    assert easy[0] == hard[0] and easy[0] > none[0]
    torch.testing.assert_close(easy[1], none[1])
    assert "easy_margin=True" in repr(ArcFaceLoss(3, 3, easy_margin=True))


def test_margin_spec_is_monotone_in_theta_for_every_member():
    theta = torch.linspace(0, math.pi, 20001, dtype=torch.float64)
    members = [
        AngularMargin(m2=math.degrees(0.5)),
        AngularMargin(m3=0.35),
        AngularMargin(1.35, math.degrees(0.25), 0.1),
        AngularMargin(m1=4.0),
    ]
    for margin in members:
        phi, slope = margin(torch.cos(theta))
        assert bool((phi[1:] <= phi[:-1] + 1e-12).all()), margin
        assert bool(torch.isfinite(slope).all()), margin


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cosface_matches_pml(dtype):
    theirs = pml_losses.CosFaceLoss(num_classes=15, embedding_size=8).to(dtype)
    ours = CosFaceLoss(15, 8, dtype=dtype)
    ours.load_state_dict(theirs.state_dict())
    _match(theirs, ours, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_subcenter_matches_pml_and_checkpoints_load(dtype):
    theirs = pml_losses.SubCenterArcFaceLoss(num_classes=15, embedding_size=8, sub_centers=3).to(dtype)
    ours = SubCenterArcFaceLoss(15, 8, sub_centers=3, dtype=dtype)
    ours.load_state_dict(theirs.state_dict())
    assert ours.W.shape == (8, 45)
    _match(theirs, ours, dtype)
    x = torch.randn(6, 8, dtype=dtype)
    torch.testing.assert_close(ours.get_logits(x), theirs.get_logits(x))


def _match(theirs, ours, dtype):
    torch.manual_seed(3)
    x, labels = torch.randn(24, 8, dtype=dtype), torch.randint(0, 15, (24,))
    results = []
    for module in (theirs, ours):
        inputs = x.clone().requires_grad_()
        loss = module(inputs, labels)
        loss.backward()
        results.append((loss.detach(), inputs.grad, module.W.grad))
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-11)
    for got, expected in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got, expected, **tol)


def test_subcenter_outliers_match_pml():
    torch.manual_seed(4)
    theirs = pml_losses.SubCenterArcFaceLoss(num_classes=6, embedding_size=8, sub_centers=3)
    ours = SubCenterArcFaceLoss(6, 8, sub_centers=3)
    ours.load_state_dict(theirs.state_dict())
    x, labels = torch.randn(40, 8), torch.randint(0, 6, (40,))
    their_outliers, their_centres = theirs.get_outliers(x, labels, threshold=65)
    outliers, centres = ours.get_outliers(x, labels, threshold=65)
    assert 0 < len(outliers) < 40
    assert sorted(their_outliers.tolist()) == outliers.tolist()
    present = labels.unique()
    torch.testing.assert_close(centres[:, present], their_centres[:, present])
    only = ours.get_outliers(x, labels, threshold=65, return_dominant_centers=False)
    assert torch.equal(only, outliers)  # theirs returns a tuple either way
    # 180 degrees (pytorch-metric-learning's own test uses it): nothing is an outlier.
    their_none, _ = theirs.get_outliers(x, labels, threshold=180)
    ours_none, _ = ours.get_outliers(x, labels, threshold=180)
    assert len(their_none) == ours_none.numel() == 0
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 180\] degrees, got 181"):
        ours.get_outliers(x, labels, threshold=181)


def test_subcenter_repr_and_export():
    assert "sub_centers=3" in repr(SubCenterArcFaceLoss(6, 8, sub_centers=3))
    assert "SubCenterArcFaceLoss" in arcloss.losses.__all__ and "SubCenterArcFaceLoss" in arcloss.__all__


def test_subcenter_gradient_reaches_only_the_best_subcentre():
    loss_fn = SubCenterArcFaceLoss(4, 6, sub_centers=3, dtype=torch.float64)
    x = torch.randn(1, 6, dtype=torch.float64)
    loss_fn(x, torch.tensor([2])).backward()
    cos = torch.nn.functional.normalize(x) @ torch.nn.functional.normalize(loss_fn.W.detach(), dim=0)
    best = cos.view(4, 3).argmax(dim=1)
    touched = loss_fn.W.grad.abs().sum(0).view(4, 3) > 0
    assert torch.equal(touched, torch.nn.functional.one_hot(best, 3).bool())


def test_subcenter_weight_columns_must_divide():
    with pytest.raises(ValueError, match="not a multiple of sub_centers=3"):
        AF.arcface_loss(torch.randn(2, 4), torch.randn(4, 10), torch.tensor([0, 1]), sub_centers=3)
    with pytest.raises(ValueError, match="sub_centers must be >= 1, got 0"):
        SubCenterArcFaceLoss(4, 6, sub_centers=0)

"""Property tests of ArcFaceLoss against the independent float64 reference (tests/reference.py)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import arcloss.functional as AF
from arcloss import ArcFaceLoss

from . import reference as ref


@st.composite
def problems(draw, max_margin: float = 179.0):
    n = draw(st.integers(1, 7))
    d = draw(st.integers(2, 6))
    c = draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * draw(st.sampled_from([1e-3, 1.0, 30.0]))
    w = torch.randn(d, c, generator=g, dtype=torch.float64)
    labels = torch.randint(0, c, (n,), generator=g)
    margin = draw(st.floats(0.0, max_margin))
    scale = draw(st.floats(0.5, 80.0))
    return x, w, labels, margin, scale


def _loss(x, w, labels, margin, scale, **kw):
    return AF.arcface_loss(x, w, labels, margin=margin, scale=scale, **kw)


def _away_from_threshold(x, w, labels, margin):
    """The fallback makes phi discontinuous at theta = pi - m; keep random points off that edge."""
    cos = ref.cosines(x, w)[torch.arange(len(labels)), labels]
    theta = torch.acos(cos.clamp(-1, 1))
    return bool(((theta - (math.pi - math.radians(margin))).abs() > 1e-6).all())


@given(problems(), st.sampled_from(["mean", "sum", "none"]))
def test_equals_reference_float64(problem, reduction):
    x, w, labels, margin, scale = problem
    assume(_away_from_threshold(x, w, labels, margin))
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    xo, wo = x.clone().requires_grad_(), w.clone().requires_grad_()
    expected = ref.arcface_loss(xr, wr, labels, margin, scale, reduction)
    got = _loss(xo, wo, labels, margin, scale, reduction=reduction)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    upstream = torch.rand_like(expected) + 0.5
    (expected * upstream).sum().backward()
    (got * upstream).sum().backward()
    torch.testing.assert_close(xo.grad, xr.grad, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(wo.grad, wr.grad, rtol=1e-7, atol=1e-9)


@given(problems(), st.sampled_from([1, 2, 3]))
def test_chunking_changes_nothing(problem, rows_per_chunk):
    x, w, labels, margin, scale = problem
    one = _loss(x, w, labels, margin, scale, reduction="none")
    chunked = _loss(x, w, labels, margin, scale, reduction="none", rows_per_chunk=rows_per_chunk)
    torch.testing.assert_close(chunked, one, rtol=1e-12, atol=1e-12)


@given(problems())
def test_loss_is_nonnegative(problem):
    x, w, labels, margin, scale = problem
    assert bool((_loss(x, w, labels, margin, scale, reduction="none") >= 0).all())


@given(problems(), st.integers(0, 2**31 - 1))
def test_invariant_to_rescaling_embeddings_and_centres(problem, seed):
    x, w, labels, margin, scale = problem
    g = torch.Generator().manual_seed(seed)
    row_scale = torch.rand(x.shape[0], 1, generator=g, dtype=torch.float64) * 100 + 1e-2
    col_scale = torch.rand(1, w.shape[1], generator=g, dtype=torch.float64) * 100 + 1e-2
    base = _loss(x, w, labels, margin, scale, reduction="none")
    scaled = _loss(x * row_scale, w * col_scale, labels, margin, scale, reduction="none")
    torch.testing.assert_close(scaled, base, rtol=1e-9, atol=1e-9)


@given(problems())
def test_zero_margin_is_cross_entropy_on_scaled_cosines(problem):
    x, w, labels, _, scale = problem
    expected = torch.nn.functional.cross_entropy(scale * ref.cosines(x, w), labels, reduction="none")
    torch.testing.assert_close(_loss(x, w, labels, 0.0, scale, reduction="none"), expected, rtol=1e-10, atol=1e-10)


@given(problems(), st.integers(0, 2**31 - 1))
def test_permutations_permute_nothing(problem, seed):
    x, w, labels, margin, scale = problem
    g = torch.Generator().manual_seed(seed)
    rows = torch.randperm(x.shape[0], generator=g)
    cols = torch.randperm(w.shape[1], generator=g)
    inverse_cols = torch.argsort(cols)
    base = _loss(x, w, labels, margin, scale, reduction="none")
    permuted_batch = _loss(x[rows], w, labels[rows], margin, scale, reduction="none")
    permuted_classes = _loss(x, w[:, cols], inverse_cols[labels], margin, scale, reduction="none")
    torch.testing.assert_close(permuted_batch, base[rows], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(permuted_classes, base, rtol=1e-10, atol=1e-10)


@given(problems(max_margin=90.0), st.floats(0.0, 90.0))
def test_loss_does_not_decrease_as_margin_grows(problem, other_margin):
    # cos(theta + m) falls with m until theta + m = pi, and the fallback cos(theta) - m sin(m) lies below -1
    # for m up to ~133 degrees, so the loss is monotone in m over [0, 90] for every theta.
    x, w, labels, margin, scale = problem
    small, large = sorted((margin, other_margin))
    loss_small = _loss(x, w, labels, small, scale, reduction="none")
    loss_large = _loss(x, w, labels, large, scale, reduction="none")
    assert bool((loss_large >= loss_small - 1e-10).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_gradients_finite_at_cos_plus_minus_one(dtype, sign):
    torch.manual_seed(1)
    loss_fn = ArcFaceLoss(5, 8, dtype=dtype)
    labels = torch.tensor([0, 3, 3, 4])
    # Embeddings exactly parallel (cos = 1) or antiparallel (cos = -1) to their class centre.
    x = sign * loss_fn.W.detach()[:, labels].t() * torch.tensor([[1.0], [2.0], [0.5], [3.0]], dtype=dtype)
    x.requires_grad_()
    loss = loss_fn(x, labels)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(x.grad).all()
    assert torch.isfinite(loss_fn.W.grad).all()
    # And the gradient is the limit of the gradient nearby (continuity), not an arbitrary finite value.
    nearby = (x.detach() + 1e-4 * torch.randn_like(x)).requires_grad_()
    loss_fn.W.grad = None
    loss_fn(nearby, labels).backward()
    torch.testing.assert_close(x.grad, nearby.grad, rtol=0.05, atol=0.05)


def test_gradcheck_float64():
    torch.manual_seed(2)
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 5, 5, 2])
    for reduction in ("mean", "sum", "none"):
        assert torch.autograd.gradcheck(
            lambda a, b, r=reduction: _loss(a, b, labels, 28.6, 8.0, reduction=r), (x, w), eps=1e-6, atol=1e-6
        )


def test_float32_error_within_a_small_multiple_of_plain_torch():
    """Our float32 error against the float64 truth is no worse than 4x that of the same equation written
    in plain float32 torch (acos and all)."""
    torch.manual_seed(3)
    x = torch.randn(64, 32, dtype=torch.float64)
    w = torch.randn(32, 500, dtype=torch.float64)
    labels = torch.randint(0, 500, (64,))

    def grads(fn, dtype):
        a, b = x.to(dtype).clone().requires_grad_(), w.to(dtype).clone().requires_grad_()
        loss = fn(a, b)
        loss.backward()
        return loss.double(), a.grad.double(), b.grad.double()

    def plain(a, b):
        a_n = a / a.norm(dim=1, keepdim=True)
        b_n = b / b.norm(dim=0, keepdim=True)
        cos = a_n @ b_n
        theta = torch.acos(cos.gather(1, labels[:, None]).clamp(-1, 1))[:, 0]
        m = math.radians(28.6)
        phi = torch.where(theta <= math.pi - m, torch.cos(theta + m), torch.cos(theta) - m * math.sin(m))
        logits = (64 * cos).scatter(1, labels[:, None], 64 * phi[:, None])
        return torch.nn.functional.cross_entropy(logits, labels)

    ours = lambda a, b: _loss(a, b, labels, 28.6, 64.0)  # noqa: E731
    truth = grads(ours, torch.float64)
    for got, base, t in zip(grads(ours, torch.float32), grads(plain, torch.float32), truth, strict=True):
        err, base_err = (got - t).abs().max(), (base - t).abs().max()
        assert err <= 4 * base_err + 1e-7, (err, base_err)


@pytest.mark.parametrize("rows", [1, 7, 8, 13, 64])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_column_dots_is_the_column_sum_of_products(rows, dtype):
    from arcloss.ops.chunked import column_dots

    a, b = torch.randn(rows, 37, dtype=torch.float64), torch.randn(rows, 37, dtype=torch.float64)
    a, b = a.to(dtype), b.to(dtype)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    expected = (a.double() * b.double()).sum(0)
    torch.testing.assert_close(column_dots(a, b, acc).double(), expected, rtol=1e-5, atol=1e-5)

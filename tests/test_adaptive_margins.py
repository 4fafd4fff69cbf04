"""AdaFace and MagFace against independent float64 references of their official equations (tests/reference_adaptive.py):
loss and gradients, the gradient through the feature norm (MagFace) and its absence (AdaFace), gradcheck, AdaFace's
running statistics, and every engine path: chunks, reductions, torch.compile, Triton (interpreter), autocast and
2 gloo ranks."""

from __future__ import annotations

import copy
import datetime
import math
import os
import pathlib
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import assume, given
from hypothesis import strategies as st

import arcloss.functional as AF
from arcloss import AdaFaceLoss, AdaFaceMargin, MagFaceLoss, MagFaceMargin, MarginLoss
from arcloss.distributed import Sharding, gather_full_weight, to_single_process

from . import reference_adaptive as ref

F64 = {"rtol": 1e-9, "atol": 1e-10}
MAG_DEFAULTS = {"s": 64.0, "l_a": 10.0, "u_a": 110.0, "l_m": 0.45, "u_m": 0.8, "lambda_g": 35.0}


def _problem(n: int, d: int, c: int, seed: int, norm_lo: float, norm_hi: float, dtype=torch.float64):
    """Embeddings with row norms spread over ``[norm_lo, norm_hi]``, centres of random norms, labels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    norms = norm_lo + (norm_hi - norm_lo) * torch.rand(n, 1, generator=g, dtype=dtype)
    x = x / x.norm(dim=1, keepdim=True) * norms
    w = torch.randn(d, c, generator=g, dtype=dtype) * (0.5 + torch.rand(1, c, generator=g, dtype=dtype))
    return x, w, torch.randint(0, c, (n,), generator=g)


def _max_non_target_cos(x: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> float:
    cos = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(w, dim=0)
    cos[torch.arange(len(y)), y] = 0.0
    return float(cos.abs().max())


def _run(loss_fn, x, y, upstream_seed: int = 0):
    """Loss, x.grad and W.grad of ``loss_fn(x, y)`` with a non-uniform upstream gradient for per-row losses."""
    xi = x.detach().clone().requires_grad_()
    loss = loss_fn(xi, y)
    loss.backward(_upstream(loss))
    return loss.detach(), xi.grad, loss_fn.W.grad


def _upstream(loss: torch.Tensor) -> torch.Tensor:
    return torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).reshape(loss.shape)


def _reference_run(fn, x, w, **kwargs):
    xr, wr = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    loss = fn(xr, wr, **kwargs)
    loss.backward(_upstream(loss))
    return loss.detach(), xr.grad, wr.grad


def _assert_runs_close(got, want, tol=F64):
    for name, a, b in zip(("loss", "grad x", "grad W"), got, want, strict=True):
        torch.testing.assert_close(a, b, **tol, msg=lambda m, n=name: f"{n}: {m}")


def _adaface(c: int, d: int, w: torch.Tensor, **kwargs) -> AdaFaceLoss:
    loss_fn = AdaFaceLoss(c, d, dtype=torch.float64, **kwargs)
    with torch.no_grad():
        loss_fn.W.copy_(w)
    return loss_fn


def _magface(c: int, d: int, w: torch.Tensor, **kwargs) -> MagFaceLoss:
    loss_fn = MagFaceLoss(c, d, dtype=torch.float64, **kwargs)
    with torch.no_grad():
        loss_fn.W.copy_(w)
    return loss_fn


# ----------------------------------------------------------------------------------------------------- AdaFace


@given(
    n=st.integers(2, 9),
    c=st.integers(2, 11),
    seed=st.integers(0, 10_000),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    rows=st.sampled_from([None, 1, 2, 3]),
)
def test_adaface_equals_the_official_head_at_the_paper_defaults(n, c, seed, reduction, rows):
    """m=0.4, h=0.333, s=64, t_alpha=0.01, statistics from 20/100; norms across the [0.001, 100] clip."""
    x, w, y = _problem(n, 6, c, seed, 0.0005, 140.0)
    assume(_max_non_target_cos(x, w, y) < 1 - 1e-3)  # where the official clamp of other classes is inactive
    loss_fn = _adaface(c, 6, w, reduction=reduction, rows_per_chunk=rows)
    got = _run(loss_fn, x, y)
    ((mean, std),) = ref.adaface_statistics([x.norm(dim=1)], 0.01)
    want = _reference_run(ref.adaface_loss, x, w, labels=y, mean=mean, std=std, reduction=reduction)
    _assert_runs_close(got, want)
    torch.testing.assert_close(loss_fn.margin_fn.batch_mean.item(), mean, rtol=1e-14, atol=0)
    torch.testing.assert_close(loss_fn.margin_fn.batch_std.item(), std, rtol=1e-14, atol=0)


@given(
    seed=st.integers(0, 10_000),
    m=st.floats(0.0, 1.0),
    h=st.floats(0.0, 3.0),
    t_alpha=st.floats(0.0, 1.0),
    mean=st.floats(1.0, 40.0),
    std=st.floats(0.1, 20.0),
)
def test_adaface_equals_the_official_head_with_clipped_scalers(seed, m, h, t_alpha, mean, std):
    """Statistics and concentrations that drive the scaler into its [-1, 1] clip and angles into theirs."""
    x, w, y = _problem(8, 5, 7, seed, 0.5, 60.0)
    assume(_max_non_target_cos(x, w, y) < 1 - 1e-3)
    loss_fn = _adaface(7, 5, w, margin=m, h=h, t_alpha=t_alpha, scale=16.0, reduction="sum")
    loss_fn.margin_fn.batch_mean.fill_(mean)
    loss_fn.margin_fn.batch_std.fill_(std)
    got = _run(loss_fn, x, y)
    ((mu, sigma),) = ref.adaface_statistics([x.norm(dim=1)], t_alpha, mean, std)
    want = _reference_run(ref.adaface_loss, x, w, labels=y, m=m, h=h, s=16.0, mean=mu, std=sigma, reduction="sum")
    _assert_runs_close(got, want)


def test_adaface_target_cosine_clamp_and_angle_clip_stop_the_gradient():
    """A row on its centre (cos = 1: beyond the clamp) and a row whose angle minus margin falls below 1e-3 get no
    gradient through their target cosine, as in the official head; the loss still equals it."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(6, 5, generator=g, dtype=torch.float64)
    x = torch.randn(3, 6, generator=g, dtype=torch.float64)
    x[0] = 30.0 * w[:, 2] / w[:, 2].norm()  # exactly on centre 2
    tilt = torch.randn(6, generator=g, dtype=torch.float64)
    tilt -= (tilt @ w[:, 4]) / (w[:, 4] @ w[:, 4]) * w[:, 4]
    x[1] = 90.0 * (w[:, 4] / w[:, 4].norm() + 0.05 * tilt / tilt.norm())  # theta ~ 0.05 rad, high norm
    y = torch.tensor([2, 4, 0])
    loss_fn = _adaface(5, 6, w, t_alpha=1.0, reduction="none")
    margin = loss_fn.margin_fn
    got = _run(loss_fn, x, y)
    ((mu, sigma),) = ref.adaface_statistics([x.norm(dim=1)], 1.0)
    want = _reference_run(ref.adaface_loss, x, w, labels=y, mean=mu, std=sigma, reduction="none")
    _assert_runs_close(got, want)
    z = margin.margin_scaler(x.norm(dim=1))
    assert math.acos(0.9987) - 0.4 * float(z[1]) < 1e-3 or float(z[1]) > 0.12  # row 1 is in the angle clip
    cos = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(w, dim=0)
    _, slope = margin.eval()(cos[torch.arange(3), y], x.norm(dim=1))
    assert slope[0] == 0 and slope[1] == 0 and slope[2] != 0


def test_adaface_official_clamp_of_other_classes_only_differs_beyond_it():
    """The official head clamps every cosine to ±(1 - 1e-3); the fused engines clamp the target only. A row with a
    non-target cosine of 0.9999 separates them; the reference without that clamp equals ours there, and moving the
    row below the clamp makes all three equal."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(5, 4, generator=g, dtype=torch.float64)
    x = torch.randn(3, 5, generator=g, dtype=torch.float64) * 10
    y = torch.tensor([0, 1, 2])
    u = w[:, 3] / w[:, 3].norm()
    other = torch.randn(5, generator=g, dtype=torch.float64)
    other -= (other @ u) * u
    other /= other.norm()
    for cos_other, differs in ((0.9999, True), (0.99, False)):
        x[0] = 12.0 * (cos_other * u + math.sqrt(1 - cos_other**2) * other)  # row 0 (label 0) near class 3's centre
        assert abs(_max_non_target_cos(x, w, y) - cos_other) < 1e-12
        ours = _adaface(4, 5, w, reduction="none", t_alpha=0.0)(x, y).detach()
        official = ref.adaface_loss(x, w, y, reduction="none")
        unclamped = ref.adaface_loss(x, w, y, reduction="none", clamp_non_target=False)
        torch.testing.assert_close(ours, unclamped, **F64)
        torch.testing.assert_close(ours[1:], official[1:], **F64)
        assert (abs(float(ours[0] - official[0])) > 1e-4) is differs


def test_adaface_has_no_gradient_through_the_norm():
    """The loss depends on each embedding's direction only (the norm enters detached): x.grad is orthogonal to x."""
    x, w, y = _problem(9, 6, 7, 5, 1.0, 80.0)
    _, gx, _ = _run(_adaface(7, 6, w, reduction="none", t_alpha=1.0), x, y)
    radial = (gx * x).sum(dim=1) / x.norm(dim=1)
    assert radial.abs().max() <= 1e-12 * gx.norm(dim=1).max()
    assert gx.norm(dim=1).min() > 0


def test_adaface_running_statistics_across_steps_eval_and_checkpoints():
    """Three training steps fold each batch's (clipped) norms into the buffers before using them; eval mode reads
    them without updating; state_dict carries them; a one-row batch keeps the std (unbiased std undefined)."""
    batches = [_problem(6, 4, 5, seed, 0.5 + 10 * seed, 40.0 + 30 * seed) for seed in range(3)]
    loss_fn = _adaface(5, 4, batches[0][1], t_alpha=0.3)
    stats = ref.adaface_statistics([x.norm(dim=1) for x, _, _ in batches], 0.3)
    for (x, _, y), (mean, std) in zip(batches, stats, strict=True):
        loss = loss_fn(x, y)
        torch.testing.assert_close(loss, ref.adaface_loss(x, batches[0][1], y, mean=mean, std=std), **F64)
        torch.testing.assert_close(loss_fn.margin_fn.batch_mean.item(), mean, rtol=1e-14, atol=0)
        torch.testing.assert_close(loss_fn.margin_fn.batch_std.item(), std, rtol=1e-14, atol=0)
    mean, std = stats[-1]
    loss_fn.eval()
    x, _, y = _problem(6, 4, 5, 11, 1.0, 90.0)
    for _ in range(2):
        torch.testing.assert_close(loss_fn(x, y), ref.adaface_loss(x, batches[0][1], y, mean=mean, std=std), **F64)
    assert loss_fn.margin_fn.batch_mean.item() == mean and loss_fn.margin_fn.batch_std.item() == std
    restored = _adaface(5, 4, torch.zeros(4, 5))
    restored.load_state_dict(loss_fn.state_dict())
    assert restored.margin_fn.batch_mean.item() == mean and restored.margin_fn.batch_std.item() == std
    loss_fn.train()
    loss_fn(x[:1], y[:1])
    assert loss_fn.margin_fn.batch_std.item() == std
    assert loss_fn.margin_fn.batch_mean.item() == pytest.approx(0.3 * x[0].norm().item() + 0.7 * mean, rel=1e-14)


# ----------------------------------------------------------------------------------------------------- MagFace


@given(
    n=st.integers(1, 9),
    c=st.integers(2, 11),
    seed=st.integers(0, 10_000),
    easy=st.booleans(),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    rows=st.sampled_from([None, 1, 2, 3]),
)
def test_magface_equals_the_official_equations_at_the_paper_defaults(n, c, seed, easy, reduction, rows):
    """s=64, l_a=10, u_a=110, margins 0.45..0.8 rad (given in degrees), lambda_g=35; norms across the clamp."""
    x, w, y = _problem(n, 6, c, seed, 3.0, 140.0)
    loss_fn = _magface(c, 6, w, easy_margin=easy, reduction=reduction, rows_per_chunk=rows)
    got = _run(loss_fn, x, y)
    want = _reference_run(ref.magface_loss, x, w, labels=y, easy_margin=easy, reduction=reduction)
    _assert_runs_close(got, want)


@given(seed=st.integers(0, 10_000), lambda_g=st.floats(0.0, 50.0), scale=st.floats(2.0, 64.0))
def test_magface_without_easy_margin_takes_the_fallback_past_pi_minus_m(seed, lambda_g, scale):
    """Rows pointing away from their centre (cos < -cos m): the fallback cos - m sin m, with m per row."""
    x, w, y = _problem(6, 4, 5, seed, 8.0, 120.0)
    x[:3] = -x[:3].abs().sum(dim=1, keepdim=True) * torch.nn.functional.normalize(w[:, y[:3]].T, dim=1)
    x[:3] += 0.05 * torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    loss_fn = _magface(5, 4, w, scale=scale, lambda_g=lambda_g, easy_margin=False, reduction="none")
    got = _run(loss_fn, x, y)
    kwargs = {"s": scale, "lambda_g": lambda_g, "easy_margin": False, "reduction": "none"}
    want = _reference_run(ref.magface_loss, x, w, labels=y, **kwargs)
    _assert_runs_close(got, want)


def test_magface_gradient_flows_through_the_norm_inside_its_range_only():
    """Rows with |x| in (l_a, u_a) get a radial gradient (margin and regulariser); outside, clamp(|x|) is
    constant and the loss depends on the direction only."""
    x, w, y = _problem(9, 6, 7, 2, 2.0, 150.0)
    x[:3] *= 3.0 / x[:3].norm(dim=1, keepdim=True)  # below l_a = 10
    x[3:5] *= 130.0 / x[3:5].norm(dim=1, keepdim=True)  # above u_a = 110
    x[5:] *= torch.tensor([[20.0], [45.0], [70.0], [100.0]], dtype=torch.float64) / x[5:].norm(dim=1, keepdim=True)
    _, gx, _ = _run(_magface(7, 6, w, reduction="none"), x, y)
    radial = (gx * x).sum(dim=1) / x.norm(dim=1)
    assert radial[:5].abs().max() <= 1e-12 * gx.norm(dim=1).max()
    assert (radial[5:].abs() > 1e-6).all()
    # With zero margins the cross-entropy depends on the direction only: the radial gradient is the regulariser's,
    # d/da [lambda_g (a / u_a^2 + 1 / a)] times the row's upstream weight.
    plain = _magface(7, 6, w, reduction="none", l_margin=0.0, u_margin=0.0)
    _, gx0, _ = _run(plain, x, y)
    a = x.norm(dim=1)
    expected = 35.0 * (1 / 110.0**2 - 1 / a**2) * _upstream(torch.zeros(9, dtype=torch.float64))
    inside = (a > 10) & (a < 110)
    torch.testing.assert_close(((gx0 * x).sum(dim=1) / a)[inside], expected[inside], **F64)


def test_magface_quality_is_the_feature_norm():
    loss_fn = MagFaceLoss(5, 4)
    x = torch.randn(7, 4) * torch.arange(1.0, 8.0)[:, None]
    q = loss_fn.quality(x.requires_grad_())
    torch.testing.assert_close(q, x.detach().norm(dim=1))
    assert not q.requires_grad and q.dtype == torch.float32
    assert loss_fn.quality(x.double()).dtype == torch.float64
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        loss_fn.quality(torch.randn(3, 5))


def test_magface_regulariser_is_reduced_like_the_rows():
    x, w, y = _problem(5, 4, 6, 9, 5.0, 120.0)
    per_row = _magface(6, 4, w, reduction="none")(x, y)
    torch.testing.assert_close(_magface(6, 4, w, reduction="sum")(x, y), per_row.sum(), **F64)
    torch.testing.assert_close(_magface(6, 4, w, reduction="mean")(x, y), per_row.mean(), **F64)
    a = x.norm(dim=1).clamp(10, 110)
    ce = _magface(6, 4, w, reduction="none", lambda_g=0.0)(x, y)
    torch.testing.assert_close(per_row - ce, 35.0 * (a / 110.0**2 + 1 / a), **F64)


# -------------------------------------------------------------------------------------------- both: every path


def test_gradcheck_float64():
    """Both margins, every reduction. AdaFace's gradient, like the official head's, treats the norm as a constant
    (a stop-gradient), so it is the derivative of the loss only where the norm cannot change: it is checked on
    embeddings ``normalize(u) * n`` of fixed norms ``n``. MagFace's is the full derivative, norm included."""
    x, w, y = _problem(5, 4, 6, 4, 20.0, 100.0)
    x.requires_grad_()
    w.requires_grad_()
    norms = x.detach().norm(dim=1, keepdim=True)
    ada = AdaFaceMargin(t_alpha=0.5, dtype=torch.float64).eval()
    ada.batch_mean.fill_(45.0)
    ada.batch_std.fill_(20.0)
    assert ada.margin_scaler(norms[:, 0]).abs().max() > 0.1  # the margins differ between rows

    def fixed_norm(u):
        return torch.nn.functional.normalize(u, dim=1) * norms

    cases = [(ada, fixed_norm), (MagFaceMargin(), None), (MagFaceMargin(easy_margin=False), None)]
    for margin, transform in cases:
        for reduction in ("mean", "sum", "none"):

            def fn(a, b, mg=margin, r=reduction, t=transform):
                return AF.margin_loss(a if t is None else t(a), b, y, mg, 8.0, reduction=r)

            assert torch.autograd.gradcheck(fn, (x, w), eps=1e-6, atol=1e-6)


def test_functional_margin_loss_takes_the_adaptive_margins():
    """The margins alone (any loss, ``MarginLoss`` or ``margin_loss``) give the loss modules' values."""
    x, w, y = _problem(6, 4, 5, 8, 5.0, 100.0)
    torch.testing.assert_close(AF.margin_loss(x, w, y, MagFaceMargin(), 64.0), _magface(5, 4, w)(x, y), **F64)
    module = MarginLoss(5, 4, AdaFaceMargin(dtype=torch.float64), 64.0, dtype=torch.float64)
    with torch.no_grad():
        module.W.copy_(w)
    torch.testing.assert_close(module(x, y), _adaface(5, 4, w)(x, y), **F64)


@pytest.mark.parametrize("kind", ["adaface", "magface"])
def test_torch_compile_equals_eager(kind):
    x, w, y = _problem(7, 6, 9, 6, 5.0, 120.0)
    eager = _adaface(9, 6, w, t_alpha=0.2) if kind == "adaface" else _magface(9, 6, w)
    compiled_module = copy.deepcopy(eager)
    compiled = torch.compile(compiled_module)
    for step in range(2):
        xs = x * (1 + step)
        got = _run(compiled, xs, y)
        compiled_module.W.grad = None
        want = _run(eager, xs, y)
        eager.W.grad = None
        _assert_runs_close(got, want, {"rtol": 1e-12, "atol": 1e-12})
    for name, buffer in eager.named_buffers():
        assert torch.equal(buffer, dict(compiled_module.named_buffers())[name]), name


@pytest.mark.parametrize("kind", ["adaface", "magface"])
def test_triton_backend_equals_torch(kind):
    pytest.importorskip("triton")
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("Triton on CPU needs TRITON_INTERPRET=1 (set by conftest before triton is imported)")
    x, w, y = _problem(5, 8, 20, 7, 5.0, 120.0)
    make = _adaface if kind == "adaface" else _magface
    runs = []
    for backend in ("triton", "torch"):
        runs.append(_run(make(20, 8, w, backend=backend, rows_per_chunk=2, reduction="none"), x, y))
    _assert_runs_close(*runs, {"rtol": 1e-12, "atol": 1e-11})


@pytest.mark.parametrize("kind", ["adaface", "magface"])
def test_bfloat16_autocast_error_is_a_small_multiple_of_plain_torch(kind):
    """bf16 autocast on CPU: W stays float32; the per-row error against float64 is within a small multiple of the
    official equations' own in plain torch under the same autocast (GEMM in bfloat16, the rest in float32)."""
    torch.manual_seed(7)
    x, _, y = _problem(96, 64, 300, 7, 5.0, 120.0, dtype=torch.float32)
    if kind == "adaface":
        loss_fn = AdaFaceLoss(300, 64, reduction="none").eval()  # fixed statistics 20 / 100 for all three
        fn, kwargs = ref.adaface_loss, {}
    else:
        loss_fn = MagFaceLoss(300, 64, reduction="none")
        fn, kwargs = ref.magface_loss, {}
    w = loss_fn.W.detach()
    assert _max_non_target_cos(x.double(), w.double(), y) < 1 - 1e-3
    truth = fn(x.double(), w.double(), y, reduction="none", **kwargs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = loss_fn(x, y)
        plain = fn(x, w, y, reduction="none", **kwargs)
    assert ours.dtype == torch.float32 and loss_fn.W.dtype == torch.float32
    our_err, plain_err = (ours.double() - truth).abs(), (plain.double() - truth).abs()
    assert our_err.mean() <= 1.5 * plain_err.mean()
    assert our_err.max() <= 2.0 * plain_err.max()
    ours.sum().backward()
    assert loss_fn.W.grad.dtype == torch.float32 and torch.isfinite(loss_fn.W.grad).all()


def test_attributes_validation_and_repr():
    ada = AdaFaceLoss(10, 4)
    assert (ada.margin, ada.h, ada.t_alpha, ada.scale) == (0.4, 0.333, 0.01, 64.0)
    ada.margin = 0.3
    assert ada.margin_fn.m == 0.3
    with pytest.raises(ValueError, match="margin must be >= 0"):
        ada.margin = -0.1
    with pytest.raises(ValueError, match=r"t_alpha must be in \[0, 1\]"):
        AdaFaceLoss(10, 4, t_alpha=1.5)
    assert ada.margin_fn.batch_mean.item() == 20.0 and ada.margin_fn.batch_std.item() == 100.0
    assert AdaFaceLoss(10, 4, dtype=torch.float64).margin_fn.batch_mean.dtype == torch.float64
    assert AdaFaceLoss(10, 4, dtype=torch.bfloat16).margin_fn.batch_mean.dtype == torch.float32
    mag = MagFaceLoss(10, 4)
    assert mag.l_margin == pytest.approx(math.degrees(0.45)) and mag.u_margin == pytest.approx(math.degrees(0.8))
    assert (mag.l_a, mag.u_a, mag.lambda_g, mag.easy_margin) == (10.0, 110.0, 35.0, True)
    with pytest.raises(ValueError, match="l_a must be < u_a"):
        MagFaceLoss(10, 4, l_a=50, u_a=40)
    with pytest.raises(ValueError, match="l_a must be < u_a"):
        mag.u_a = 5.0
    assert mag.u_a == 110.0  # a failed set leaves the margin as it was
    with pytest.raises(ValueError, match=r"u_margin must be in \[0, 180\)"):
        mag.u_margin = 180.0
    with pytest.raises(TypeError, match="easy_margin must be a bool"):
        MagFaceLoss(10, 4, easy_margin=1)
    assert "margin=0.3, h=0.333" in repr(ada) and "lambda_g=35" in repr(mag)
    margin = MagFaceMargin()
    torch.testing.assert_close(
        margin.margin_of(torch.tensor([0.0, 10.0, 60.0, 110.0, 200.0], dtype=torch.float64)),
        torch.tensor([0.45, 0.45, 0.625, 0.8, 0.8], dtype=torch.float64),
    )


# ------------------------------------------------------------------------------------------- sharded (2 ranks)

D = 6


def _sharded_batch(sizes: list[int], num_classes: int, seed: int):
    x, _, y = _problem(sum(sizes), D, num_classes, seed, 4.0, 130.0)
    return x, y


def _local(t: torch.Tensor, sizes: list[int], rank: int) -> torch.Tensor:
    start = sum(sizes[:rank])
    return t[start : start + sizes[rank]]


def _check_sharded(rank: int, world: int, make, sizes: list[int], num_classes: int, reduction: str) -> None:
    """Two training steps and one eval step: loss, this rank's x.grad and W.grad equal the single-process loss
    with the full W (grad_reduction='sum'); AdaFace's statistics equal the single process's on every rank."""
    sharded = make(num_classes, D, sharding=Sharding(grad_reduction="sum"), dtype=torch.float64, reduction=reduction)
    single = make(num_classes, D, dtype=torch.float64, reduction=reduction)
    with torch.no_grad():
        single.W.copy_(gather_full_weight(sharded, dst=None))
    for step, training in enumerate((True, True, False)):
        sharded.train(training)
        single.train(training)
        x, y = _sharded_batch(sizes, num_classes, seed=100 + step)
        xl = _local(x, sizes, rank).clone().requires_grad_()
        loss = sharded(xl, _local(y, sizes, rank))
        loss.backward(_upstream(loss))
        want_loss, want_gx, want_gw = _run(single, x, y)
        torch.testing.assert_close(loss.detach(), want_loss, **F64)
        torch.testing.assert_close(xl.grad, _local(want_gx, sizes, rank), **F64)
        start, stop = sharded.sharding.start, sharded.sharding.stop
        torch.testing.assert_close(sharded.W.grad, want_gw[:, start:stop], **F64)
        sharded.W.grad = None
        single.W.grad = None
        for name, buffer in single.named_buffers():
            assert torch.equal(dict(sharded.named_buffers())[name], buffer), name
    exported = to_single_process(sharded, dst=None)
    assert exported is not None and type(exported) is type(single)
    for name, buffer in single.named_buffers():
        assert torch.equal(dict(exported.named_buffers())[name], buffer), name


def _worker(rank: int, world: int, tmp: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{pathlib.Path(tmp) / 'init'}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        for make in (AdaFaceLoss, MagFaceLoss):
            _check_sharded(rank, world, make, [5, 3], 7, "mean")
            _check_sharded(rank, world, make, [4, 0], 9, "none")
            _check_sharded(rank, world, make, [2, 6], 8, "sum")
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_equal_single_process(tmp_path: pathlib.Path, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    if sys.platform.startswith("linux") and "GLOO_SOCKET_IFNAME" not in os.environ:
        monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)

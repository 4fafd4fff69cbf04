"""Drop-in parity with pytorch-metric-learning's ArcFaceLoss, and the places where it is broken and we are not."""

from __future__ import annotations

import math

import pytest
import torch

from arcloss import ArcFaceLoss

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")


def _pair(num_classes=20, embedding_size=12, dtype=torch.float32, **kw):
    theirs = pml_losses.ArcFaceLoss(num_classes, embedding_size, **kw).to(dtype)
    ours = ArcFaceLoss(num_classes, embedding_size, dtype=dtype, **kw)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def _loss_and_grads(loss_fn, x, labels):
    x = x.clone().requires_grad_()
    loss_fn.zero_grad(set_to_none=True)
    loss = loss_fn(x, labels)
    loss.backward()
    return loss.detach(), x.grad, loss_fn.W.grad


def _batch(n, d, num_classes, dtype, past_threshold, w):
    labels = torch.randint(0, num_classes, (n,))
    x = torch.randn(n, d, dtype=dtype)
    if past_threshold:
        # Half the rows point away from their class centre: theta_y > pi - m, the fallback branch.
        x[: n // 2] = -w.detach()[:, labels[: n // 2]].t() + 0.05 * torch.randn(n // 2, d, dtype=dtype)
    return x, labels


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("past_threshold", [False, True])
@pytest.mark.parametrize(("margin", "scale"), [(28.6, 64.0), (10.0, 16.0), (50.0, 30.0)])
def test_loss_and_gradients_match(dtype, past_threshold, margin, scale):
    theirs, ours = _pair(dtype=dtype, margin=margin, scale=scale)
    x, labels = _batch(32, 12, 20, dtype, past_threshold, theirs.W)
    if past_threshold:
        cos = torch.nn.functional.cosine_similarity(x, theirs.W.detach()[:, labels].t())
        assert (torch.acos(cos) > math.pi - math.radians(margin)).sum() >= 8
    expected = _loss_and_grads(theirs, x, labels)
    got = _loss_and_grads(ours, x, labels)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-11)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, **tol)


def test_get_logits_match():
    theirs, ours = _pair()
    x = torch.randn(7, 12)
    torch.testing.assert_close(ours.get_logits(x), theirs.get_logits(x))


def test_checkpoints_load_both_ways():
    theirs, ours = _pair()
    fresh = ArcFaceLoss(20, 12)
    fresh.load_state_dict(theirs.state_dict())
    assert torch.equal(fresh.W, theirs.W)
    assert fresh.W.shape == (12, 20)
    back = pml_losses.ArcFaceLoss(20, 12)
    back.load_state_dict(ours.state_dict())
    assert torch.equal(back.W, ours.W)


def test_default_init_is_theirs():
    torch.manual_seed(5)
    theirs = pml_losses.ArcFaceLoss(30, 16)
    torch.manual_seed(5)
    ours = ArcFaceLoss(30, 16)
    assert torch.equal(ours.W, theirs.W)


# --- Where theirs is broken -------------------------------------------------------------------------------


def test_theirs_nan_gradient_at_cos_one_ours_finite():
    theirs, ours = _pair()
    labels = torch.tensor([1, 2, 3])
    x = theirs.W.detach()[:, labels].t().clone()  # each embedding equals its class centre
    _, their_grad, _ = _loss_and_grads(theirs, x, labels)
    loss, our_grad, our_w_grad = _loss_and_grads(ours, x, labels)
    assert torch.isnan(their_grad).any(), "pytorch-metric-learning fixed this; update the docs"
    assert torch.isfinite(loss) and torch.isfinite(our_grad).all() and torch.isfinite(our_w_grad).all()


def test_theirs_nan_on_empty_batch_ours_zero():
    theirs, ours = _pair()
    x, labels = torch.randn(0, 12, requires_grad=True), torch.zeros(0, dtype=torch.long)
    their_loss = theirs(x, labels)
    assert not torch.isfinite(their_loss) or their_loss == 0
    loss = ours(x, labels)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert ours.W.grad is not None and torch.count_nonzero(ours.W.grad) == 0


def test_theirs_recasts_weight_under_autocast_ours_does_not():
    theirs, ours = _pair()
    x, labels = torch.randn(8, 12), torch.randint(0, 20, (8,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        theirs(x.bfloat16(), labels)
        loss = ours(x.bfloat16(), labels)
    assert theirs.W.dtype == torch.bfloat16, "pytorch-metric-learning fixed this; update the docs"
    assert ours.W.dtype == torch.float32 and loss.dtype == torch.float32
    loss.backward()
    assert ours.W.grad.dtype == torch.float32


def test_bad_label_clear_error_where_theirs_is_cryptic():
    theirs, ours = _pair()
    x, labels = torch.randn(4, 12), torch.tensor([0, 1, 2, 20])
    with pytest.raises(Exception) as their_error:
        theirs(x, labels)
    assert "20" not in str(their_error.value) or "num_classes" not in str(their_error.value)
    with pytest.raises(ValueError, match=r"labels must be in \[0, num_classes=20\), got label 20"):
        ours(x, labels)


def test_theirs_writes_nan_into_w_on_a_bad_batch_ours_refuses():
    theirs, ours = _pair()
    x, labels = torch.randn(4, 12), torch.tensor([0, 1, 2, 3])
    x[1, 3] = float("nan")
    optimizer = torch.optim.SGD(theirs.parameters(), lr=0.1)
    theirs(x, labels).backward()
    optimizer.step()
    assert torch.isnan(theirs.W).any(), "pytorch-metric-learning fixed this; update the docs"
    before = ours.W.detach().clone()
    with pytest.raises(ValueError, match="NaN or Inf"):
        ours(x, labels)
    assert torch.equal(ours.W, before) and ours.W.grad is None

"""The nn.Module surface: construction, torch vocabulary, AMP, torch.compile, training."""

from __future__ import annotations

import math

import pytest
import torch

from arcloss import ArcFaceLoss, CosFaceLoss
from arcloss.functional import arcface_loss

from . import reference as ref


def test_margin_in_degrees_and_radians():
    loss_fn = ArcFaceLoss(10, 4)
    assert loss_fn.margin == 28.6
    assert loss_fn.margin_radians == pytest.approx(math.radians(28.6))
    assert loss_fn.scale == 64


def test_extra_repr_names_the_configuration():
    text = repr(ArcFaceLoss(10, 4, margin=20, scale=30, reduction="sum"))
    for part in ("num_classes=10", "embedding_size=4", "margin=20deg", "scale=30", "reduction='sum'"):
        assert part in text


def test_device_dtype_and_reset_parameters():
    loss_fn = ArcFaceLoss(10, 4, device="cpu", dtype=torch.float64)
    assert loss_fn.W.dtype == torch.float64 and loss_fn.W.shape == (4, 10)
    before = loss_fn.W.detach().clone()
    loss_fn.reset_parameters()
    assert not torch.equal(before, loss_fn.W)
    custom = ArcFaceLoss(10, 4, weight_init_func=lambda w: torch.nn.init.constant_(w, 0.5))
    assert torch.all(custom.W == 0.5)
    custom.reset_parameters()
    assert torch.all(custom.W == 0.5)


def test_parameters_and_state_dict_hold_only_w():
    loss_fn = ArcFaceLoss(10, 4)
    assert [name for name, _ in loss_fn.named_parameters()] == ["W"]
    assert list(loss_fn.state_dict()) == ["W"]


def test_margin_attribute_can_be_scheduled():
    loss_fn = ArcFaceLoss(10, 4, dtype=torch.float64)
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.randint(0, 10, (6,))
    loss_fn.margin = 10.0
    torch.testing.assert_close(loss_fn(x, y), ref.arcface_loss(x, loss_fn.W.detach(), y, 10.0, 64.0))


@pytest.mark.parametrize("autocast_dtype", [torch.bfloat16, torch.float16])
def test_autocast_keeps_math_in_float32_and_is_accurate(autocast_dtype):
    """Under autocast, our per-row error against float64 is within a small multiple of plain torch's own
    error: the same equation in plain torch under the same autocast (GEMM in reduced precision)."""
    torch.manual_seed(4)
    loss_fn = ArcFaceLoss(300, 64, reduction="none")
    x, y = torch.randn(96, 64), torch.randint(0, 300, (96,))
    truth = ref.arcface_loss(x, loss_fn.W.detach(), y, 28.6, 64.0, "none")
    with torch.autocast("cpu", dtype=autocast_dtype):
        ours = loss_fn(x, y)
        cos = torch.nn.functional.normalize(x) @ torch.nn.functional.normalize(loss_fn.W.detach(), dim=0)
        assert cos.dtype == autocast_dtype
        theta = torch.acos(cos.float().gather(1, y[:, None]).clamp(-1, 1))[:, 0]
        m = math.radians(28.6)
        phi = torch.where(theta <= math.pi - m, torch.cos(theta + m), torch.cos(theta) - m * math.sin(m))
        logits = (64 * cos.float()).scatter(1, y[:, None], 64 * phi[:, None])
        plain = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    assert ours.dtype == torch.float32 and loss_fn.W.dtype == torch.float32
    our_err, plain_err = (ours.double() - truth).abs(), (plain.double() - truth).abs()
    assert our_err.mean() <= 1.5 * plain_err.mean()
    assert our_err.max() <= 2.0 * plain_err.max()
    ours.sum().backward()
    assert loss_fn.W.grad.dtype == torch.float32 and torch.isfinite(loss_fn.W.grad).all()


def test_reduced_precision_inputs_without_autocast():
    loss_fn = ArcFaceLoss(50, 16)
    x = torch.randn(8, 16, dtype=torch.bfloat16, requires_grad=True)
    loss = loss_fn(x, torch.randint(0, 50, (8,)))
    loss.backward()
    assert x.grad.dtype == torch.bfloat16 and loss_fn.W.dtype == torch.float32
    assert loss_fn.W.grad.dtype == torch.float32


def test_torch_compile_forward_backward_equals_eager():
    torch.manual_seed(6)
    eager = ArcFaceLoss(40, 8)
    compiled_module = ArcFaceLoss(40, 8)
    compiled_module.load_state_dict(eager.state_dict())
    x, y = torch.randn(16, 8), torch.randint(0, 40, (16,))

    def step(loss_fn, inputs):
        inputs = inputs.clone().requires_grad_()
        loss = loss_fn(inputs, y)
        loss.backward()
        return loss.detach(), inputs.grad, loss_fn.W.grad

    compiled = torch.compile(compiled_module, fullgraph=False)
    for got, expected in zip(step(compiled, x), step(eager, x), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_second_backward_through_a_retained_graph_is_exact(reduction):
    """``(2 * loss).backward(retain_graph=True)`` twice accumulates twice the gradient of one backward."""
    loss_fn = ArcFaceLoss(10, 4, reduction=reduction, dtype=torch.float64)
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([1, 2, 3])
    (2.0 * loss_fn(x, labels).sum()).backward()
    once_x, once_w = x.grad.clone(), loss_fn.W.grad.clone()
    x.grad, loss_fn.W.grad = None, None
    loss = 2.0 * loss_fn(x, labels).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    torch.testing.assert_close(x.grad, 2 * once_x)
    torch.testing.assert_close(loss_fn.W.grad, 2 * once_w)


def test_double_backward_raises_a_clear_error():
    loss_fn = ArcFaceLoss(10, 4, dtype=torch.float64)
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.gradgradcheck(lambda e: loss_fn(e, torch.tensor([1, 2, 3])), (x,))


@pytest.mark.parametrize("loss_cls", [ArcFaceLoss, CosFaceLoss])
def test_an_optimizer_over_loss_parameters_trains(loss_cls):
    """Embeddings from a linear model of clustered data: the loss falls and the classes separate."""
    torch.manual_seed(7)
    centres = torch.randn(6, 10) * 3
    labels = torch.arange(6).repeat_interleave(20)
    data = centres[labels] + torch.randn(120, 10)
    model = torch.nn.Linear(10, 8)
    loss_fn = loss_cls(6, 8, scale=16)
    optimizer = torch.optim.SGD([*model.parameters(), *loss_fn.parameters()], lr=0.1, momentum=0.9)
    first = None
    for _ in range(60):
        optimizer.zero_grad()
        loss = loss_fn(model(data), labels)
        loss.backward()
        optimizer.step()
        first = first if first is not None else loss.item()
    accuracy = (loss_fn.get_logits(model(data)).argmax(1) == labels).float().mean()
    assert loss.item() < 0.5 * first
    assert accuracy > 0.95


def test_functional_matches_module():
    loss_fn = ArcFaceLoss(10, 4, margin=20, scale=10)
    x, y = torch.randn(5, 4), torch.randint(0, 10, (5,))
    torch.testing.assert_close(loss_fn(x, y), arcface_loss(x, loss_fn.W, y, margin=20, scale=10))

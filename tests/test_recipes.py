"""arcloss.recipes: AdaCos scale, unit-norm centre init, margin warm-up."""

from __future__ import annotations

import math

import pytest
import torch

from arcloss import ArcFaceLoss, CosFaceLoss
from arcloss.recipes import MarginWarmup, adacos_scale, unit_norm_init_


def test_adacos_scale_values() -> None:
    assert adacos_scale(300) == pytest.approx(math.sqrt(2) * math.log(299))  # AdaCos's fixed scale
    assert adacos_scale(300) == pytest.approx(8.0616, abs=1e-4)
    assert adacos_scale(300, margin_degrees=28.6) == pytest.approx(math.log(299) / math.cos(math.radians(73.6)))
    assert adacos_scale(300, margin_degrees=28.6) == pytest.approx(20.19, abs=0.01)
    assert adacos_scale(300, cosine_margin=0.35) == pytest.approx(15.96, abs=0.01)
    with pytest.raises(ValueError):
        adacos_scale(2)
    with pytest.raises(ValueError):
        adacos_scale(10.5)
    with pytest.raises(ValueError, match="margins too large"):
        adacos_scale(100, margin_degrees=50)


@pytest.mark.parametrize(
    ("cls", "kwargs"), [(ArcFaceLoss, {"margin_degrees": 28.6}), (CosFaceLoss, {"cosine_margin": 0.35})]
)
def test_adacos_scale_gives_half_probability_at_45_degrees(cls, kwargs) -> None:
    """The defining property: embedding 45° from its centre, orthogonal to the 299 others -> loss = ln 2."""
    c = 300
    margin = next(iter(kwargs.values()))
    loss = cls(c, c + 1, margin=margin, scale=adacos_scale(c, **kwargs))
    with torch.no_grad():
        loss.W.copy_(torch.eye(c + 1, c))  # centre j = e_j
    emb = torch.zeros(1, c + 1)
    emb[0, 0] = emb[0, c] = 1.0  # 45° from centre 0, 90° from every other centre
    assert loss(emb, torch.tensor([0])).item() == pytest.approx(math.log(2), abs=1e-4)


def test_unit_norm_init_gives_unit_columns() -> None:
    torch.manual_seed(0)
    loss = ArcFaceLoss(500, 256, weight_init_func=unit_norm_init_)
    norms = loss.W.detach().norm(dim=0)
    assert norms.mean().item() == pytest.approx(1.0, abs=0.02)
    assert norms.std().item() < 0.1
    default = ArcFaceLoss(500, 256).W.detach().norm(dim=0)  # drop-in default unchanged: |W_j| ~ sqrt(D)
    assert default.mean().item() == pytest.approx(16.0, rel=0.02)
    with pytest.raises(ValueError):
        unit_norm_init_(torch.empty(3))


def test_unit_norm_centres_turn_faster_under_sgd() -> None:
    """The reason for the init: one identical SGD step turns unit-norm centres ~D times more than N(0, 1) ones."""
    torch.manual_seed(0)
    emb, labels = torch.randn(64, 128), torch.randint(0, 10, (64,))
    turned = {}
    for name, init in (("default", None), ("unit", unit_norm_init_)):
        torch.manual_seed(1)
        loss = ArcFaceLoss(10, 128, scale=16, weight_init_func=init)
        before = torch.nn.functional.normalize(loss.W.detach().clone(), dim=0)
        loss(emb, labels).backward()
        with torch.no_grad():
            loss.W -= 0.1 * loss.W.grad
        after = torch.nn.functional.normalize(loss.W.detach(), dim=0)
        turned[name] = torch.rad2deg(torch.arccos((before * after).sum(0).clamp(-1, 1))).mean().item()
    assert turned["unit"] / turned["default"] > 0.5 * 128


@pytest.mark.parametrize("cls", [ArcFaceLoss, CosFaceLoss])
def test_margin_warmup_linear_ramp(cls) -> None:
    loss = cls(5, 4)
    target = loss.margin
    sched = MarginWarmup(loss, warmup_steps=4)
    seen = [loss.margin]
    for _ in range(6):
        sched.step()
        seen.append(loss.margin)
    assert seen == pytest.approx([0, target / 4, target / 2, 3 * target / 4, target, target, target])


def test_margin_warmup_changes_the_loss() -> None:
    torch.manual_seed(0)
    loss = ArcFaceLoss(5, 4, scale=8)
    emb, labels = torch.randn(16, 4), torch.randint(0, 5, (16,))
    full = loss(emb, labels).item()
    MarginWarmup(loss, warmup_steps=10)
    assert loss.margin == 0.0
    at_zero = loss(emb, labels).item()
    assert at_zero < full  # a margin only makes the target logit smaller
    MarginWarmup(loss, warmup_steps=0, target=28.6)
    assert loss(emb, labels).item() == pytest.approx(full)


def test_margin_warmup_rejects_negative_steps() -> None:
    with pytest.raises(ValueError):
        MarginWarmup(ArcFaceLoss(5, 4), warmup_steps=-1)

"""The layers behind every loss: engines and their reasons, the typed plan, the margin protocol (a margin
that reads the feature norm, written as one class), and the chunk softmax's row statistics."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import arcloss.functional as AF
from arcloss import ArcFaceLoss, MarginLoss, ops
from arcloss.ops import Plan, softmax_torch
from arcloss.ops.chunk_softmax import ChunkTargets, RowStats

from . import reference as ref
from .toy_margin import NormShiftMargin, norm_shift_loss


def _problem(n: int, d: int, c: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype) * (0.2 + 3 * torch.rand(n, 1, generator=g, dtype=dtype))
    w = torch.randn(d, c, generator=g, dtype=dtype)
    return x, w, torch.randint(0, c, (n,), generator=g)


def test_auto_takes_the_first_engine_that_supports_the_inputs():
    x, w, _ = _problem(3, 4, 5, 0)
    plan = Plan("")
    assert ops.resolve("auto", x, w, plan) == "torch"  # CPU tensors: Triton only when asked for by name
    assert ops.PRIORITY[-1] == "torch" and set(ops.PRIORITY) <= set(ops.ENGINES)


def test_named_engine_that_cannot_run_says_why(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x, w, _ = _problem(3, 4, 5, 0)
    with pytest.raises(ValueError, match=r"backend='triton' cannot run these inputs \(triton: .*device cpu"):
        ops.resolve("triton", x, w, Plan(""))
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.resolve("cuda", x, w, Plan(""))


def test_plan_round_trips_through_the_op_arguments():
    plan = Plan("torch", torch.bfloat16, 7, 3, ops.ShardSpec("group-name"))
    assert Plan.from_op_args(*plan.op_args()) == plan
    assert Plan.from_op_args(*Plan("torch").op_args()) == Plan("torch")


@given(
    n=st.integers(1, 7),
    c=st.integers(2, 9),
    seed=st.integers(0, 10_000),
    m=st.floats(0.0, 0.6),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    rows=st.sampled_from([None, 1, 2, 3]),
)
def test_a_margin_of_the_feature_norm_is_one_class(n, c, seed, m, reduction, rows):
    """Loss and gradients (through the cosines and the norm) equal the float64 reference of the equation."""
    x, w, y = _problem(n, 5, c, seed)
    x.requires_grad_()
    w.requires_grad_()
    loss = AF.margin_loss(x, w, y, NormShiftMargin(m, 2.0), 8.0, reduction=reduction, rows_per_chunk=rows)
    xr, wr = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    truth = norm_shift_loss(xr, wr, y, m, 2.0, 8.0, reduction)
    upstream = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).reshape(loss.shape)
    loss.backward(upstream)
    truth.backward(upstream)
    tol = {"rtol": 1e-10, "atol": 1e-12}
    torch.testing.assert_close(loss, truth, **tol)
    torch.testing.assert_close(x.grad, xr.grad, **tol)
    torch.testing.assert_close(w.grad, wr.grad, **tol)


def test_a_margin_of_the_feature_norm_in_a_module_with_compile():
    loss_fn = MarginLoss(9, 5, NormShiftMargin(0.3, 2.0), 8.0, dtype=torch.float64)
    x, _, y = _problem(6, 5, 9, 3)
    compiled = torch.compile(loss_fn)
    for fn in (loss_fn, compiled):
        xi = x.clone().requires_grad_()
        loss = fn(xi, y)
        loss.backward()
        xr, wr = x.clone().requires_grad_(), loss_fn.W.detach().clone().requires_grad_()
        truth = norm_shift_loss(xr, wr, y, 0.3, 2.0, 8.0, "mean")
        truth.backward()
        torch.testing.assert_close(loss.detach(), truth.detach())
        torch.testing.assert_close(xi.grad, xr.grad)
        loss_fn.W.grad = None


def test_row_stats_shift_each_row_by_its_own_max():
    """Rows whose logits differ by hundreds: the statistics must be each row's max and its shifted sum."""
    g = torch.Generator().manual_seed(0)
    dots = torch.randn(4, 6, generator=g, dtype=torch.float64) + torch.tensor([[0.0], [300.0], [-200.0], [5.0]])
    col_scale = 0.5 + torch.rand(6, generator=g, dtype=torch.float64)
    labels = torch.tensor([2, -1, 0, 5])
    target = torch.tensor([1.0, 0.0, -90.0, 3.0], dtype=torch.float64)
    z = dots * col_scale
    rows = torch.tensor([0, 2, 3])
    z[rows, labels[rows]] = target[rows]
    stats = softmax_torch.row_stats(dots.clone(), col_scale, ChunkTargets(labels, target, torch.ones_like(target)))
    torch.testing.assert_close(stats.max, z.amax(1), rtol=0, atol=0)
    torch.testing.assert_close(stats.sum, torch.exp(z - z.amax(1, keepdim=True)).sum(1), rtol=1e-14, atol=0)
    assert isinstance(stats, RowStats)


@pytest.mark.parametrize("rows_per_chunk", [2, 3, 5])
def test_last_partial_chunk_equals_the_reference(rows_per_chunk):
    """N = 7 rows in chunks that leave a partial last chunk: every row's loss and gradient is the reference's."""
    x, w, y = _problem(7, 6, 11, 5)
    x.requires_grad_()
    w.requires_grad_()
    loss = AF.arcface_loss(x, w, y, 28.6, 16.0, reduction="none", rows_per_chunk=rows_per_chunk)
    xr, wr = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    truth = ref.arcface_loss(xr, wr, y, 28.6, 16.0, "none")
    weights = torch.arange(1.0, 8.0, dtype=torch.float64)
    (loss * weights).sum().backward()
    (truth * weights).sum().backward()
    torch.testing.assert_close(loss, truth, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(w.grad, wr.grad, rtol=1e-10, atol=1e-12)


@given(seed=st.integers(0, 10_000), margin=st.floats(5.0, 80.0))
def test_easy_margin_gradients_equal_the_equation(seed, margin):
    """Easy margin, written independently: phi = cos(theta + m) where cos(theta) > 0, else cos(theta)."""
    x, w, y = _problem(6, 4, 7, seed)
    x.requires_grad_()
    w.requires_grad_()
    AF.arcface_loss(x, w, y, margin, 10.0, easy_margin=True, reduction="sum").backward()
    xr, wr = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    cos = ref.cosines(xr, wr)
    target = cos[torch.arange(6), y]
    keep = target.abs() < 1 - 1e-9  # acos' gradient is infinite at +-1
    theta = torch.acos(target.clamp(-1, 1))
    phi = torch.where(target > 0, torch.cos(theta + math.radians(margin)), target)
    ref.margin_softmax_loss(cos, y, phi, 10.0, "sum").backward()
    if bool(keep.all()):
        torch.testing.assert_close(x.grad, xr.grad, rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(w.grad, wr.grad, rtol=1e-9, atol=1e-11)


def test_autocast_uses_the_exact_target_cosine():
    """Non-target centres orthogonal to every embedding have logit 0 in any precision, so the autocast loss
    differs from float32 only through the target logit: it must match float32 tightly (a target cosine read
    from the bfloat16 GEMM would be off by ~1e-3 * s)."""
    d, n = 16, 8
    x = torch.zeros(n, d)
    x[:, :8] = torch.randn(n, 8)
    w = torch.zeros(d, 5)
    w[8:, 1:] = torch.randn(8, 4)  # classes 1-4: orthogonal to every embedding
    w[:8, 0] = torch.randn(8)  # class 0: the target of every row
    y = torch.zeros(n, dtype=torch.int64)
    full = AF.arcface_loss(x, w, y, reduction="none")
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", dtype=dtype):
            reduced = AF.arcface_loss(x, w, y, reduction="none")
        torch.testing.assert_close(reduced, full, rtol=1e-6, atol=1e-5)


def test_compiled_loss_rejects_invalid_labels_and_leaves_w_untouched():
    loss_fn = ArcFaceLoss(10, 4)
    compiled = torch.compile(loss_fn)
    before = loss_fn.W.detach().clone()
    optimizer = torch.optim.SGD(loss_fn.parameters(), lr=1.0)
    for bad in (10, -1):
        with pytest.raises(ValueError, match=f"labels must be in \\[0, num_classes=10\\), got label {bad}"):
            compiled(torch.randn(3, 4), torch.tensor([0, bad, 1])).backward()
        optimizer.step()
    assert torch.equal(loss_fn.W.detach(), before)
    unchecked = torch.compile(ArcFaceLoss(10, 4, validate=False))
    with pytest.raises(RuntimeError, match="labels must be in"):
        unchecked(torch.randn(3, 4), torch.tensor([0, 10, 1]))


def _engines_here() -> list[str]:
    """Every engine that can run CPU tensors here when asked for by name (Triton ones through the interpreter)."""
    x, w, _ = _problem(2, 3, 4, 0)
    return [
        name for name, engine in ops.ENGINES.items() if not engine.not_supported_reasons(x, w, Plan(""), requested=True)
    ]


@pytest.mark.parametrize("engine", _engines_here())
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_every_engine_runs_the_whole_pipeline(engine, reduction):
    """The same margins, reductions and gradients through each engine, against the float64 equations: the
    angular margin and the feature-norm margin (whose gradient also flows through the norm)."""
    x, w, y = _problem(7, 6, 19, 11)
    cases = [
        (
            lambda a, b: AF.arcface_loss(a, b, y, 28.6, 16.0, reduction=reduction, backend=engine),
            lambda a, b: ref.arcface_loss(a, b, y, 28.6, 16.0, reduction),
        ),
        (
            lambda a, b: AF.margin_loss(a, b, y, NormShiftMargin(0.3, 2.0), 8.0, reduction=reduction, backend=engine),
            lambda a, b: norm_shift_loss(a, b, y, 0.3, 2.0, 8.0, reduction),
        ),
    ]
    for ours, truth in cases:
        got, want = [], []
        for fn, out in ((ours, got), (truth, want)):
            a, b = x.clone().requires_grad_(), w.clone().requires_grad_()
            loss = fn(a, b)
            loss.backward(torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).reshape(loss.shape))
            out.extend([loss.detach(), a.grad, b.grad])
        for g, t in zip(got, want, strict=True):
            torch.testing.assert_close(g, t, rtol=1e-10, atol=1e-12)


def test_an_engine_is_chosen_by_the_same_option_everywhere():
    """Modules and the sharded option take ``backend`` by the engine's registered name."""
    assert set(ops.BACKENDS) == {"auto", *ops.ENGINES}
    for name in ops.ENGINES:
        assert ArcFaceLoss(5, 3, backend=name).backend == name


# Operators that launch no kernel on a GPU (allocations, views, metadata); everything else counts as a launch.
_NO_LAUNCH = {
    "aten::empty", "aten::empty_strided", "aten::empty_like", "aten::new_empty", "aten::new_empty_strided",
    "aten::view", "aten::_unsafe_view", "aten::as_strided", "aten::slice", "aten::select", "aten::t",
    "aten::transpose", "aten::expand", "aten::detach", "aten::alias", "aten::unsqueeze", "aten::squeeze",
    "aten::reshape", "aten::_reshape_alias", "aten::permute", "aten::lift_fresh", "aten::resolve_conj",
    "aten::resolve_neg", "aten::result_type", "aten::to", "aten::_local_scalar_dense", "aten::item", "aten::unbind",
}  # fmt: skip


def _launches_outside_the_engine(step) -> list[str]:
    """Kernel-launching ATen operators of one ``step()`` that do not run inside ``arcloss::margin_ce``."""
    from torch.profiler import ProfilerActivity, profile

    def inside_engine(event) -> bool:
        parent = event.cpu_parent
        while parent is not None:
            if "margin_ce" in parent.name:
                return True
            parent = parent.cpu_parent
        return False

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return [
        e.name
        for e in prof.events()
        if e.name.startswith("aten::")
        and not any(c.name.startswith("aten::") for c in e.cpu_children)
        and e.name not in _NO_LAUNCH
        and not inside_engine(e)
    ]


def test_operators_per_training_step_around_the_engine():
    """A training step (forward + backward, ``validate=False``) dispatches few small operators besides the engine:
    the target cosines, the margin on ``(N,)`` vectors, the reduction and the gradient accumulation. On a GPU each is
    a kernel launch; the whole-pass engine adds its own 6 (``tests/test_triton_whole_pass.py``)."""
    loss_fn = ArcFaceLoss(300, 32, validate=False)
    x, y = torch.randn(16, 32, requires_grad=True), torch.randint(0, 300, (16,))

    def step():
        loss_fn.W.grad, x.grad = None, None
        loss_fn(x, y).backward()

    launches = _launches_outside_the_engine(step)
    assert 10 <= len(launches) <= 45, sorted(launches)

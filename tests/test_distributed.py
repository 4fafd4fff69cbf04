"""Sharded losses against single-process ArcFaceLoss on the same global batch, in 2 and 4 gloo processes.

Every process builds the same global batch and the same single-process reference (the full ``W``
assembled from the shards); each then checks its own part of the sharded result. All checks of one world
size run in one spawn (process start-up dominates the cost).
"""

from __future__ import annotations

import copy
import datetime
import functools
import itertools
import math
import os
import pathlib
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from arcloss import ArcFaceLoss, CombinedMarginLoss, CosFaceLoss, MarginLoss, SubCenterArcFaceLoss, ops
from arcloss.distributed import (
    Sharding,
    class_range,
    gather_full_weight,
    load_full_weight_,
    shard_full_weight,
    to_single_process,
)
from arcloss.distributed.partial_fc import columns_of_labels, num_sampled_columns, sample_columns
from arcloss.recipes import MarginWarmup

from .toy_margin import NormShiftMargin, norm_shift_loss

D = 8
_SHARDING_OPTIONS = ("process_group", "sample_rate", "seed", "grad_reduction")


def sharded_loss(cls, *args, **kwargs):
    """``cls(*args, sharding=Sharding(...), **kwargs)`` with the sharding options taken from ``kwargs``."""
    options = {name: kwargs.pop(name) for name in _SHARDING_OPTIONS if name in kwargs}
    return cls(*args, sharding=Sharding(**options), **kwargs)


def ShardedArcFaceLoss(*args, **kwargs):
    return sharded_loss(ArcFaceLoss, *args, **kwargs)


def ShardedCosFaceLoss(*args, **kwargs):
    return sharded_loss(CosFaceLoss, *args, **kwargs)


def ShardedCombinedMarginLoss(*args, **kwargs):
    return sharded_loss(CombinedMarginLoss, *args, **kwargs)


F32 = {"rtol": 2e-5, "atol": 2e-6}
F64 = {"rtol": 1e-12, "atol": 1e-13}


def _global_batch(sizes: list[int], num_classes: int, world: int, dtype: torch.dtype, seed: int = 1234):
    """The same global batch on every process: ``(N, D)`` embeddings and labels, one label on every shard."""
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    x = torch.randn(n, D, generator=g, dtype=dtype)
    y = torch.randint(0, num_classes, (n,), generator=g)
    firsts = torch.tensor([class_range(num_classes, world, r)[0] for r in range(world)])
    y[: min(n, world)] = firsts[: min(n, world)].flip(0)  # each shard owns a label, rows spread over ranks
    return x, y


def _local(t: torch.Tensor, sizes: list[int], rank: int) -> torch.Tensor:
    start = sum(sizes[:rank])
    return t[start : start + sizes[rank]]


def _upstream(loss: torch.Tensor) -> torch.Tensor:
    """A non-uniform upstream gradient for per-row losses (the same on every rank), 1 for a scalar."""
    return torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).reshape(loss.shape)


def _reference(sharded, single_cls, x, y, **kwargs):
    """Single-process loss and gradients with the full W gathered from the shards."""
    kwargs.setdefault("margin", sharded.margin)
    ref = single_cls(sharded.num_classes, D, scale=sharded.scale, **kwargs).to(x.dtype)
    with torch.no_grad():
        ref.W.copy_(gather_full_weight(sharded, dst=None))
    x = x.clone().requires_grad_()
    loss = ref(x, y)
    loss.backward(_upstream(loss))
    return loss.detach(), x.grad, ref.W.grad


def _check_exact(
    rank, world, sizes, num_classes, dtype, tol, sharded_cls=ShardedArcFaceLoss, single=ArcFaceLoss, **kwargs
):
    """Loss, embedding gradients (grad_reduction='sum': exactly single-process) and this rank's W gradient."""
    x, y = _global_batch(sizes, num_classes, world, dtype)
    sharded = sharded_cls(num_classes, D, grad_reduction="sum", dtype=dtype, **kwargs)
    single_kwargs = {key: value for key, value in kwargs.items() if key in ("margin", "easy_margin", "reduction")}
    ref_loss, ref_gx, ref_gw = _reference(sharded, single, x, y, **single_kwargs)
    xl = _local(x, sizes, rank).clone().requires_grad_()
    loss = sharded(xl, _local(y, sizes, rank))
    loss.backward(_upstream(loss))
    torch.testing.assert_close(loss.detach(), ref_loss, **tol)
    torch.testing.assert_close(xl.grad, _local(ref_gx, sizes, rank), **tol)
    k = sharded.sub_centers
    columns = slice(sharded.sharding.start * k, sharded.sharding.stop * k)
    torch.testing.assert_close(sharded.W.grad, ref_gw[:, columns], **tol)


def _subcentre(*args, **kwargs):
    return SubCenterArcFaceLoss(*args, sub_centers=3, **kwargs)


def _check_engines(rank, world, sizes, num_classes):
    """Every engine that runs here (Triton ones through the interpreter) gives the sharded loss exactly."""
    for name, engine in ops.ENGINES.items():
        probe = torch.zeros(1, D, dtype=torch.float64)
        if not engine.not_supported_reasons(probe, probe.t(), ops.Plan(""), requested=True):
            _check_exact(rank, world, sizes, num_classes, torch.float64, F64, backend=name)


def _check_family(rank, world, sizes, num_classes):
    """reduction='none', easy margin and sub-centres equal the single-process losses."""
    _check_exact(rank, world, sizes, num_classes, torch.float64, F64, reduction="none")
    _check_exact(rank, world, sizes, num_classes, torch.float64, F64, easy_margin=True, margin=40.0)
    sharded_sub = functools.partial(sharded_loss, SubCenterArcFaceLoss, sub_centers=3)
    _check_exact(rank, world, sizes, num_classes, torch.float64, F64, sharded_cls=sharded_sub, single=_subcentre)


def _check_warmup(rank, world, sizes, num_classes):
    """MarginWarmup changes the sharded loss as it changes the single-process one, step by step."""
    x, y = _global_batch(sizes, num_classes, world, torch.float64)
    sharded = ShardedArcFaceLoss(num_classes, D, dtype=torch.float64)
    single = ArcFaceLoss(num_classes, D, dtype=torch.float64)
    with torch.no_grad():
        single.W.copy_(gather_full_weight(sharded, dst=None))
    schedules = [MarginWarmup(sharded, warmup_steps=4), MarginWarmup(single, warmup_steps=4)]
    seen = []
    for _ in range(3):
        loss = sharded(_local(x, sizes, rank), _local(y, sizes, rank))
        torch.testing.assert_close(loss, single(x, y), **F64)
        seen.append(loss.item())
        for schedule in schedules:
            schedule.step()
    assert seen[0] < seen[1] < seen[2], "the margin must grow the loss"
    exported = to_single_process(sharded, dst=None)
    assert exported is not None and exported.margin == single.margin == 28.6 * 3 / 4


def _check_norm_margin(rank, world, sizes, num_classes):
    """A margin reading the feature norm (one class, nothing else changed) is exact when sharded."""
    x, y = _global_batch(sizes, num_classes, world, torch.float64)
    sharded = sharded_loss(MarginLoss, num_classes, D, NormShiftMargin(0.3, 2.0), 8.0, dtype=torch.float64)
    sharded.sharding.grad_reduction = "sum"
    xl = _local(x, sizes, rank).clone().requires_grad_()
    loss = sharded(xl, _local(y, sizes, rank))
    loss.backward()
    w = gather_full_weight(sharded, dst=None).requires_grad_()
    xr = x.clone().requires_grad_()
    truth = norm_shift_loss(xr, w, y, 0.3, 2.0, 8.0, "mean")
    truth.backward()
    torch.testing.assert_close(loss.detach(), truth.detach(), **F64)
    torch.testing.assert_close(xl.grad, _local(xr.grad, sizes, rank), **F64)
    start, stop = sharded.sharding.start, sharded.sharding.stop
    torch.testing.assert_close(sharded.W.grad, w.grad[:, start:stop], **F64)


def _check_compile(rank, world, sizes, num_classes):
    """torch.compile of a sharded loss: the same loss and gradients as eager, and bad labels still raise."""
    x, y = _global_batch(sizes, num_classes, world, torch.float32)
    sharded = ShardedArcFaceLoss(num_classes, D)
    compiled = torch.compile(sharded)
    results = []
    for fn in (sharded, compiled):
        xl = _local(x, sizes, rank).clone().requires_grad_()
        loss = fn(xl, _local(y, sizes, rank))
        loss.backward()
        results.append((loss.detach(), xl.grad, sharded.W.grad))
        sharded.W.grad = None
    for eager, traced in zip(*results, strict=True):
        torch.testing.assert_close(traced, eager, **F32)
    bad = _local(y, sizes, rank).clone()
    if bad.numel():
        bad[0] = num_classes
    with pytest.raises(ValueError, match="labels must be in"):
        compiled(_local(x, sizes, rank), bad if rank == 0 else _local(y, sizes, rank))


def _check_ddp(rank, world, sizes, num_classes):
    """A Linear backbone under DDP (averaging) gets the single-process gradient; embeddings get world x."""
    x_in, y = _global_batch(sizes, num_classes, world, torch.float32, seed=99)
    x_in = x_in[:, :6]
    torch.manual_seed(7)
    backbone = nn.Linear(6, D)
    model = DistributedDataParallel(copy.deepcopy(backbone))
    sharded = ShardedArcFaceLoss(num_classes, D)
    ref = ArcFaceLoss(num_classes, D)
    with torch.no_grad():
        ref.W.copy_(gather_full_weight(sharded, dst=None))
    emb_ref = backbone(x_in)
    emb_ref.retain_grad()
    ref_loss = ref(emb_ref, y)
    ref_loss.backward()

    emb = model(_local(x_in, sizes, rank))
    emb.retain_grad()
    loss = sharded(emb, _local(y, sizes, rank))
    loss.backward()
    torch.testing.assert_close(loss.detach(), ref_loss.detach(), **F32)
    torch.testing.assert_close(emb.grad, world * _local(emb_ref.grad, sizes, rank), **F32)
    torch.testing.assert_close(model.module.weight.grad, backbone.weight.grad, **F32)
    torch.testing.assert_close(model.module.bias.grad, backbone.bias.grad, **F32)
    torch.testing.assert_close(sharded.W.grad, ref.W.grad[:, sharded.sharding.start : sharded.sharding.stop], **F32)


def _check_partial_fc(rank, world, sizes, num_classes):
    """Sampled step == single-process loss over the union of sampled classes; W.grad zero elsewhere."""
    x, y = _global_batch(sizes, num_classes, world, torch.float64)
    sharded = ShardedArcFaceLoss(num_classes, D, sample_rate=0.25, seed=5, grad_reduction="sum", dtype=torch.float64)
    full = gather_full_weight(sharded, dst=None)
    xl = _local(x, sizes, rank).clone().requires_grad_()
    loss = sharded(xl, _local(y, sizes, rank))
    loss.backward()
    mine = sharded.sharding.last_sampled_classes
    parts: list = [None] * world
    dist.all_gather_object(parts, mine)
    cols = torch.cat(parts)
    assert torch.isin(y, cols).all(), "every positive class must be sampled"
    assert mine.numel() == max(
        num_sampled_columns(sharded.sharding.local_classes, 0.25),
        int(((y >= sharded.sharding.start) & (y < sharded.sharding.stop)).unique().numel()),
    )

    ref = ArcFaceLoss(cols.numel(), D, dtype=torch.float64)
    with torch.no_grad():
        ref.W.copy_(full[:, cols])
    xr = x.clone().requires_grad_()
    ref_loss = ref(xr, torch.searchsorted(cols, y))
    ref_loss.backward()
    torch.testing.assert_close(loss.detach(), ref_loss.detach(), **F64)
    torch.testing.assert_close(xl.grad, _local(xr.grad, sizes, rank), **F64)
    offset = sum(p.numel() for p in parts[:rank])
    local_cols = mine - sharded.sharding.start
    torch.testing.assert_close(sharded.W.grad[:, local_cols], ref.W.grad[:, offset : offset + mine.numel()], **F64)
    unsampled = torch.ones(sharded.sharding.local_classes, dtype=torch.bool)
    unsampled[local_cols] = False
    assert bool((sharded.W.grad[:, unsampled] == 0).all())

    # A fresh module with the same seed samples the same classes; the next step samples others.
    again = ShardedArcFaceLoss(num_classes, D, sample_rate=0.25, seed=5)
    again(xl.detach().float(), _local(y, sizes, rank))
    assert torch.equal(again.sharding.last_sampled_classes, mine)
    again(xl.detach().float(), _local(y, sizes, rank))
    assert not torch.equal(again.sharding.last_sampled_classes, mine)
    # Evaluation uses every class.
    again.eval()
    eval_loss = again(xl.detach().float(), _local(y, sizes, rank))
    torch.testing.assert_close(eval_loss, _full_loss(again, x.float(), y), **F32)


def _full_loss(sharded, x, y):
    ref = ArcFaceLoss(sharded.num_classes, D)
    with torch.no_grad():
        ref.W.copy_(gather_full_weight(sharded, dst=None))
    return ref(x, y).detach()


def _check_empty_global(world):
    sharded = ShardedArcFaceLoss(4 * world + 1, D)
    x = torch.zeros(0, D, requires_grad=True)
    loss = sharded(x, torch.zeros(0, dtype=torch.int64))
    loss.backward()
    assert loss.item() == 0.0
    assert bool((sharded.W.grad == 0).all())


def _check_invalid_on_one_rank(rank, world):
    """A bad label on the last rank raises on every rank (no rank is left waiting in a collective)."""
    sharded = ShardedArcFaceLoss(2 * world, D)
    labels = torch.tensor([2 * world if rank == world - 1 else 0])
    with pytest.raises(ValueError, match=rf"labels must be in \[0, num_classes={2 * world}\), got label {2 * world}"):
        sharded(torch.randn(1, D), labels)
    x = torch.randn(2, D)
    x[1, 0] = float("nan") if rank == 0 else 0.0
    with pytest.raises(ValueError, match="embeddings contain NaN or Inf"):
        sharded(x, torch.tensor([0, 1]))
    # Without validation a label no shard owns still raises on every rank (not a silent zero row loss).
    unchecked = ShardedArcFaceLoss(2 * world, D, validate=False)
    with pytest.raises(RuntimeError, match="labels must be in"):
        unchecked(torch.randn(1, D), labels)
    # Shape and type errors on one rank, which no collective could carry, raise on every rank.
    width = D + 1 if rank == world - 1 else D
    with pytest.raises(ValueError, match=f"rank {world - 1}'s input: embeddings have width {D + 1}"):
        sharded(torch.randn(2, width), torch.tensor([0, 1]))
    bad_labels = torch.tensor([True, False]) if rank == 0 else torch.tensor([0, 1])
    with pytest.raises(TypeError, match="rank 0's input: labels must be an integer tensor"):
        sharded(torch.randn(2, D), bad_labels)
    dtype = torch.float64 if rank == 0 else torch.float32
    with pytest.raises(TypeError, match="embeddings must have the same dtype on every rank"):
        ShardedArcFaceLoss(2 * world, D, dtype=dtype)(torch.randn(2, D, dtype=dtype), torch.tensor([0, 1]))


def _check_checkpoint(rank, world, num_classes, expected_full: torch.Tensor, tmp: pathlib.Path):
    sharded = ShardedArcFaceLoss(num_classes, D, seed=3, sample_rate=0.5)
    full = gather_full_weight(sharded, dst=0)
    everywhere = gather_full_weight(sharded, dst=None)
    assert torch.equal(everywhere, expected_full), "the default init must not depend on the world size"
    assert (full is None) == (rank != 0)
    assert torch.equal(shard_full_weight(everywhere, world, rank), sharded.W.detach())
    subcentre = sharded_loss(SubCenterArcFaceLoss, num_classes, D, sub_centers=3, seed=3)
    assert torch.equal(shard_full_weight(gather_full_weight(subcentre, dst=None), world, rank, 3), subcentre.W.detach())

    x, y = _global_batch([3] * world, num_classes, world, torch.float32)
    sharded(_local(x, [3] * world, rank), _local(y, [3] * world, rank))  # advance the sampling step
    torch.save(sharded.state_dict(), tmp / f"shard{rank}.pt")
    dist.barrier()
    restored = ShardedArcFaceLoss(num_classes, D, seed=11, sample_rate=0.5)
    restored.load_state_dict(torch.load(tmp / f"shard{rank}.pt"))
    assert torch.equal(restored.W, sharded.W) and restored.sharding.sampling_step == sharded.sharding.sampling_step == 1
    other = (rank + 1) % world
    if (
        class_range(num_classes, world, other)[1] - class_range(num_classes, world, other)[0]
        == sharded.sharding.local_classes
    ):
        with pytest.raises(ValueError, match="reshard"):
            ShardedArcFaceLoss(num_classes, D).load_state_dict(torch.load(tmp / f"shard{other}.pt"))

    # sharded -> full -> sharded, and the full W into a plain ArcFaceLoss.
    fresh = load_full_weight_(ShardedArcFaceLoss(num_classes, D, seed=12), everywhere)
    assert torch.equal(fresh.W, sharded.W)
    single = to_single_process(sharded, dst=0)
    sharded.eval()
    loss = sharded(_local(x, [3] * world, rank), _local(y, [3] * world, rank))
    if rank == 0:
        plain = ArcFaceLoss(num_classes, D)
        plain.load_state_dict({"W": full})
        torch.testing.assert_close(plain(x, y), loss.detach(), **F32)
        assert type(single) is ArcFaceLoss and single.sharding is None and torch.equal(single.W, full)
    else:
        assert single is None


def _worker(rank: int, world: int, tmp: str) -> None:
    torch.set_num_threads(1)
    tmp_path = pathlib.Path(tmp)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{tmp_path / 'init'}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        even, uneven = 3 * world, 3 * world + 1
        sizes = [5, 0, 3, 4][:world] if world == 4 else [5, 3]
        with_empty = [5, 0] if world == 2 else sizes
        _check_exact(rank, world, sizes, even, torch.float32, F32)
        _check_exact(rank, world, with_empty, uneven, torch.float32, F32)
        _check_exact(rank, world, with_empty, uneven, torch.float64, F64, rows_per_chunk=2)
        _check_exact(
            rank,
            world,
            sizes,
            uneven,
            torch.float64,
            F64,
            margin=0.4,
            sharded_cls=ShardedCosFaceLoss,
            single=CosFaceLoss,
        )
        _check_engines(rank, world, sizes, uneven)
        _check_family(rank, world, sizes, uneven)
        _check_warmup(rank, world, with_empty, uneven)
        _check_norm_margin(rank, world, with_empty, uneven)
        _check_compile(rank, world, sizes, uneven)
        _check_ddp(rank, world, with_empty, uneven)
        _check_partial_fc(rank, world, with_empty, 40 * world + 3)
        _check_empty_global(world)
        _check_invalid_on_one_rank(rank, world)
        _check_checkpoint(rank, world, 10 * world + 1, torch.load(tmp_path / "expected_full.pt"), tmp_path)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 4])
def test_sharded_matches_single_process(world: int, tmp_path: pathlib.Path, monkeypatch) -> None:
    expected = ShardedArcFaceLoss(10 * world + 1, D, seed=3).W.detach()  # world size 1: no process group
    torch.save(expected, tmp_path / "expected_full.pt")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    if sys.platform.startswith("linux") and "GLOO_SOCKET_IFNAME" not in os.environ:
        monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # containers whose hostname does not resolve
    mp.spawn(_worker, args=(world, str(tmp_path)), nprocs=world, join=True)


def test_single_process_equals_arcface() -> None:
    sharded = ShardedArcFaceLoss(37, D, margin=20.0, scale=30.0)
    ref = ArcFaceLoss(37, D, margin=20.0, scale=30.0)
    with torch.no_grad():
        ref.W.copy_(sharded.W)
    x = torch.randn(11, D, requires_grad=True)
    y = torch.randint(0, 37, (11,))
    loss = sharded(x, y)
    loss.backward()
    xr = x.detach().clone().requires_grad_()
    ref_loss = ref(xr, y)
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(x.grad, xr.grad)
    torch.testing.assert_close(sharded.W.grad, ref.W.grad)


@pytest.mark.parametrize("num_classes", [1, 7, 8, 1000])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_class_range_partitions(num_classes: int, world: int) -> None:
    if num_classes < world:
        pytest.skip("fewer classes than ranks is rejected")
    ranges = [class_range(num_classes, world, r) for r in range(world)]
    assert ranges[0][0] == 0 and ranges[-1][1] == num_classes
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert max(b - a for a, b in ranges) - min(b - a for a, b in ranges) <= 1
    assert max(b - a for a, b in ranges) == math.ceil(num_classes / world)


def test_sample_columns_keeps_positives_and_is_seeded() -> None:
    positive = torch.tensor([3, 97, 42])
    cols = sample_columns(positive, 100, 0.1, seed=1, step=0, rank=0)
    assert cols.numel() == 10 and bool(torch.isin(positive, cols).all())
    assert torch.equal(cols, cols.sort().values) and cols.unique().numel() == 10
    assert torch.equal(cols, sample_columns(positive, 100, 0.1, seed=1, step=0, rank=0))
    assert not torch.equal(cols, sample_columns(positive, 100, 0.1, seed=1, step=1, rank=0))
    many = torch.arange(0, 100, 5)
    assert torch.equal(sample_columns(many, 100, 0.1, seed=1, step=0, rank=0), many)
    labels = torch.tensor([10 + 3, 10 + 42, 5, 10 + 50])
    assert columns_of_labels(labels, 10, cols, 100)[:3].tolist()[2] == -1
    assert int(columns_of_labels(labels, 10, cols, 100)[0]) == int((cols == 3).nonzero())


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        ShardedArcFaceLoss(10, D, sample_rate=0.0)
    with pytest.raises(ValueError, match="grad_reduction"):
        ShardedArcFaceLoss(10, D, grad_reduction="max")
    with pytest.raises(ValueError, match="labels"):
        ShardedArcFaceLoss(10, D)(torch.randn(2, D), torch.tensor([0, 10]))


def test_scaled_loss_scales_gradients() -> None:
    sharded = ShardedArcFaceLoss(20, D, grad_reduction="sum")
    x = torch.randn(6, D, requires_grad=True)
    y = torch.randint(0, 20, (6,))
    sharded(x, y).backward()
    gx, gw = x.grad.clone(), sharded.W.grad.clone()
    x.grad, sharded.W.grad = None, None
    (2.5 * sharded(x, y)).backward()
    torch.testing.assert_close(x.grad, 2.5 * gx)
    torch.testing.assert_close(sharded.W.grad, 2.5 * gw)


def test_partial_fc_optimizer_state_is_per_column_history() -> None:
    """The documented (insightface) behaviour: zero gradient outside the sampled columns, persistent state.

    Plain SGD leaves unsampled columns untouched; with momentum a column sampled at step 1 but not at step 2
    moves at step 2 by ``lr * momentum * g1`` and a column sampled at both has ``buf = momentum * g1 + g2``.
    """
    lr, mu = 0.5, 0.9
    for momentum in (0.0, mu):
        sharded = ShardedArcFaceLoss(400, D, scale=4.0, sample_rate=0.25, seed=2)
        opt = torch.optim.SGD(sharded.parameters(), lr=lr, momentum=momentum)
        grads, samples, before = [], [], []
        for step in range(2):
            y = torch.randint(0, 400, (4,), generator=torch.Generator().manual_seed(step))
            before.append(sharded.W.detach().clone())
            sharded(torch.randn(4, D), y).backward()
            grads.append(sharded.W.grad.clone())
            samples.append(sharded.sharding.last_sampled_classes)
            opt.step()
            opt.zero_grad(set_to_none=True)
        out = torch.ones(400, dtype=torch.bool)
        out[samples[1]] = False
        assert bool((grads[1][:, out] == 0).all())
        moved = sharded.W.detach() - before[1]
        if momentum == 0.0:
            assert bool((moved[:, out] == 0).all())
            continue
        dropped = samples[0][~torch.isin(samples[0], samples[1])]
        both = samples[1][torch.isin(samples[1], samples[0])]
        assert dropped.numel() and both.numel()
        assert bool((moved[:, dropped] != 0).all())
        torch.testing.assert_close(moved[:, out], -lr * mu * grads[0][:, out])
        buf = opt.state[sharded.W]["momentum_buffer"]
        torch.testing.assert_close(buf[:, both], mu * grads[0][:, both] + grads[1][:, both])


@pytest.mark.parametrize(
    ("sharded", "single_type"),
    [
        (ShardedArcFaceLoss(30, D, margin=20.0, scale=16.0), ArcFaceLoss),
        (ShardedCosFaceLoss(30, D, margin=0.2, scale=16.0), CosFaceLoss),
        (ShardedCombinedMarginLoss(30, D, m1=1.2, m2=10.0, m3=0.1, scale=16.0), CombinedMarginLoss),
    ],
)
def test_to_single_process_exports_the_same_loss(sharded, single_type) -> None:
    single = to_single_process(sharded)
    assert type(single) is single_type and torch.equal(single.W, sharded.W)
    x, y = torch.randn(9, D), torch.randint(0, 30, (9,))
    torch.testing.assert_close(single(x, y), sharded(x, y))

"""The Triton chunk softmax (:mod:`arcloss.ops.softmax_triton`) against the PyTorch one, which is the specification.

On a machine without CUDA the kernels run on CPU tensors through Triton's interpreter, so shapes are tiny; a
forced small ``block_size`` and ``col_splits`` exercise the multi-tile loop, the masked last tile and the
combination of per-split partial statistics.
"""

from __future__ import annotations

import os

import torch

# Must precede the first import of arcloss.ops.softmax_triton: triton.jit reads it when the kernels are defined.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("triton")

import arcloss
from arcloss.functional import arcface_loss
from arcloss.ops import softmax_torch as _softmax_torch
from arcloss.ops import softmax_triton as tri
from arcloss.ops.chunk_softmax import ChunkTargets, RowStats

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SCALE = 64.0
# (block_size, col_splits): heuristic; several tiles in one program; several programs per row (with a
# partial last program); block larger than C.
LAUNCHES = [(None, None), (16, 1), (16, 2), (8, 3), (128, 1)]
# (K, C, labels): C not a multiple of the block, labels -1 and at both ends; one row; C a multiple of 16.
SHAPES = [
    (5, 70, [3, -1, 69, 0, -1]),
    (1, 37, [36]),
    (1, 9, [-1]),
    (3, 64, [63, 5, -1]),
]


def rtol_of(dtype: torch.dtype) -> float:
    """Elementwise tolerance against the PyTorch implementation: both compute the logits with the same
    rounding, then differ by a few ulp of ``exp`` and by the summation order (C <= 70 terms)."""
    return 1e-5 if dtype == torch.float32 else 1e-12


def make_chunk(k: int, c: int, labels: list[int], dtype: torch.dtype, seed: int = 0) -> dict[str, torch.Tensor]:
    """Realistic chunk inputs: ``dots = cos * |W_j|``, ``col_scale = s / |W_j|``, ``target_logit = s * phi``."""
    g = torch.Generator().manual_seed(seed)
    w_norm = 0.5 + 1.5 * torch.rand(c, generator=g, dtype=torch.float64)
    cos = 2 * torch.rand(k, c, generator=g, dtype=torch.float64) - 1
    target_cos = 2 * torch.rand(k, generator=g, dtype=torch.float64) - 1
    out = {
        "dots": cos * w_norm,
        "labels": torch.tensor(labels, dtype=torch.int64),
        "col_scale": SCALE / w_norm,
        "target_logit": SCALE * torch.cos(torch.arccos(target_cos) + 0.5),
        "target_slope": 0.5 + torch.rand(k, generator=g, dtype=torch.float64),
    }
    return {
        name: t.to(DEVICE) if t.dtype == torch.int64 else t.to(device=DEVICE, dtype=dtype) for name, t in out.items()
    }


def _targets(ch: dict[str, torch.Tensor]) -> ChunkTargets:
    return ChunkTargets(ch["labels"], ch["target_logit"], ch["target_slope"])


def torch_grad(ch: dict[str, torch.Tensor], global_stats: tuple[torch.Tensor, torch.Tensor] | None = None):
    """The specification: row stats and the final ``d loss / d dots`` (row factor applied) from PyTorch."""
    buf = ch["dots"].clone()
    targets = ChunkTargets(ch["labels"], ch["target_logit"], ch["target_slope"])
    row_max, row_sum = _softmax_torch.row_stats(buf, ch["col_scale"], targets)
    total = None if global_stats is None else RowStats(*global_stats)
    factor = _softmax_torch.logit_grad_(buf, ch["col_scale"], targets, RowStats(row_max, row_sum), total)
    return row_max, row_sum, buf if factor is None else buf * factor[:, None]


def triton_grad(ch, global_stats=None, block_size=None, col_splits=None, buf=None):
    """The same with the Triton implementation; ``buf`` (a view holding the dots) may be given."""
    launch = {"block_size": block_size, "col_splits": col_splits}
    buf = ch["dots"].clone() if buf is None else buf
    targets = ChunkTargets(ch["labels"], ch["target_logit"], ch["target_slope"])
    row_max, row_sum = tri.row_stats(buf, ch["col_scale"], targets, **launch)
    torch.testing.assert_close(buf, ch["dots"], rtol=0, atol=0, msg="row_stats must leave the dots untouched")
    total = None if global_stats is None else RowStats(*global_stats)
    local = RowStats(row_max, row_sum)
    factor = tri.logit_grad_(buf, ch["col_scale"], targets, local, total, **launch)
    assert factor is None
    return row_max, row_sum, buf


def assert_grad_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    rtol = rtol_of(expected.dtype)
    # The target entry (p - 1) * slope * col_scale may be O(100) while p_ij * col_scale_j underflow to tiny values.
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * 1e-3 * expected.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("block_size", "col_splits"), LAUNCHES)
@pytest.mark.parametrize(("k", "c", "labels"), SHAPES)
def test_single_process_matches_torch(dtype, block_size, col_splits, k, c, labels):
    ch = make_chunk(k, c, labels, dtype)
    want_max, want_sum, want_grad = torch_grad(ch)
    got_max, got_sum, got_grad = triton_grad(ch, block_size=block_size, col_splits=col_splits)
    assert got_max.shape == got_sum.shape == (k,) and got_max.dtype == got_sum.dtype == dtype
    # Same products, same maximum: bit-identical.
    torch.testing.assert_close(got_max, want_max, rtol=0, atol=0)
    torch.testing.assert_close(got_sum, want_sum, rtol=rtol_of(dtype), atol=0)
    assert_grad_close(got_grad, want_grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("block_size", "col_splits"), [(None, None), (16, 2)])
def test_sharded_global_stats_match_torch(dtype, block_size, col_splits):
    """A shard whose global row max and sum (from other shards) differ from its local ones."""
    k, c, labels = SHAPES[0]
    ch = make_chunk(k, c, labels, dtype, seed=1)
    local_max, local_sum, _ = torch_grad(ch)
    g = torch.Generator().manual_seed(2)
    gmax = local_max + (3 * torch.rand(k, generator=g, dtype=torch.float64)).to(local_max)
    other = (1 + 5 * torch.rand(k, generator=g, dtype=torch.float64)).to(local_max)
    gsum = local_sum * torch.exp(local_max - gmax) + other
    want = torch_grad(ch, (gmax, gsum))[2]
    got = triton_grad(ch, (gmax, gsum), block_size=block_size, col_splits=col_splits)[2]
    assert_grad_close(got, want)
    # Sanity of the construction: the rows' probabilities sum to less than one (mass lives in other shards).
    p_sum = (torch.exp(got_logits(ch) - gmax[:, None]) / gsum[:, None]).sum(1)
    assert (p_sum < 1).all()


def got_logits(ch: dict[str, torch.Tensor]) -> torch.Tensor:
    z = ch["dots"] * ch["col_scale"]
    rows = (ch["labels"] >= 0).nonzero().squeeze(1)
    z[rows, ch["labels"][rows]] = ch["target_logit"][rows]
    return z


def test_gradient_row_identity():
    """Independent of the PyTorch module: with ``target_slope = col_scale_y`` (the derivative of the target logit
    in the target dot when it has no margin), ``g_ij / col_scale_j`` is ``p_ij`` off target
    and ``p_iy - 1`` at the target, and each row's ``p`` sums to one (single process), so the row sums of
    ``g / col_scale`` are 0 for rows with a target and 1 for rows without (labels -1)."""
    k, c, labels = SHAPES[0]
    ch = make_chunk(k, c, labels, torch.float64)
    ch["target_slope"] = ch["col_scale"][ch["labels"].clamp_min(0)]
    grad = triton_grad(ch, block_size=16, col_splits=2)[2]
    row = (grad / ch["col_scale"]).sum(1)
    want = (ch["labels"] < 0).to(row)
    torch.testing.assert_close(row, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_strided_buffer(dtype):
    """Rows of a larger buffer and a non-unit column stride: only the view's elements change."""
    k, c, labels = SHAPES[0]
    ch = make_chunk(k, c, labels, dtype, seed=3)
    want_max, want_sum, want_grad = torch_grad(ch)
    base = torch.full((k + 2, 2 * c), 7.0, dtype=dtype, device=DEVICE)
    view = base[1 : k + 1, ::2]
    view.copy_(ch["dots"])
    got_max, got_sum, _ = triton_grad(ch, buf=view, block_size=16)
    torch.testing.assert_close(got_max, want_max, rtol=0, atol=0)
    torch.testing.assert_close(got_sum, want_sum, rtol=rtol_of(dtype), atol=0)
    assert_grad_close(view, want_grad)
    untouched = torch.ones_like(base, dtype=torch.bool)
    untouched[1 : k + 1, ::2] = False
    assert (base[untouched] == 7.0).all()


@settings(max_examples=15, deadline=None)
@given(
    k=st.integers(1, 4),
    c=st.integers(1, 40),
    block_size=st.sampled_from([4, 8, 64]),
    col_splits=st.integers(1, 4),
    data=st.data(),
)
def test_random_shapes_match_torch(k, c, block_size, col_splits, data):
    labels = data.draw(st.lists(st.integers(-1, c - 1), min_size=k, max_size=k))
    ch = make_chunk(k, c, labels, torch.float64, seed=data.draw(st.integers(0, 2**16)))
    want_max, want_sum, want_grad = torch_grad(ch)
    got_max, got_sum, got_grad = triton_grad(ch, block_size=block_size, col_splits=col_splits)
    torch.testing.assert_close(got_max, want_max, rtol=0, atol=0)
    torch.testing.assert_close(got_sum, want_sum, rtol=1e-12, atol=0)
    assert_grad_close(got_grad, want_grad)


def test_launch_config():
    cfg = tri.launch_config(3, 70, torch.float32, torch.device("cpu"))
    assert cfg == tri.LaunchConfig(block_size=128, num_warps=4, tiles_per_prog=1, splits=1)
    big32 = tri.launch_config(4, 10**6, torch.float32, torch.device("cpu"))
    big64 = tri.launch_config(4, 10**6, torch.float64, torch.device("cpu"))
    assert (big32.block_size, big32.num_warps) == (8192, 16) and (big64.block_size, big64.num_warps) == (4096, 16)
    assert big32.splits == 1 and big32.tiles_per_prog == math.ceil(10**6 / 8192)
    # 5 tiles over 3 requested splits: 2 + 2 + 1 tiles; over 4: 2 + 2 + 1, the empty fourth program dropped.
    assert tri.launch_config(2, 70, torch.float32, torch.device("cpu"), block_size=16, col_splits=3)[2:] == (2, 3)
    assert tri.launch_config(2, 70, torch.float32, torch.device("cpu"), block_size=16, col_splits=4)[2:] == (2, 3)
    assert tri.launch_config(2, 70, torch.float32, torch.device("cpu"), block_size=16, col_splits=99)[2:] == (1, 5)
    with pytest.raises(ValueError, match="power of two"):
        tri.launch_config(2, 70, torch.float32, torch.device("cpu"), block_size=24)
    with pytest.raises(ValueError, match="col_splits"):
        tri.launch_config(2, 70, torch.float32, torch.device("cpu"), col_splits=0)


def test_rejects_bad_inputs():
    ch = make_chunk(2, 10, [1, -1], torch.float32)
    with pytest.raises(TypeError, match="float32 or float64"):
        tri.row_stats(ch["dots"].half(), ch["col_scale"], _targets(ch))
    with pytest.raises(ValueError, match="col_scale"):
        tri.row_stats(ch["dots"], ch["col_scale"][:-1], _targets(ch))
    with pytest.raises(ValueError, match="labels"):
        tri.row_stats(ch["dots"], ch["col_scale"], _targets(ch)._replace(labels=ch["labels"][:1]))
    empty = tri.row_stats(
        ch["dots"][:0], ch["col_scale"], ChunkTargets(ch["labels"][:0], ch["target_logit"][:0], ch["target_slope"][:0])
    )
    assert empty[0].shape == empty[1].shape == (0,)


def _loss_and_grads(x, w, labels, reduction, backend):
    x = x.detach().requires_grad_()
    w = w.detach().requires_grad_()
    loss = arcface_loss(x, w, labels, reduction=reduction, backend=backend, rows_per_chunk=2)
    upstream = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype, device=loss.device).reshape(loss.shape)
    loss.backward(upstream)
    return loss.detach(), x.grad, w.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_arcface_loss_end_to_end(dtype, reduction, monkeypatch):
    """``arcface_loss(backend="triton")`` against ``backend="torch"``: chunks of 2, 2 and 1 rows, 16-byte tiles
    (several per row), C = 70 not a multiple of the tile; float32 judged against PyTorch's own float32 error."""
    monkeypatch.setattr(tri, "MAX_TILE_BYTES", 64)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(5, 8, generator=g, dtype=torch.float64)
    w = torch.randn(8, 70, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 69, 17, 17, 42], device=DEVICE)
    x, w = x.to(DEVICE), w.to(DEVICE)
    got = _loss_and_grads(x.to(dtype), w.to(dtype), labels, reduction, "triton")
    want = _loss_and_grads(x.to(dtype), w.to(dtype), labels, reduction, "torch")
    assert got[0].shape == want[0].shape == ((5,) if reduction == "none" else ())
    if dtype == torch.float64:
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12 * b.abs().max().item())
        return
    exact = _loss_and_grads(x.to(dtype).double(), w.to(dtype).double(), labels, reduction, "torch")
    eps = torch.finfo(torch.float32).eps
    for name, a, b, ref in zip(("loss", "grad x", "grad w"), got, want, exact, strict=True):
        assert a.dtype == b.dtype
        err_triton = (a.double() - ref).abs().max().item()
        err_torch = (b.double() - ref).abs().max().item()
        assert err_triton <= 2 * err_torch + 8 * eps * ref.abs().max().item(), (name, err_triton, err_torch)


def test_cpu_without_interpreter_raises():
    """Without TRITON_INTERPRET, CPU tensors are refused with a clear message, both by the backend resolution
    and by the kernels' launchers (whose kernels were then compiled for CUDA)."""
    script = textwrap.dedent(
        """
        import torch
        from arcloss.functional import arcface_loss
        from arcloss.ops import softmax_triton as tri
        from arcloss.ops.chunk_softmax import ChunkTargets
        x, w, y = torch.randn(3, 4), torch.randn(4, 6), torch.tensor([0, 1, 5])
        try:
            arcface_loss(x, w, y, backend="triton")
        except ValueError as exc:
            print("resolve:", exc)
        try:
            tri.row_stats(torch.zeros(3, 6), torch.ones(6), ChunkTargets(y, torch.ones(3), torch.ones(3)))
        except RuntimeError as exc:
            print("launch:", exc)
        """
    )
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    src = str(Path(arcloss.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2, done.stdout
    assert lines[0].startswith("resolve:") and "TRITON_INTERPRET=1" in lines[0]
    assert lines[1].startswith("launch:") and "TRITON_INTERPRET=1" in lines[1]

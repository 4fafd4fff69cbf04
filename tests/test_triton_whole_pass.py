"""The whole-pass fused Triton engine (:mod:`arcloss.ops.triton_whole_pass`) against a dense float64 reference.

The reference is independent of arcloss: it builds the ``(N, C)`` logits, replaces the target column by the
given target logit (with the given slope in ``cos_iy``, through a ``detach`` trick), and differentiates
``sum_i row_weight_i * loss_i`` with autograd. Without CUDA the kernels run through Triton's interpreter, so
shapes are tiny; a monkeypatched :func:`choose_tiles` with 16-wide tiles makes every dimension span several
tiles (rows, classes, the D loop of the dot, the D chunks of the gradient accumulators) and two class splits.
"""

from __future__ import annotations

import os

import torch

# Must precede the first import of triton: triton.jit reads it when the kernels are defined.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import math
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

pytest.importorskip("triton")

import triton

from arcloss.ops import triton_whole_pass as wp

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SCALE = 64.0
MARGIN = 0.5
SMALL_TILES = wp.Tiles(block_m=16, block_n=16, block_k=16, block_d=16, col_splits=2, num_warps=4)
# (N, C, D, labels, tiles): not multiples of the tiles, labels -1 and at both ends of [0, C); the second case
# spans 2 row tiles, 3 class tiles in 2 splits, 2 chunks of D in the dot and 2 in the accumulators.
CASES = {
    "one-tile": (5, 37, 24, [0, 36, -1, 5, 17], None),
    "multi-tile": (
        20,
        37,
        20,
        [-1, 7, 14, 36, 0, -1, 5, 12, 19, 26, -1, 33, 3, 10, 17, -1, 24, 31, 1, 36],
        SMALL_TILES,
    ),
}


def make_case(n: int, c: int, d: int, labels: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    """float64 inputs: embeddings and centres of varied norms, rows 1 and 2 within ~1e-4 of ``+W_y`` and
    ``-W_y`` (cosines near +-1), ArcFace target logits and slopes (CosFace ones near +-1, where ArcFace's
    slope ``sin(theta + m) / sin(theta)`` is unbounded), non-uniform row weights."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * (0.5 + 2 * torch.rand(n, 1, generator=g))
    w = torch.randn(d, c, generator=g, dtype=torch.float64) * (0.5 + 2 * torch.rand(1, c, generator=g))
    lab = torch.tensor(labels, dtype=torch.int64)
    for row, sign in ((1, 1.0), (2, -1.0)):
        if row < n and lab[row] >= 0:
            x[row] = sign * 3 * w[:, lab[row]] + 1e-4 * torch.randn(d, generator=g, dtype=torch.float64)
    cos = F.normalize(x, dim=1) @ F.normalize(w, dim=0)
    cos_y = torch.where(lab >= 0, cos.gather(1, lab.clamp_min(0)[:, None])[:, 0], 2 * torch.rand(n, generator=g) - 1)
    theta = torch.arccos(cos_y.clamp(-1, 1))
    arc = theta.sin() > 0.1
    t = torch.where(arc, torch.cos(theta + MARGIN), cos_y - 0.35) * SCALE
    slope = torch.where(arc, torch.sin(theta + MARGIN) / theta.sin().clamp_min(0.1), torch.ones_like(cos_y)) * SCALE
    rw = 0.2 + torch.rand(n, generator=g, dtype=torch.float64)
    return {"x": x, "weight": w, "labels": lab, "target_logit": t, "target_slope": slope, "row_weight": rw}


def cast(case: dict[str, torch.Tensor], x_dtype: torch.dtype, w_dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The case on ``DEVICE`` with ``x`` in ``x_dtype``, ``weight`` in ``w_dtype`` and the row vectors in the
    accumulation dtype."""
    acc = torch.float64 if torch.float64 in (x_dtype, w_dtype) else torch.float32
    dtypes = {"x": x_dtype, "weight": w_dtype, "labels": torch.int64}
    return {name: t.to(device=DEVICE, dtype=dtypes.get(name, acc)) for name, t in case.items()}


def reference(case: dict[str, torch.Tensor], dtype: torch.dtype = torch.float64):
    """Dense ``(loss, grad_x, grad_w, grad_target)`` by autograd in ``dtype``; ``grad_target`` of a row with
    label -1 is the engine's convention ``rw (exp(t - logsumexp) - 1)`` (its ``t`` is in no column)."""
    x = case["x"].to(dtype).detach().requires_grad_()
    w = case["weight"].to(dtype).detach().requires_grad_()
    t = case["target_logit"].to(dtype).detach().requires_grad_()
    slope, rw, labels = case["target_slope"].to(dtype), case["row_weight"].to(dtype), case["labels"]
    cos = (x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)) @ (w / w.norm(dim=0, keepdim=True).clamp_min(1e-12))
    has = labels >= 0
    cols = labels.clamp_min(0)
    cos_y = cos.gather(1, cols[:, None])[:, 0]
    z_y = t + slope * (cos_y - cos_y.detach())  # value t, slope d z_y / d cos_y = target_slope
    is_target = F.one_hot(cols, cos.shape[1]).bool() & has[:, None]
    lse = torch.logsumexp(torch.where(is_target, z_y[:, None], SCALE * cos), dim=1)
    loss = lse - torch.where(has, z_y, t)
    (loss * rw).sum().backward()
    assert x.grad is not None and w.grad is not None and t.grad is not None
    grad_t = torch.where(has, t.grad, rw * (torch.exp(t - lse) - 1)).detach()
    return loss.detach(), x.grad, w.grad, grad_t


def run(case: dict[str, torch.Tensor], **kwargs):
    options = {"want_grad_x": True, "want_grad_w": True, "matmul_dtype": None, **kwargs}
    return wp.whole_pass_margin_ce(
        case["x"], case["weight"], case["labels"], case["target_logit"], case["target_slope"], case["row_weight"],
        SCALE, **options,
    )  # fmt: skip


@pytest.fixture
def tiles(monkeypatch) -> Callable[[wp.Tiles | None], None]:
    def use(choice: wp.Tiles | None) -> None:
        if choice is not None:
            monkeypatch.setattr(wp, "choose_tiles", lambda *args: choice)

    return use


def assert_fp64_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """float64 agreement up to rounding: an entry that is exactly 0 by cancellation (the embedding gradient at
    D = 1, radial by construction) keeps rounding noise of the O(SCALE) terms that cancel (~1e-12)."""
    assert actual.dtype == expected.dtype == torch.float64
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-11 * max(1.0, expected.abs().max().item()))


NAMES = ("loss", "grad_x", "grad_w", "grad_target")


@pytest.mark.parametrize("name", CASES)
def test_float64_matches_reference(name, tiles):
    n, c, d, labels, choice = CASES[name]
    tiles(choice)
    case = cast(make_case(n, c, d, labels), torch.float64, torch.float64)
    got = run(case)
    for what, a, b in zip(NAMES, got, reference(case), strict=True):
        assert a is not None, what
        assert_fp64_close(a, b)


@pytest.mark.parametrize("name", CASES)
def test_float32_within_torch_float32_error(name, tiles):
    """float32 inputs, float32 accumulation and IEEE float32 dots: the error against the float64 reference of
    the same (float32-rounded) inputs is within a small multiple of dense PyTorch float32's own error."""
    n, c, d, labels, choice = CASES[name]
    tiles(choice)
    case = cast(make_case(n, c, d, labels, seed=1), torch.float32, torch.float32)
    got = run(case)
    exact = reference(case)
    torch_fp32 = reference(case, torch.float32)
    eps = torch.finfo(torch.float32).eps
    for what, a, ref, b in zip(NAMES, got, exact, torch_fp32, strict=True):
        assert a is not None and a.dtype == torch.float32, what
        err = (a.double() - ref).abs().max().item()
        err_torch = (b.double() - ref).abs().max().item()
        assert err <= 4 * err_torch + 8 * eps * ref.abs().max().item(), (what, err, err_torch)


# bfloat16 dots are checked numerically on CUDA only: the interpreter's tl.dot does not emulate them reliably.
REDUCED = [(torch.float16, 1e-2)] + ([(torch.bfloat16, 3e-2)] if torch.cuda.is_available() else [])


@pytest.mark.parametrize(("dtype", "rtol"), REDUCED)
def test_reduced_precision_matmul(dtype, rtol, tiles):
    """Embeddings and dots in a 2-byte dtype (float32 W cast in registers), float32 embeddings with 2-byte dots
    (x copied to the dot dtype once) and float64 inputs with float32 dots: output dtypes, and errors of the
    order of the operands' rounding."""
    n, c, d, labels, choice = CASES["multi-tile"]
    tiles(choice)
    half = cast(make_case(n, c, d, labels, seed=2), dtype, torch.float32)
    loss, grad_x, grad_w, grad_t = run(half, matmul_dtype=dtype)
    assert grad_x is not None and grad_w is not None
    assert (loss.dtype, grad_x.dtype, grad_w.dtype, grad_t.dtype) == (
        torch.float32,
        dtype,
        torch.float32,
        torch.float32,
    )
    for what, a, ref in zip(NAMES, (loss, grad_x, grad_w, grad_t), reference(half), strict=True):
        err = (a.double() - ref).abs().max().item()
        assert err <= rtol * ref.abs().max().item(), (what, err)
    # Class centres in the 2-byte dtype too (pure half-precision training): grad_w in that dtype.
    both = cast(make_case(n, c, d, labels, seed=2), dtype, dtype)
    loss, grad_x, grad_w, grad_t = run(both, matmul_dtype=dtype)
    assert grad_x is not None and grad_w is not None and grad_w.dtype == dtype
    for what, a, ref in zip(NAMES, (loss, grad_x, grad_w, grad_t), reference(both), strict=True):
        err = (a.double() - ref).abs().max().item()
        assert err <= rtol * ref.abs().max().item(), (what, err)
    # float32 embeddings with 2-byte dots: x is copied to the dot dtype once.
    single = cast(make_case(n, c, d, labels, seed=2), torch.float32, torch.float32)
    for what, a, ref in zip(NAMES, run(single, matmul_dtype=dtype), reference(single), strict=True):
        assert a is not None and a.dtype == torch.float32, what
        err = (a.double() - ref).abs().max().item()
        assert err <= rtol * ref.abs().max().item(), (what, err)
    double = cast(make_case(*CASES["one-tile"][:4], seed=2), torch.float64, torch.float64)
    for what, a, ref in zip(NAMES, run(double, matmul_dtype=torch.float32), reference(double), strict=True):
        assert a is not None and a.dtype == torch.float64, what
        err = (a - ref).abs().max().item()
        assert err <= 1e-5 * ref.abs().max().item(), (what, err)


def test_gradient_flags(tiles):
    """Unwanted gradients are ``None``; the others are bit-identical to those of a full call."""
    n, c, d, labels, choice = CASES["multi-tile"]
    tiles(choice)
    case = cast(make_case(n, c, d, labels, seed=3), torch.float64, torch.float64)
    full = run(case)
    for want_grad_x, want_grad_w in [(False, False), (True, False), (False, True)]:
        got = run(case, want_grad_x=want_grad_x, want_grad_w=want_grad_w)
        assert (got[1] is not None, got[2] is not None) == (want_grad_x, want_grad_w)
        for a, b in zip(got, full, strict=True):
            if a is not None:
                torch.testing.assert_close(a, b, rtol=0, atol=0)


@settings(max_examples=8, deadline=None)
@given(
    n=st.integers(1, 20),
    c=st.integers(1, 40),
    d=st.integers(1, 36),
    splits=st.integers(1, 3),
    block_k=st.sampled_from([16, 32]),
    data=st.data(),
)
def test_random_shapes_match_reference(n, c, d, splits, block_k, data):
    """Any shape (one class, one dimension, one row included), labels, split count and D chunking; float64."""
    labels = data.draw(st.lists(st.integers(-1, c - 1), min_size=n, max_size=n))
    case = cast(make_case(n, c, d, labels, seed=data.draw(st.integers(0, 2**16))), torch.float64, torch.float64)
    choice = wp.Tiles(block_m=16, block_n=16, block_k=block_k, block_d=16, col_splits=splits, num_warps=4)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(wp, "choose_tiles", lambda *args: choice)
        got = run(case)
    for a, b in zip(got, reference(case), strict=True):
        assert a is not None
        assert_fp64_close(a, b)


def shard(case: dict[str, torch.Tensor], cols: slice) -> dict[str, torch.Tensor]:
    """The columns ``cols`` of the classes, labels relative to them (-1 where another shard owns the target)."""
    start, stop = cols.start, cols.stop
    labels = case["labels"]
    local = torch.where((labels >= start) & (labels < stop), labels - start, -1)
    return {**case, "weight": case["weight"][:, cols], "labels": local}


def combine(stats: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The all-reduce of per-shard ``(row_max, row_sum)``."""
    row_max = torch.stack([m for m, _ in stats]).amax(0)
    return row_max, sum(s * torch.exp(m - row_max) for m, s in stats)  # type: ignore[return-value]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_two_shards_reproduce_one(dtype, tiles):
    """C split into two column ranges; each shard's ``reduce_stats`` combines its own statistics with the
    other shard's (captured by a loss-only call). Each shard's loss and dL/dt are the global ones, the sum of
    the shards' grad_x and the concatenation of their grad_w the single-process gradients; every row's target
    (labels -1 included, on the shard that does not own it) enters the global sum exactly once."""
    n, c, d, labels, choice = CASES["multi-tile"]
    tiles(choice)
    case = cast(make_case(n, c, d, labels, seed=4), dtype, dtype)
    shards = [shard(case, slice(0, 20)), shard(case, slice(20, c))]
    local: list[tuple[torch.Tensor, torch.Tensor]] = []

    def capture(row_max: torch.Tensor, row_sum: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        local.append((row_max.clone(), row_sum.clone()))
        return row_max, row_sum

    for part in shards:
        run(part, want_grad_x=False, want_grad_w=False, reduce_stats=capture)
    outputs = []
    for k, part in enumerate(shards):

        def reduce(row_max, row_sum, k=k):
            torch.testing.assert_close((row_max, row_sum), local[k], rtol=0, atol=0)
            return combine(local)

        outputs.append(run(part, reduce_stats=reduce))
    (loss0, gx0, gw0, gt0), (loss1, gx1, gw1, gt1) = outputs
    assert gx0 is not None and gx1 is not None and gw0 is not None and gw1 is not None
    merged = (loss0, gx0 + gx1, torch.cat([gw0, gw1], dim=1), gt0)
    torch.testing.assert_close((loss1, gt1), (loss0, gt0), rtol=0, atol=0)
    if dtype == torch.float64:
        for a, b in zip(merged, reference(case), strict=True):
            assert_fp64_close(a, b)
    else:
        single = run(case)
        for what, a, b in zip(NAMES, merged, single, strict=True):
            assert b is not None
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * b.abs().max().item(), msg=what)


def test_strided_inputs(tiles):
    """``x`` and ``weight`` as transposed views (``weight`` in nn.Linear's ``(C, D)`` storage)."""
    n, c, d, labels, choice = CASES["multi-tile"]
    tiles(choice)
    case = cast(make_case(n, c, d, labels, seed=5), torch.float64, torch.float64)
    strided = {**case, "x": case["x"].t().contiguous().t(), "weight": case["weight"].t().contiguous().t()}
    assert not strided["x"].is_contiguous() and not strided["weight"].is_contiguous()
    for a, b in zip(run(strided), reference(case), strict=True):
        assert a is not None
        assert_fp64_close(a, b)


class _TorchOps(TorchDispatchMode):
    """Records the PyTorch ops run while active and not paused (allocations aside)."""

    ALLOCATIONS = frozenset({"empty", "empty_like", "empty_strided"})

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []
        self.paused = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if not self.paused and name not in self.ALLOCATIONS:
            self.ops.append(name)
        return func(*args, **(kwargs or {}))


class _CountingKernel:
    """Stands in for a Triton kernel: records each launch, and pauses the op recorder while it runs."""

    def __init__(self, name: str, kernel, launches: list[str], recorder: _TorchOps) -> None:
        self.name, self.kernel, self.launches, self.recorder = name, kernel, launches, recorder

    def __getitem__(self, grid):
        launcher = self.kernel[grid]

        def launch(*args, **kwargs):
            self.launches.append(self.name)
            self.recorder.paused = True
            try:
                return launcher(*args, **kwargs)
            finally:
                self.recorder.paused = False

        return launch


MAX_LAUNCHES = 7  # prep + stats + combine, the sharded loss, grad_w, grad_x + its finish: see the module docstring


FORWARD = ["_prep_x_kernel", "_stats_kernel", "_combine_kernel"]
BACKWARD = ["_grad_w_kernel", "_grad_x_kernel", "_finish_grad_x_kernel"]


@pytest.mark.parametrize(
    ("sharded", "want_grads", "expected"),
    [(False, True, FORWARD + BACKWARD), (True, True, [*FORWARD, "_loss_kernel", *BACKWARD]), (False, False, FORWARD)],
)
def test_launch_count(sharded, want_grads, expected, monkeypatch):
    """Kernel launches per call, counted by wrapping every ``*_kernel`` of the module, and no PyTorch compute op
    of the engine's own (allocations aside; the caller's ``reduce_stats`` is not the engine's)."""
    n, c, d, labels, _ = CASES["one-tile"]
    case = cast(make_case(n, c, d, labels), torch.float32, torch.float32)
    recorder = _TorchOps()
    launches: list[str] = []
    for name, kernel in list(vars(wp).items()):
        if name.endswith("_kernel"):
            monkeypatch.setattr(wp, name, _CountingKernel(name, kernel, launches, recorder))

    def reduce(row_max, row_sum):
        recorder.paused = True
        try:
            return row_max.clone(), row_sum.clone()
        finally:
            recorder.paused = False

    with recorder:
        run(case, want_grad_x=want_grads, want_grad_w=want_grads, reduce_stats=reduce if sharded else None)
    assert launches == expected
    assert len(launches) <= MAX_LAUNCHES
    assert recorder.ops == []


def test_no_rows():
    case = cast(make_case(1, 7, 16, [3]), torch.float32, torch.float32)
    empty = {k: v[:0] if k != "weight" else v for k, v in case.items()}
    loss, grad_x, grad_w, grad_t = run(empty)
    assert loss.shape == grad_t.shape == (0,) and grad_x is not None and grad_x.shape == (0, 16)
    assert grad_w is not None and grad_w.shape == (16, 7) and not grad_w.any()


def test_rejects_bad_inputs():
    case = cast(make_case(3, 7, 16, [0, -1, 6]), torch.float32, torch.float32)
    with pytest.raises(ValueError, match="labels"):
        run({**case, "labels": case["labels"].int()})
    with pytest.raises(ValueError, match="target_slope"):
        run({**case, "target_slope": case["target_slope"].double()})
    with pytest.raises(ValueError, match="row_weight"):
        run({**case, "row_weight": case["row_weight"][:2]})
    with pytest.raises(ValueError, match=r"weight \(D, C\)"):
        run({**case, "weight": case["weight"][:8]})
    with pytest.raises(ValueError, match="no columns"):
        run({**case, "weight": case["weight"][:, :0]})
    with pytest.raises(TypeError, match="x must be"):
        run({**case, "x": case["x"].int()})


def test_cpu_without_interpreter_raises():
    """Without TRITON_INTERPRET the kernels are compiled for CUDA: CPU tensors are refused with a clear message."""
    script = textwrap.dedent(
        """
        import torch
        from arcloss.ops import triton_whole_pass as wp
        x, w, y, v = torch.randn(3, 16), torch.randn(16, 5), torch.tensor([0, -1, 4]), torch.ones(3)
        try:
            wp.whole_pass_margin_ce(x, w, y, v, v, v, 30.0, want_grad_x=True, want_grad_w=True, matmul_dtype=None)
        except RuntimeError as exc:
            print(exc)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(wp.__file__).resolve().parents[2]), env.get("PYTHONPATH")])
    )
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "TRITON_INTERPRET=1" in done.stdout, done.stdout


def test_choose_tiles():
    cpu = torch.device("cpu")
    t = wp.choose_tiles(5, 37, 24, torch.float32, cpu)
    assert t == wp.Tiles(block_m=16, block_n=64, block_k=32, block_d=32, col_splits=1, num_warps=4)
    big = wp.choose_tiles(1000, 10**5, 2048, torch.float64, cpu)
    assert (big.block_m, big.block_n, big.block_k, big.block_d) == (64, 64, 64, 128)
    # H100 (132 SMs): 4 programs per SM over the row tiles; never more splits than class tiles.
    assert wp.cuda_tiles(1024, 10**6, 512, torch.bfloat16, 132) == wp.Tiles(32, 32, 32, 512, 17, 8)
    assert wp.cuda_tiles(1024, 10**6, 128, torch.bfloat16, 132) == wp.Tiles(64, 64, 32, 128, 33, 8)
    assert wp.cuda_tiles(100, 40, 2048, torch.float32, 132).col_splits == 2
    assert math.log2(wp.cuda_tiles(7, 7, 1000, torch.float16, 132).block_d) == 9


# Ahead-of-time sm_90 builds of the kernels with the CUDA tiles, arguments specialised as a launch with
# contiguous x and W would be (unit strides constexpr, sizes and pointers 16-divisible), then ptxas's resource
# usage: no register spills ("STACK:0"). Prints one line per kernel (the small ones with their launch settings).
SM90_BUILD = textwrap.dedent(
    """
    import os, subprocess, sys, tempfile
    os.environ.pop("TRITON_INTERPRET", None)
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    import torch, triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from arcloss.ops import triton_whole_pass as wp

    CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    SHORT = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "float64": "fp64"}


    def signature(kernel, constexprs, pointers, acc_type):
        out = {}
        for arg in kernel.arg_names:
            if arg in constexprs:
                out[arg] = "constexpr"
            elif arg.endswith("_ptr"):
                out[arg] = pointers.get(arg, acc_type)
            else:
                out[arg] = "fp32" if arg == "scale" else "i32"
        return out


    def build(kernel, constexprs, pointers, acc_name, num_warps):
        constexprs = {k: v for k, v in constexprs.items() if k in kernel.arg_names}
        sig = signature(kernel, constexprs, pointers, "*" + SHORT[acc_name])
        attrs = {
            (i,): [["tt.divisibility", 16]]
            for i, arg in enumerate(kernel.arg_names)
            if sig[arg] != "constexpr" and arg not in ("scale", "tiles_per_split")
        }
        source = ASTSource(kernel, sig, constexprs, attrs)
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})
        path = os.path.join(tempfile.mkdtemp(), "kernel.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        usage = subprocess.run([CUOBJDUMP, "-res-usage", path], capture_output=True, text=True, check=True)
        return next(line.split() for line in usage.stdout.splitlines() if "REG:" in line)


    for x_name, mm_name, n_dim in (arg.split(":") for arg in sys.argv[1:]):
        acc_name = "float64" if mm_name == "float64" else "float32"
        tiles = wp.cuda_tiles(1024, 10**6, int(n_dim), getattr(torch, mm_name), 132)
        constexprs = {
            "BLOCK_M": tiles.block_m, "BLOCK_N": tiles.block_n, "BLOCK_K": tiles.block_k, "BLOCK_D": tiles.block_d,
            "ACC": getattr(tl, acc_name), "MM": getattr(tl, mm_name), "DOT_ACC": getattr(tl, acc_name),
            "EPS": 1e-12, "stride_xd": 1, "stride_wc": 1, "stride_gc": 1,
        }
        pointers = {"x_ptr": "*" + SHORT[x_name], "labels_ptr": "*i64", "x_mm_ptr": "*" + SHORT[mm_name]}
        pointers["grad_x_ptr"] = pointers["x_ptr"]
        for kernel in (wp._stats_kernel, wp._grad_w_kernel, wp._grad_x_kernel):
            regs, stack = build(kernel, constexprs, pointers, acc_name, tiles.num_warps)[:2]
            print(kernel.__name__, x_name, mm_name, n_dim, tiles, regs, stack)
        small = {"BLOCK": 1024, "BLOCK_R": 16, "BLOCK_D": 128, "FINAL": True, "WRITE_COPY": True}
        for kernel in (wp._prep_x_kernel, wp._combine_kernel, wp._loss_kernel, wp._finish_grad_x_kernel):
            regs, stack = build(kernel, {**constexprs, **small}, pointers, acc_name, 4)[:2]
            print(kernel.__name__, x_name, mm_name, n_dim, regs, stack)
    """
)


def test_sm90_builds_have_no_spills():
    """The bfloat16 (autocast) path, which the interpreter cannot check numerically, compiles for an H100 with
    the CUDA tiles at D = 512 and D = 128, and no kernel spills registers. (Also checked once, too slow to
    repeat here: the float32 (IEEE) and float64 paths compile; float32's grad_w kernel spills 24 bytes.)"""
    nvidia_bin = Path(str(triton.__file__)).parent / "backends" / "nvidia" / "bin"
    if not (nvidia_bin / "ptxas").exists() or not (nvidia_bin / "cuobjdump").exists():
        pytest.skip("triton's NVIDIA toolchain (ptxas, cuobjdump) is missing")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(wp.__file__).resolve().parents[2]), env.get("PYTHONPATH")])
    )
    configs = ["bfloat16:bfloat16:512", "bfloat16:bfloat16:128"]
    done = subprocess.run(
        [sys.executable, "-c", SM90_BUILD, *configs], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 7 * len(configs), done.stdout
    for line in lines:
        assert line.endswith("STACK:0"), line

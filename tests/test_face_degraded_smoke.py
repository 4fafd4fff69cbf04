"""The degraded-test-set face benchmark (benchmarks/face/degraded.py): its degradations, and one tiny run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("matplotlib")

from benchmarks import common
from benchmarks.face import degraded as face_degraded


def _images(n: int = 8, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8)


def _roughness(x: torch.Tensor) -> float:
    """Mean absolute difference between horizontal neighbours: high-frequency content."""
    x = x.float()
    return float((x[..., 1:] - x[..., :-1]).abs().mean())


def test_degradations_grow_with_their_level():
    images = _images()
    for kind, levels in face_degraded.DEGRADATIONS.items():
        outs = [face_degraded.degrade(images, kind, level, torch.Generator().manual_seed(1)) for level in levels]
        for out in outs:
            assert out.shape == images.shape and out.dtype == torch.uint8
        change = [float((out.float() - images.float()).abs().mean()) for out in outs]
        assert 0 < change[0] < change[1] < change[2], (kind, change)
        if kind in ("blur", "lowres"):  # smoothing removes high frequencies, more at each level
            rough = [_roughness(out) for out in outs]
            assert _roughness(images) > rough[0] > rough[1] > rough[2], (kind, rough)
    flat = torch.full((4, 1, 64, 64), 128, dtype=torch.uint8)
    noisy = face_degraded.degrade(flat, "noise", 20, torch.Generator().manual_seed(2)).float()
    assert abs(noisy.std().item() - 20) < 1.0  # noise sigma in grey levels
    with pytest.raises(ValueError, match="unknown degradation"):
        face_degraded.degrade(images, "jpeg", 1)


def test_mixed_set_degrades_each_image_once_at_its_level():
    images = _images(30)
    sets, mixed, level = face_degraded.degraded_sets(images, seed=0)
    assert set(sets) == {(k, lv) for k in face_degraded.DEGRADATIONS for lv in (1, 2, 3)}
    assert set(level.tolist()) <= {1, 2, 3}
    for i in range(30):
        assert any(torch.equal(mixed[i], sets[(k, int(level[i]))][i]) for k in face_degraded.DEGRADATIONS)
    _, part, level = face_degraded.degraded_sets(_images(400), seed=1, fraction=0.25)
    assert 0.15 < (level > 0).double().mean().item() < 0.35
    assert torch.equal(part[level == 0], _images(400)[level == 0])


def test_spearman_matches_its_definition():
    a, b = torch.tensor([3.0, 1.0, 2.0, 2.0, 5.0]), torch.tensor([1.0, 0.0, 1.0, 0.0, 2.0])
    assert face_degraded._ranks(a).tolist() == [4.0, 1.0, 2.5, 2.5, 5.0]
    # Pearson correlation of the ranks, by hand: ranks of b are [3.5, 1.5, 3.5, 1.5, 5]
    assert face_degraded._spearman(a, b) == pytest.approx(0.8651809126974, rel=1e-12)
    assert face_degraded._spearman(a, -a) == pytest.approx(-1.0)


def test_smoke_run_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["--smoke", "--out", str(out), "--losses", "adaface", "magface", "--train-degrade", "0.5"]
    face_degraded.main(args)
    result = json.loads((out / "results.json").read_text())
    assert "SYNTHETIC" in result["data"] and set(result["summary"]) == {"adaface", "magface"}
    for run in result["runs"]:
        for part in ("clean", "mixed", "probe"):
            assert 0.0 <= run[part]["accuracy"] <= 1.0
        assert set(run["levels"]) == {f"{k}{lv}" for k in face_degraded.DEGRADATIONS for lv in (1, 2, 3)}
        assert all(v > 0 for v in run["norms"].values()) and -1 <= run["norm_level_spearman"] <= 1
        assert run["settings"]["train_degrade"] == 0.5
    rows = common.read_rows(out / "results.csv")  # the shared benchmark schema
    assert {r["provider"] for r in rows} == {"adaface", "magface"}
    assert {r["n"] for r in rows} == {"1"} and any(r["metric"] == "mixed acc" for r in rows)
    for name in ("face_degraded.png", "face_norm_vs_degradation.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # --resume reuses both runs (nothing retrained: the same per-run files, unchanged)
    before = {p.name: p.read_text() for p in (out / "runs").iterdir()}
    face_degraded.main([*args, "--resume"])
    assert {p.name: p.read_text() for p in (out / "runs").iterdir()} == before

"""The face-verification benchmark end to end on tiny synthetic data (one epoch), and its data/loss helpers."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

pytest.importorskip("matplotlib")  # the figures; the bench extra (and, requested, the test extra) installs it

import face_data  # noqa: E402
import face_losses  # noqa: E402
import face_train  # noqa: E402
import face_verification  # noqa: E402


def test_smoke_run_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "out"
    face_verification.main(["--smoke", "--no-progress", "--out", str(out)])
    result = json.loads((out / "results.json").read_text())
    assert "SYNTHETIC" in result["data"]
    assert set(result["summary"]) == {"softmax", "norm-softmax", "arcface", "cosface", "arcface-default"}
    for run in result["runs"]:
        assert len(run["train_loss"]) == 1 and all(map(lambda v: v == v and v > 0, run["train_loss"]))
        for mode in ("plain", "flip"):
            assert 0.0 <= run[mode]["accuracy"] <= 1.0 and 0.0 <= run[mode]["auc"] <= 1.0
    with open(out / "summary.csv") as f:
        assert len(list(csv.DictReader(f))) == 5
    for name in ("face_roc.png", "face_angles.png", "face_train_loss.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_image_folder_loading_and_identity_split(tmp_path: Path) -> None:
    Image = pytest.importorskip("PIL.Image")

    for i in range(4):
        (tmp_path / f"person_{i}").mkdir()
        for j in range(3 if i else 1):  # person_0 has a single image: skipped
            Image.new("RGB", (100, 80), (40 * i, 60, 30 * j)).save(tmp_path / f"person_{i}" / f"{j}.jpg")
    (tmp_path / "README.txt").write_text("not an identity")
    faces = face_data.load_image_folder(tmp_path, size=16)
    assert faces.images.shape == (9, 1, 16, 16) and faces.images.dtype == torch.uint8
    assert faces.names == ["person_1", "person_2", "person_3"]
    assert faces.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    train_ids, test_ids = face_data.split_identities(3, 1, seed=0)
    assert set(train_ids.tolist()).isdisjoint(test_ids.tolist()) and len(train_ids) + len(test_ids) == 3
    sub = faces.subset(test_ids)
    assert sub.labels.tolist() == [0, 0, 0] and sub.names == [faces.names[int(test_ids[0])]]


def test_synthetic_identities_deterministic_and_distinct() -> None:
    a = face_data.synthetic_identities(num_identities=5, per_identity=3, size=24, seed=3)
    b = face_data.synthetic_identities(num_identities=5, per_identity=3, size=24, seed=3)
    assert torch.equal(a.images, b.images) and "SYNTHETIC" in a.description
    x = a.images.float().flatten(1)
    dist = torch.cdist(x, x, p=1) / x.shape[1]
    same = a.labels[:, None] == a.labels[None, :]
    off_diagonal = ~torch.eye(len(x), dtype=torch.bool)
    assert x.std() > 10
    assert dist[same & off_diagonal].mean() < dist[~same].mean()  # images of one identity are closer


def test_augment_keeps_shape_range_and_is_seeded() -> None:
    x = face_train.to_float(face_data.synthetic_identities(4, 2, 32).images)
    y1 = face_train.augment(x, torch.Generator().manual_seed(0))
    y2 = face_train.augment(x, torch.Generator().manual_seed(0))
    assert y1.shape == x.shape and torch.equal(y1, y2) and not torch.equal(y1, x)
    assert y1.min() >= -1 and y1.max() <= 1


def test_loss_specs() -> None:
    spec = face_losses.parse_spec("arcface:s=64,init=normal,warmup=2,lr=10")
    assert (spec.kind, spec.s, spec.init, spec.warmup, spec.lr) == ("arcface", 64.0, "normal", 2.0, 10.0)
    loss = face_losses.make_loss(face_losses.parse_spec("arcface:s=adacos"), 300, 8)
    assert loss.scale == pytest.approx(2**0.5 * torch.log(torch.tensor(299.0)).item(), rel=1e-6)
    recipe = face_losses.make_loss(face_losses.parse_spec("arcface"), 300, 8)  # AdaCos's sqrt(2) ln(C - 1)
    assert (recipe.scale, recipe.margin) == (pytest.approx(8.06, abs=0.01), 28.6)
    auto = face_losses.make_loss(face_losses.parse_spec("arcface:s=auto"), 300, 8)  # margin-aware
    assert auto.scale == pytest.approx(20.19, abs=0.01)
    assert face_losses.make_loss(face_losses.parse_spec("cosface"), 300, 8).scale == pytest.approx(15.96, abs=0.01)
    assert recipe.W.norm(dim=0).mean().item() == pytest.approx(1.0, abs=0.3)  # unit-norm centres
    default = face_losses.make_loss(face_losses.parse_spec("arcface-default"), 10, 8)
    assert (default.scale, default.margin) == (64, 28.6)
    with pytest.raises(ValueError):
        face_losses.parse_spec("arcface:q=1")
    with pytest.raises(ValueError):
        face_losses.parse_spec("sphereface")

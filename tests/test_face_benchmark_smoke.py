"""The face-verification benchmark end to end on tiny synthetic data (one epoch), and its data/loss helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("matplotlib")  # the figures; the test and bench extras install it

from benchmarks import common
from benchmarks.face import data, losses, report, run, train


def test_smoke_run_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    run.main(["--smoke", "--no-progress", "--device", "cpu", "--out", str(out)])
    printed = capsys.readouterr().out
    result = json.loads((out / "results.json").read_text())
    assert result["synthetic"] and "SYNTHETIC" in result["data"]
    assert result["losses"] == run.DEFAULT_LOSSES
    assert result["environment"]["device"] == "cpu" and result["command"].startswith("python -m benchmarks.face")
    for r in result["runs"]:
        assert len(r["train_loss"]) == 1 and all(v == v and v > 0 for v in r["train_loss"])
        for mode in ("plain", "flip"):
            m = r["evals"]["1"][mode]
            assert 0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["auc"] <= 1.0
    assert "Verdict:" in printed and result["verdict"][0].startswith("Data: SYNTHETIC")
    rows = common.read_rows(out / "results.csv")  # raises unless the columns are the shared schema
    assert {r["provider"] for r in rows} == set(run.DEFAULT_LOSSES)
    assert {r["metric"] for r in rows} == set(report.METRICS)
    for name in ("face_budget.png", "face_roc.png", "face_angles.png", "face_train_loss.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_defaults_by_device() -> None:
    cpu = run.parse_args(["--device", "cpu"])
    assert cpu.losses == ["softmax", "arcface", "arcface-default"] and cpu.epochs == run.CPU_EPOCHS
    assert run.parse_args(["--device", "cpu", "--full"]).losses == run.FULL_LOSSES
    assert run.parse_args(["--device", "cpu", "--epochs", "20", "12", "20"]).epochs == [12, 20]
    assert run.checkpoints(12, 0) == [3, 6, 9, 12] and run.checkpoints(10, 4) == [4, 8, 10]
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            run.parse_args(["--device", "cuda"])


def _fake_result(acc: dict[str, list[float]], schedules: list[int], synthetic: bool = False) -> dict:
    """A results dict with the given per-seed accuracies at the end of each schedule (same for every schedule
    unless ``acc`` keys are ``label@epochs``)."""
    summary = {}
    for key, values in acc.items():
        label, _, sched = key.partition("@")
        for s in [int(sched)] if sched else schedules:
            stat = {**common.summarize(values), "values": values}
            summary.setdefault(label, {})[str(s)] = {str(s): {"accuracy_flip": stat, "tar@0.01_flip": stat}}
    labels = list(summary)
    return {
        "losses": labels,
        "names": {k: k for k in labels},
        "schedules": schedules,
        "seeds": [0, 1, 2],
        "synthetic": synthetic,
        "summary": summary,
    }


def test_verdict_leads_trails_and_spread() -> None:
    lead = report.verdict(_fake_result({"softmax": [0.80, 0.81, 0.82], "arcface": [0.85, 0.86, 0.87]}, [12]))
    assert "arcface leads softmax by 5.00 points" in lead[0] and "larger than the spread" in lead[0]
    tie = report.verdict(_fake_result({"softmax": [0.80, 0.82, 0.84], "arcface": [0.81, 0.83, 0.85]}, [12]))
    assert "leads softmax by 1.00 points" in tie[0] and "within the spread" in tie[0]
    trail = report.verdict(_fake_result({"softmax": [0.86, 0.87, 0.88], "arcface": [0.84, 0.845, 0.85]}, [12]))
    assert "trails softmax by 2.50 points" in trail[0]
    flip = report.verdict(
        _fake_result(
            {
                "softmax@20": [0.85, 0.85, 0.86],
                "arcface@20": [0.86, 0.87, 0.87],
                "softmax@60": [0.87, 0.87, 0.87],
                "arcface@60": [0.85, 0.86, 0.85],
            },
            [20, 60],
        )
    )
    assert "After 60 epochs, arcface trails" in flip[0] and "sign of the gap changes with the budget" in flip[1]
    synthetic = report.verdict(_fake_result({"softmax": [0.8], "arcface": [0.9]}, [1], synthetic=True))
    assert synthetic[0].startswith("Data: SYNTHETIC")


def test_image_folder_loading_and_identity_split(tmp_path: Path) -> None:
    Image = pytest.importorskip("PIL.Image")

    for i in range(4):
        (tmp_path / f"person_{i}").mkdir()
        for j in range(3 if i else 1):  # person_0 has a single image: skipped
            Image.new("RGB", (100, 80), (40 * i, 60, 30 * j)).save(tmp_path / f"person_{i}" / f"{j}.jpg")
    (tmp_path / "README.txt").write_text("not an identity")
    faces = data.load_image_folder(tmp_path, size=16)
    assert faces.images.shape == (9, 1, 16, 16) and faces.images.dtype == torch.uint8
    assert faces.names == ["person_1", "person_2", "person_3"]
    assert faces.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    train_ids, test_ids = data.split_identities(3, 1, seed=0)
    assert set(train_ids.tolist()).isdisjoint(test_ids.tolist()) and len(train_ids) + len(test_ids) == 3
    sub = faces.subset(test_ids)
    assert sub.labels.tolist() == [0, 0, 0] and sub.names == [faces.names[int(test_ids[0])]]


def test_synthetic_identities_deterministic_and_distinct() -> None:
    a = data.synthetic_identities(num_identities=5, per_identity=3, size=24, seed=3)
    b = data.synthetic_identities(num_identities=5, per_identity=3, size=24, seed=3)
    assert torch.equal(a.images, b.images) and "SYNTHETIC" in a.description
    x = a.images.float().flatten(1)
    dist = torch.cdist(x, x, p=1) / x.shape[1]
    same = a.labels[:, None] == a.labels[None, :]
    off_diagonal = ~torch.eye(len(x), dtype=torch.bool)
    assert x.std() > 10
    assert dist[same & off_diagonal].mean() < dist[~same].mean()  # images of one identity are closer


def test_augment_keeps_shape_range_and_is_seeded() -> None:
    x = train.to_float(data.synthetic_identities(4, 2, 32).images)
    y1 = train.augment(x, torch.Generator().manual_seed(0))
    y2 = train.augment(x, torch.Generator().manual_seed(0))
    assert y1.shape == x.shape and torch.equal(y1, y2) and not torch.equal(y1, x)
    assert y1.min() >= -1 and y1.max() <= 1


def test_loss_specs_and_names() -> None:
    spec = losses.parse_spec("arcface:s=64,init=normal,warmup=2,lr=10")
    assert (spec.kind, spec.s, spec.init, spec.warmup, spec.lr) == ("arcface", 64.0, "normal", 2.0, 10.0)
    loss = losses.make_loss(losses.parse_spec("arcface:s=adacos"), 300, 8)
    assert loss.scale == pytest.approx(2**0.5 * torch.log(torch.tensor(299.0)).item(), rel=1e-6)
    recipe = losses.make_loss(losses.parse_spec("arcface"), 300, 8)  # AdaCos's sqrt(2) ln(C - 1)
    assert (recipe.scale, recipe.margin) == (pytest.approx(8.06, abs=0.01), 28.6)
    auto = losses.make_loss(losses.parse_spec("arcface:s=auto"), 300, 8)  # margin-aware
    assert auto.scale == pytest.approx(20.19, abs=0.01)
    assert losses.make_loss(losses.parse_spec("cosface"), 300, 8).scale == pytest.approx(15.96, abs=0.01)
    assert recipe.W.norm(dim=0).mean().item() == pytest.approx(1.0, abs=0.3)  # unit-norm centres
    default = losses.make_loss(losses.parse_spec("arcface-default"), 10, 8)
    assert (default.scale, default.margin) == (64, 28.6)
    name = losses.display_name(losses.parse_spec("arcface:s=auto"), auto)
    assert "margin-aware" in name and "20.2" in name and "unit-norm centres" in name
    assert "drop-in defaults" in losses.display_name(losses.parse_spec("arcface-default"), default)
    with pytest.raises(ValueError):
        losses.parse_spec("arcface:q=1")
    with pytest.raises(ValueError):
        losses.parse_spec("sphereface")

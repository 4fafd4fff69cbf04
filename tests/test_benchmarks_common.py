"""The benchmarks' shared helpers: statistics, the one CSV schema, newest-row selection, and that every results
CSV in the repository is in that schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import common
from benchmarks.speed import providers


def test_summarize() -> None:
    s = common.summarize([4.0, 1.0, 3.0, 2.0])
    assert (s["median"], s["mean"], s["n"]) == (2.5, 2.5, 4)
    assert s["p25"] == pytest.approx(1.75) and s["p75"] == pytest.approx(3.25)
    assert s["std"] == pytest.approx(1.2909944)
    assert common.summarize([7.0]) == {"median": 7.0, "p25": 7.0, "p75": 7.0, "mean": 7.0, "std": 0.0, "n": 1}
    with pytest.raises(ValueError):
        common.summarize([])


def test_csv_round_trip_append_and_latest(tmp_path: Path) -> None:
    env = common.environment(torch.device("cpu"))
    path = tmp_path / "r.csv"
    first = common.row("b", "p", "time_full", "ms", "num_classes", 10, [1.0, 2.0, 3.0], {"dim": 4}, env, "2026-01-01")
    common.append_rows(path, [first])
    again = common.row("b", "p", "time_full", "ms", "num_classes", 10, [5.0], {"dim": 4}, env, "2026-01-02")
    other = common.row("b", "p", "time_full", "ms", "num_classes", 20, [9.0], {"dim": 4}, env, "2026-01-01")
    common.append_rows(path, [again, other])
    rows = common.read_rows(path)
    assert len(rows) == 3 and path.read_text().count("date,benchmark") == 1  # one header
    latest = {r["x_value"]: r for r in common.latest_rows(rows)}
    assert latest["10"]["median"] == "5" and latest["20"]["median"] == "9"
    assert json.loads(rows[0]["config"]) == {"dim": 4} and rows[0]["torch"] == torch.__version__
    (tmp_path / "bad.csv").write_text("date,provider\n")
    with pytest.raises(ValueError):
        common.read_rows(tmp_path / "bad.csv")


def test_committed_results_use_the_shared_schema() -> None:
    csvs = sorted(common.RESULTS.glob("**/*.csv"))
    if not csvs:
        pytest.skip("no results in this tree (an sdist ships none)")
    for path in csvs:
        assert common.read_rows(path), path


def test_resolve_device() -> None:
    assert common.resolve_device("cpu").type == "cpu"
    assert common.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_speed_providers_agree_on_inputs() -> None:
    cases = {p: providers.make_case(p, 50, 8, 16, torch.device("cpu")) for p in ("arcloss", "softmax", "norm-softmax")}
    xs = [c.embeddings for c in cases.values()]
    assert all(torch.equal(xs[0], x) for x in xs[1:])
    for case in cases.values():
        loss = case.loss()
        loss.backward()
        assert torch.isfinite(loss) and all(p.grad is not None for p in case.params)

"""The face benchmark's results: summary over seeds, the verdict in words, the printed tables and the CSV rows."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from benchmarks import common

BENCHMARK = "face_verification"
BASELINE = "softmax"
# metric name -> (evaluation mode, key, unit); TAR keys are FARs
METRICS = {
    "accuracy_flip": ("flip", "accuracy", "%"),
    "tar@0.1_flip": ("flip", "0.1", "%"),
    "tar@0.01_flip": ("flip", "0.01", "%"),
    "tar@0.001_flip": ("flip", "0.001", "%"),
    "auc_flip": ("flip", "auc", "1"),
    "accuracy": ("plain", "accuracy", "%"),
}


def _value(metrics: dict, mode: str, key: str) -> float | None:
    m = metrics.get(mode)
    if m is None:
        return None
    return m["tar_at_far"][key] if key.startswith("0.") else m[key]


def _downsample_roc(far: list[float], tar: list[float], points: int = 300) -> tuple[list[float], list[float]]:
    """ROC points at log-spaced FARs: the best TAR with FAR <= each grid value."""
    f, t = torch.tensor(far), torch.tensor(tar)
    grid = torch.logspace(-4, 0, points, dtype=torch.float64)
    return grid.tolist(), [float(t[f <= g + 1e-12].max()) for g in grid]


def build(
    args: argparse.Namespace,
    description: str,
    data_tag: str,
    env: dict[str, Any],
    names: dict[str, str],
    runs: list[dict],
    wall: float,
    argv: list[str],
) -> dict:
    """Everything the report, the CSV and the figures need, JSON-ready (epochs as string keys)."""
    losses = list(names)
    schedules = sorted({r["epochs"] for r in runs})
    summary: dict[str, dict[str, dict[str, dict[str, dict]]]] = {}
    for label in losses:
        summary[label] = {}
        for sched in schedules:
            rs = [r for r in runs if r["loss"] == label and r["epochs"] == sched]
            points = {}
            for epoch in sorted({e for r in rs for e in r["evals"]}):
                points[str(epoch)] = {}
                for metric, (mode, key, _) in METRICS.items():
                    values = [_value(r["evals"][epoch], mode, key) for r in rs if epoch in r["evals"]]
                    values = [v for v in values if v is not None]
                    if values:
                        points[str(epoch)][metric] = {**common.summarize(values), "values": values}
            summary[label][str(sched)] = points
    longest = schedules[-1]
    first_seed = args.seeds[0]
    roc, angles = {}, {}
    for r in runs:
        if r["epochs"] == longest and r["seed"] == first_seed:
            flip = r["evals"][longest]["flip"]
            far, tar = _downsample_roc(flip["roc_far"], flip["roc_tar"])
            roc[r["loss"]] = {"far": far, "tar": tar, "auc": flip["auc"]}
            angles[r["loss"]] = {  # counts per 1-degree bin, 0..180
                kind: torch.histc(torch.tensor(flip[f"angles_{kind}"]), 180, 0, 180).int().tolist()
                for kind in ("pos", "neg")
            }
    drop = ("roc_far", "roc_tar", "angles_pos", "angles_neg")
    slim_runs = [
        {
            **r,
            "evals": {
                str(e): {mode: {k: v for k, v in m.items() if k not in drop} for mode, m in ms.items()}
                for e, ms in r["evals"].items()
            },
        }
        for r in runs
    ]
    plain = (int, float, str, list, bool, type(None))
    config = {k: (v if isinstance(v, plain) else str(v)) for k, v in vars(args).items()}
    result = {
        "benchmark": BENCHMARK,
        "date": common.now_utc(),
        "data": description,
        "data_tag": data_tag,
        "synthetic": "SYNTHETIC" in description,
        "command": " ".join(["python", "-m", "benchmarks.face", *argv]),
        "config": config,
        "environment": env,
        "wall_seconds": round(wall, 1),
        "losses": losses,
        "names": names,
        "seeds": list(args.seeds),
        "schedules": schedules,
        "summary": summary,
        "runs": slim_runs,
        "roc_first_seed_longest": roc,
        "angle_hist_first_seed_longest": angles,
    }
    result["verdict"] = verdict(result)
    return result


def _stat(result: dict, label: str, sched: int, epoch: int, metric: str) -> dict | None:
    return result["summary"].get(label, {}).get(str(sched), {}).get(str(epoch), {}).get(metric)


def _pm(stat: dict, k: float = 100.0) -> str:
    return f"{k * stat['mean']:.2f} ± {k * stat['std']:.2f}"


def verdict(result: dict) -> list[str]:
    """Who leads, by how much, against the spread over seeds; and how the gap moves with the training budget."""
    lines = []
    losses, names, schedules = result["losses"], result["names"], result["schedules"]
    n = len(result["seeds"])
    if result["synthetic"]:
        lines.append("Data: SYNTHETIC identities, a pipeline check; do not rank losses on it.")
    if BASELINE not in losses:
        return [*lines, "No softmax run to compare with."]
    longest = schedules[-1]
    for label in losses:
        if label == BASELINE:
            continue
        a, b = (
            _stat(result, label, longest, longest, "accuracy_flip"),
            _stat(result, BASELINE, longest, longest, "accuracy_flip"),
        )
        ta, tb = (_stat(result, x, longest, longest, "tar@0.01_flip") for x in (label, BASELINE))
        d = 100 * (a["mean"] - b["mean"])
        spread = 100 * (a["std"] + b["std"])
        if n < 2:
            relation = "one seed: no spread to judge it against"
        elif abs(d) > spread:
            relation = f"larger than the spread over seeds (the two standard deviations add to {spread:.2f})"
        else:
            relation = f"within the spread over seeds ({spread:.2f}): no clear winner"
        lines.append(
            f"After {_plural(longest, 'epoch')}, {names[label]} {'leads' if d > 0 else 'trails'} softmax "
            f"by {abs(d):.2f} points "
            f"of 10-fold accuracy ({_pm(a)} vs {_pm(b)} %, mean ± std over {_plural(n, 'seed')}); {relation}. "
            f"TAR@FAR=1e-2: {_pm(ta)} vs {_pm(tb)} %."
        )
        gaps = _gaps(result, label)
        if len(gaps) > 1:
            text = ", ".join(f"{where}: {gap:+.2f}" for where, gap in gaps)
            signs = {gap > 0 for _, gap in gaps}
            trend = (
                "the sign of the gap changes with the budget"
                if len(signs) > 1
                else f"the mean is {'ahead' if signs == {True} else 'behind'} at every point"
            )
            lines.append(f"  gap to softmax (accuracy points) {text}: {trend}.")
    if len(schedules) == 1 and len(result["summary"][losses[0]][str(longest)]) > 1:
        lines.append(
            f"Intermediate points are epochs of the same {longest}-epoch runs (cosine learning-rate decay over the "
            "whole run), not results of shorter schedules; --epochs 12 20 40 trains one schedule per budget."
        )
    return lines


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _gaps(result: dict, label: str) -> list[tuple[str, float]]:
    """(where, accuracy gap to softmax in points): at the end of each schedule, or, with one schedule, at each
    evaluated epoch of it."""
    schedules = result["schedules"]
    if len(schedules) > 1:
        points = [(f"{s} epochs", s, s) for s in schedules]
    else:
        s = schedules[0]
        points = [(f"epoch {e}", s, int(e)) for e in result["summary"][label][str(s)]]
    out = []
    for where, sched, epoch in points:
        a, b = (
            _stat(result, label, sched, epoch, "accuracy_flip"),
            _stat(result, BASELINE, sched, epoch, "accuracy_flip"),
        )
        if a and b:
            out.append((where, 100 * (a["mean"] - b["mean"])))
    return out


def print_report(result: dict) -> None:
    names, schedules = result["names"], result["schedules"]
    print(f"\n{result['data']}; {len(result['seeds'])} seed(s); mean ± std over seeds; flip TTA")
    header = ["loss", "epochs", "10-fold acc %", "TAR@1e-2 %", "TAR@1e-3 %", "AUC"]
    rows = []
    for sched in schedules:
        for label in result["losses"]:
            st = {m: _stat(result, label, sched, sched, m) for m in METRICS}
            rows.append(
                [
                    names[label],
                    str(sched),
                    _pm(st["accuracy_flip"]),
                    _pm(st["tar@0.01_flip"]),
                    _pm(st["tar@0.001_flip"]),
                    f"{st['auc_flip']['mean']:.4f} ± {st['auc_flip']['std']:.4f}",
                ]
            )
    _table(header, rows)
    epochs = list(result["summary"][result["losses"][0]][str(schedules[0])])
    if len(schedules) == 1 and len(epochs) > 1:
        sched = schedules[0]
        print(f"\n10-fold accuracy % (flip) at epochs of the {sched}-epoch runs:")
        rows = [
            [names[label], *(_pm(_stat(result, label, sched, int(e), "accuracy_flip")) for e in epochs)]
            for label in result["losses"]
        ]
        _table(["loss", *(f"epoch {e}" for e in epochs)], rows)
    print("\n" + "\n".join(text_chart(result)))
    print("\nVerdict:")
    for line in result["verdict"]:
        print(f"  {line}")


def text_chart(result: dict, width: int = 40) -> list[str]:
    """10-fold accuracy (flip TTA, mean ± std over seeds) against epochs trained, as text bars: a figure that
    reads the same in a terminal and in a README."""
    names, schedules = result["names"], result["schedules"]
    if len(schedules) > 1:
        points = [(f"{s} epochs", s, s) for s in schedules]
        title = "10-fold verification accuracy after full schedules of N epochs"
    else:
        s = schedules[0]
        points = [(f"epoch {e}", s, int(e)) for e in result["summary"][result["losses"][0]][str(s)]]
        title = f"10-fold verification accuracy during the {s}-epoch runs"
    stats = {
        (where, label): _stat(result, label, sched, epoch, "accuracy_flip")
        for where, sched, epoch in points
        for label in result["losses"]
    }
    values = [100 * st["mean"] for st in stats.values() if st]
    lo, hi = (50.0 if min(values) >= 50 else 0.0), 100.0
    label_width = max(len(names[label]) for label in result["losses"])
    lines = [f"{title} (bars: {lo:.0f} to {hi:.0f} %; mean ± std over {len(result['seeds'])} seeds, %)"]
    for where, _, _ in points:
        lines.append(f"{where}")
        for label in result["losses"]:
            st = stats[(where, label)]
            if not st:
                continue
            n = round(width * (100 * st["mean"] - lo) / max(1e-9, hi - lo))
            lines.append(f"  {names[label]:<{label_width}} {'█' * n}{'·' * (width - n)} {_pm(st)}")
    return lines


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = [" | ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)) for row in [header, *rows]]
    lines.insert(1, "-|-".join("-" * w for w in widths))
    print("\n".join(lines))


def csv_rows(result: dict) -> list[dict]:
    """The shared-schema rows: one per loss, schedule, evaluated epoch and metric, summarised over seeds."""
    rows = []
    cfg = result["config"]
    fixed = {k: cfg[k] for k in ("batch_size", "lr", "size", "embedding_size", "backbone", "split_seed")}
    for label, by_sched in result["summary"].items():
        for sched, by_epoch in by_sched.items():
            config = {
                "data": result["data_tag"],
                "loss": result["names"][label],
                "schedule_epochs": int(sched),
                **fixed,
            }
            for epoch, metrics in by_epoch.items():
                for metric, stat in metrics.items():
                    unit = METRICS[metric][2]
                    k = 100.0 if unit == "%" else 1.0
                    values = [k * v for v in stat["values"]]
                    rows.append(
                        common.row(
                            BENCHMARK,
                            label,
                            metric,
                            unit,
                            "epochs",
                            int(epoch),
                            values,
                            config,
                            result["environment"],
                            result["date"],
                        )
                    )
    return rows

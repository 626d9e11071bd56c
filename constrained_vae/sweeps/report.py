"""What a sweep leaves for the user: ``failures.json`` and the table printed at its end."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from constrained_vae.core.objectives import OBJECTIVES
from constrained_vae.files import atomic_write_json
from constrained_vae.run import folder
from constrained_vae.run.summary import constraint_status, multiplier_remark
from constrained_vae.sweeps.tasks import Outcome, progress_counts

FAILURES_FILE = "failures.json"
FIGURES = (("kl", ".3f"), ("nll", ".3f"), ("multiplier", ".4g"))  # the summary's figures in the table, formatted


def read_failures(sweep_dir: Path) -> dict[str, str]:
    """{point name: one-line reason} from ``failures.json`` (empty when there is none or it is unreadable)."""
    try:
        failures = json.loads((sweep_dir / FAILURES_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return failures if isinstance(failures, dict) else {}


def note_failure(failures: dict[str, str], outcome: Outcome) -> bool:
    """Add a failed point's reason, or clear a finished point's; whether ``failures`` changed."""
    if outcome.status == "failed":
        changed = failures.get(outcome.name) != outcome.reason
        failures[outcome.name] = outcome.reason
        return changed
    return failures.pop(outcome.name, None) is not None


def write_failures(sweep_dir: Path, failures: dict[str, str]) -> None:
    """Write ``failures.json``, or remove it when nothing has failed."""
    path = sweep_dir / FAILURES_FILE
    if failures:
        atomic_write_json(path, failures)
    else:
        path.unlink(missing_ok=True)


def format_report(sweep_dir: Path, outcomes: Sequence[Outcome]) -> str:
    """A table of the points (status, tail KL, NLL, λ or β), then notes, the failures and their reasons.

    A ``note:`` line says when a point's budget was not met or was inactive, and when its learned
    multiplier was still moving or had too few rows to judge (:mod:`constrained_vae.run.summary`).

    When this run's points trained on more than one Ray node, a column names each one's node; when
    they were given GPUs, a last column names the GPUs each one had on its node.
    """
    by_node = len({outcome.node for outcome in outcomes if outcome.node}) > 1
    by_gpu = any(outcome.gpus for outcome in outcomes)
    header = ("point", "status", "KL", "NLL", "λ / β", *(("node",) if by_node else ()), *(("gpu",) if by_gpu else ()))
    rows, notes = [header], []
    for outcome in outcomes:
        row, note = _table_row(sweep_dir, outcome, by_node, by_gpu)
        rows.append(row)
        notes += [f"note: {outcome.name}: {note}"] if note else []
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    failed = [outcome for outcome in outcomes if outcome.status == "failed"]
    lines += notes
    lines += [f"failed: {outcome.name}: {outcome.reason}" for outcome in failed]
    counts = ", ".join(f"{n} {name}" for name, n in progress_counts(outcomes).items())
    lines.append(f"sweep folder: {sweep_dir} ({len(outcomes)} points: {counts}; KL, NLL in nats per sample)")
    if failed:
        lines.append(f"failures recorded in {sweep_dir / FAILURES_FILE}; re-run the same command to retry them")
    return "\n".join(lines)


def _table_row(sweep_dir: Path, outcome: Outcome, by_node: bool, by_gpu: bool) -> tuple[tuple[str, ...], str]:
    """A point's cells and its note (empty when there is nothing to say)."""
    figures, note = ("—", "—", "—"), ""
    if outcome.status != "failed":
        try:
            summary = folder.read_summary(sweep_dir / outcome.name)
            figures = tuple(_number(summary.get(key), spec) for key, spec in FIGURES)
            note = _note(summary)
        except (ValueError, KeyError, TypeError):
            pass
    place = ((outcome.node or "—",) if by_node else ()) + ((outcome.gpus or "—",) if by_gpu else ())
    return (outcome.name, outcome.status, *figures, *place), note


def _number(value: object, spec: str) -> str:
    """``value`` formatted by ``spec``, or ``—`` when the summary has no number there."""
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "—"


def _note(summary: dict) -> str:
    """What a point's figures do not say by themselves: a budget not met or inactive, a learned
    multiplier still moving or with too few rows to judge (empty when there is nothing to say)."""
    objective = OBJECTIVES.get(summary.get("mode"))
    symbol = objective.multiplier_symbol if objective is not None else "λ"
    kind = objective.budget_kind if objective is not None else "constraint"
    status = constraint_status(summary)
    parts = [summary.get("constraint_note") or f"{kind} {status}"] if status in ("NOT met", "inactive") else []
    remark = multiplier_remark(summary, symbol)
    return "; ".join([*parts, remark] if remark else parts)

"""A run's summary says whether its λ settled and whether its budget was ever active.

The rule (``constrained_vae.run.summary``): λ has settled when the mean of its logged values over
the last quarter of steps is within 5% of their mean over the quarter before, with at least 3 rows
in each; a met budget is inactive when its tail term is at most half of it with λ at its floor.
"""

import dataclasses
import json
import math
from pathlib import Path

import pandas as pd
import pytest
from analysis_testing import script

from constrained_vae.analysis.epsilon_beta import estimate_beta
from constrained_vae.analysis.sweep_table import load_sweep
from constrained_vae.cli.run import format_summary, run_main
from constrained_vae.core.linear_gaussian import beta_for_rate, distortion, rate
from constrained_vae.plots.tradeoff import write_tradeoff_analysis
from constrained_vae.run import folder
from constrained_vae.run.settings import RunConfig
from constrained_vae.run.summary import SETTLE_TOLERANCE, multiplier_drift, summarise
from constrained_vae.sweeps.report import format_report
from constrained_vae.sweeps.tasks import Outcome

ROOT = Path(__file__).resolve().parents[1]
NEW_KEYS = ("constraint_status", "constraint_note", "multiplier_drift", "multiplier_settled", "multiplier_verdict")
SPECTRUM = [9.0, 3.0, 1.0]
INACTIVE = "constraint inactive: KL 0.99 ≪ ε = 20, λ at its floor; the posterior may have collapsed"
LG = RunConfig(dataset="linear-gaussian", spectrum=SPECTRUM, steps=1500, log_every=25)


def rows_of(lams: list[float], kl: float, epsilon: float | None, every: int = 25, nll: float = 70.0) -> list[dict]:
    """metrics.csv rows, one per ``every`` steps, with multiplier ``lams[i]`` and a constant KL and NLL."""
    eps = math.nan if epsilon is None else epsilon
    return [
        dict(step=every * (i + 1), nll=nll, kl=kl, loss=nll + lam * kl, multiplier=lam, epsilon=eps, seconds=i / 10)
        for i, lam in enumerate(lams)
    ]


def falling(n: int = 60) -> list[float]:
    """λ flat at 1.2 over the first half of the run, then falling linearly to 0.67 (the dSprites ε = 20 run)."""
    return [1.2 if i < n // 2 else 1.2 - 0.53 * (i - n // 2 + 1) / (n - n // 2) for i in range(n)]


def flat(n: int = 60, level: float = 2.12) -> list[float]:
    """λ settled at ``level`` with a ±0.3% wobble."""
    return [level * (1 + 0.003 * math.sin(i)) for i in range(n)]


def constrained(epsilon: float, **kw) -> RunConfig:
    return dataclasses.replace(LG, epsilon=epsilon, **kw)


def test_a_falling_multiplier_is_flagged_still_moving():
    summary = summarise(constrained(20), rows_of(falling(), kl=20.01, epsilon=20), 1.0)
    assert summary["constraint_status"] == "met" and summary["constraint_satisfied"]
    assert summary["multiplier_drift"] < -SETTLE_TOLERANCE
    assert summary["multiplier_settled"] is False and summary["multiplier_verdict"] == "still moving"
    printed = format_summary(Path("r"), summary)
    lam_line = next(line for line in printed.splitlines() if line.strip().startswith("λ"))
    assert "(λ still moving: -" in lam_line and "% over the last quarter of steps)" in lam_line


def test_a_flat_multiplier_is_settled_and_printed_plainly():
    summary = summarise(constrained(2), rows_of(flat(), kl=2.0, epsilon=2), 1.0)
    assert abs(summary["multiplier_drift"]) < 0.01
    assert summary["multiplier_settled"] is True and summary["multiplier_verdict"] == "settled"
    printed = format_summary(Path("r"), summary)
    assert "still moving" not in printed and "too few" not in printed and "constraint met" in printed


def test_a_collapsed_run_is_reported_inactive_not_met():
    summary = summarise(constrained(20), rows_of([1e-6] * 12, kl=0.986, epsilon=20, nll=542.0), 1.0)
    assert summary["constraint_satisfied"] is True  # KL ≤ ε holds ...
    assert summary["constraint_status"] == "inactive"  # ... but the budget never bound
    assert summary["constraint_note"] == INACTIVE
    printed = format_summary(Path("r"), summary)
    assert INACTIVE in printed and "constraint met" not in printed
    # a met budget with λ well above its floor is active, however small its KL
    active = summarise(constrained(20), rows_of([0.5] * 12, kl=0.986, epsilon=20), 1.0)
    assert active["constraint_status"] == "met" and active["constraint_note"] is None


def test_one_row_is_too_few_to_judge():
    summary = summarise(constrained(2), rows_of([2.4359], kl=2.0, epsilon=2), 1.0)
    assert multiplier_drift(rows_of([2.4359], kl=2.0, epsilon=2)) is None
    assert summary["multiplier_settled"] is False and summary["multiplier_verdict"] == "too few rows to judge"
    printed = format_summary(Path("r"), summary)
    assert "λ   = 2.4359 ± n/a (1 row)  (too few rows to judge whether λ settled)" in printed
    assert "± 0.0000" not in printed  # a spread of one row would read as settled


def test_a_tail_of_fewer_rows_than_the_settled_rule_needs_prints_no_spread_and_enough_rows_print_it():
    few = summarise(constrained(2), rows_of(flat(20), kl=2.0, epsilon=2, every=75), 1.0)  # 20 rows, 2 in the tail
    assert few["tail_rows"] == 2
    assert f"λ   = {few['multiplier']:.4f} ± n/a (2 rows)" in format_summary(Path("r"), few)
    enough = summarise(constrained(2), rows_of(flat(), kl=2.0, epsilon=2), 1.0)  # 60 rows, 6 in the tail
    assert enough["tail_rows"] == 6
    assert f"λ   = {enough['multiplier']:.4f} ± {enough['multiplier_std']:.4f}" in format_summary(Path("r"), enough)
    old = {k: v for k, v in few.items() if k != "tail_rows"}  # written before the count was kept
    assert f"± {few['multiplier_std']:.4f}" in format_summary(Path("r"), old)


def test_fixed_beta_has_no_verdict_and_old_summaries_still_read(tmp_path):
    fixed = summarise(dataclasses.replace(LG, beta=3.0), rows_of([3.0] * 60, kl=2.0, epsilon=None), 1.0)
    assert fixed["multiplier_settled"] is None and fixed["multiplier_drift"] is None
    assert fixed["multiplier_verdict"] is None and fixed["constraint_status"] is None
    old = {k: v for k, v in summarise(constrained(2), rows_of(falling(), 2.0, 2), 1.0).items() if k not in NEW_KEYS}
    printed = format_summary(Path("r"), old)  # unknown: neither "settled" nor "still moving"
    assert "constraint met" in printed and "still moving" not in printed and "too few" not in printed
    run_dir = tmp_path / "old"
    folder.create(run_dir, constrained(2))
    folder.write_summary(run_dir, old)
    assert "note: " not in format_report(tmp_path, [Outcome("old", "done")])
    assert load_sweep(tmp_path).runs["multiplier_settled"].isna().all()


def test_the_sweep_table_notes_moving_and_inactive_points_and_reads_a_geco_run(tmp_path):
    points = {
        "moving": (constrained(20), rows_of(falling(), 20.01, 20)),
        "collapsed": (constrained(20), rows_of([1e-6] * 12, 0.986, 20)),
        "settled": (constrained(2), rows_of(flat(), 2.0, 2)),
        "geco": (dataclasses.replace(LG, objective="geco", kappa=80.0), rows_of(flat(60, 4.0), 2.0, None)),
    }
    for name, (config, rows) in points.items():
        folder.create(tmp_path / name, config)
        folder.write_summary(tmp_path / name, summarise(config, rows, 1.0))
    lines = format_report(tmp_path, [Outcome(name, "done") for name in points]).splitlines()
    row = {line.split()[0]: line.split() for line in lines[1:5]}
    assert row["settled"][-1] == "2.12" and row["geco"][-1] == "4" and row["moving"][-1] == "0.7142"
    notes = [line for line in lines if line.startswith("note: ")]
    assert len(notes) == 2, lines
    assert notes[0].startswith("note: moving: λ still moving: -")
    assert notes[0].endswith("% over the last quarter of steps")
    assert notes[1] == f"note: collapsed: {INACTIVE}"


def write_run(run_dir: Path, config: RunConfig, kl: float, nll: float, lams: list[float]) -> None:
    folder.create(run_dir, config)
    rows = rows_of(lams, kl, config.epsilon, every=config.log_every, nll=nll)
    folder.append_metrics(run_dir, rows)
    folder.write_summary(run_dir, summarise(config, rows, 1.0))


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    """A hand-written linear-Gaussian sweep on the closed form, whose λ at ε = 1 was still falling
    and whose budget ε = 8 never bound (KL 2.5, λ at its floor)."""
    sweep = tmp_path_factory.mktemp("moving-sweep")
    for eps in (0.5, 1.0, 2.0):
        beta = beta_for_rate(eps, SPECTRUM)
        lams = [beta * (1.5 - 0.5 * i / 59) for i in range(60)] if eps == 1.0 else flat(60, beta)
        write_run(sweep / f"eps{eps:g}-seed0", constrained(eps), eps, distortion(beta, SPECTRUM), lams)
    write_run(sweep / "eps8-seed0", constrained(8.0), 2.5, distortion(0.05, SPECTRUM), [1e-6] * 60)  # collapsed
    for beta in (0.5, 1.0, 2.0, 4.0):
        config = dataclasses.replace(LG, beta=beta)
        write_run(sweep / f"beta{beta:g}-seed0", config, rate(beta, SPECTRUM), distortion(beta, SPECTRUM), [beta] * 60)
    return sweep


def test_tradeoff_csv_says_where_lambda_was_still_moving_and_where_the_budget_was_inactive(sweep_dir):
    write_tradeoff_analysis(load_sweep(sweep_dir))
    csv = pd.read_csv(sweep_dir / "analysis" / "tradeoff.csv").set_index("epsilon")
    assert csv["multiplier_settled"].to_dict() == {0.5: True, 1.0: False, 2.0: True, 8.0: True}
    assert csv["constraint_inactive"].to_dict() == {0.5: False, 1.0: False, 2.0: False, 8.0: True}


def test_epsilon_to_beta_says_lambda_still_moving(sweep_dir, capsys):
    sweep = load_sweep(sweep_dir)
    assert estimate_beta(sweep, 1.0)["multiplier_settled"] is False
    assert estimate_beta(sweep, 0.7)["multiplier_settled"] is False  # interpolated through ε = 1
    assert estimate_beta(sweep, 2.0)["multiplier_settled"] is True
    moving = script(capsys, "epsilon_to_beta.py", sweep_dir, "--epsilon", 1)
    assert moving.returncode == 0, moving.stderr
    assert "dual (λ still moving)" in moving.stdout and "converged λ" not in moving.stdout
    assert moving.stderr.startswith("warning: λ still moving at ε = 1 (drift ")
    clean = script(capsys, "epsilon_to_beta.py", sweep_dir, "--epsilon", 2)
    assert clean.returncode == 0 and "converged λ" in clean.stdout and clean.stderr == ""


def test_epsilon_to_beta_says_an_inactive_budget_is_no_effective_beta(sweep_dir, capsys):
    assert estimate_beta(load_sweep(sweep_dir), 8.0)["constraint_inactive"]
    inactive = script(capsys, "epsilon_to_beta.py", sweep_dir, "--epsilon", 8)
    assert inactive.returncode == 0, inactive.stderr
    assert "dual (budget inactive)" in inactive.stdout and "converged λ" not in inactive.stdout
    assert inactive.stderr.startswith("warning: constraint inactive at ε = 8 (KL 2.5)")
    assert "posterior may have collapsed" in inactive.stderr


FAST = "--dataset linear-gaussian --spectrum 4,2,1 --num-samples 256 --batch-size 32 --no-progress".split()


def test_a_real_run_writes_the_verdict_and_prints_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_main(["--epsilon", "1", *FAST, "--steps", "40", "--log-every", "2", "--out", "r"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert all(key in summary for key in NEW_KEYS)
    assert isinstance(summary["multiplier_drift"], float) and isinstance(summary["multiplier_settled"], bool)
    assert summary["constraint_status"] in ("met", "NOT met", "inactive")
    assert ("λ still moving" in printed) == (summary["multiplier_verdict"] == "still moving")
    assert run_main(["--epsilon", "1", *FAST, "--steps", "5", "--log-every", "5", "--out", "one"]) == 0
    assert json.loads((tmp_path / "one" / "summary.json").read_text())["multiplier_settled"] is False
    assert "too few rows to judge whether λ settled" in capsys.readouterr().out

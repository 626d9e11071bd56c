"""The study's analysis applies the rules of ``tradeoff_curves.py``: a budget missed, a λ still moving, a budget
inactive are said in its table, report, warnings and figure, and a pair whose constrained run missed its budget
is left out of the paired comparison, named with the reason.

The study here is hand-written run folders (no training): four β × two seeds, and at each β's matched ε a
constrained run per seed that ended over its budget (β = 1), with λ still moving (β = 4), settled (β = 16) or
with its budget inactive (β = 64).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from analysis_testing import script

from constrained_vae.analysis.study import load_study
from constrained_vae.analysis.sweep_table import load_sweep
from constrained_vae.cli.study_analysis import analysis_main
from constrained_vae.plots.study import plot_maps
from constrained_vae.plots.tradeoff import UNCONVERGED_STYLE, write_tradeoff_analysis
from constrained_vae.run import folder
from constrained_vae.run.settings import RunConfig
from constrained_vae.run.summary import summarise
from constrained_vae.sweeps.study import STUDY_FILE, SWEEP_DIR

BASE = RunConfig(dataset="linear-gaussian", spectrum=[9.0, 3.0, 1.0], steps=200, log_every=10)
SEEDS = (0, 1)
# β → (its fixed runs' KL, the matched ε's runs: KL as a multiple of ε, λ at the start and at the end)
POINTS = {
    1.0: (9.05, (2.6, 50.0, 283.0)),  # over budget, λ still rising: a lower bound
    4.0: (4.46, (1.0, 2.0, 3.0)),  # met, λ still moving
    16.0: (2.0, (1.0, 16.0, 16.0)),  # met and settled
    64.0: (1.0, (0.2, 0.0, 0.0)),  # met with KL ≪ ε and λ at its floor: inactive
}
UNMET, MOVING, SETTLED, INACTIVE = (POINTS[b][0] for b in POINTS)


def write_run(run_dir: Path, config: RunConfig, kl: float, lambdas: tuple[float, float], mig: float) -> None:
    """A finished run folder logged every 10 of 200 steps, λ going linearly from ``lambdas[0]`` to ``lambdas[1]``."""
    folder.create(run_dir, config)
    rows = []
    for step in range(10, 201, 10):
        lam = lambdas[0] + (lambdas[1] - lambdas[0]) * step / 200
        epsilon = config.epsilon if config.epsilon is not None else float("nan")
        rows.append(dict(step=step, nll=100 / (1 + kl), kl=kl, loss=0.0, multiplier=lam, epsilon=epsilon, seconds=1.0))
    folder.append_metrics(run_dir, rows)
    folder.write_summary(run_dir, summarise(config, rows, 2.0))
    folder.write_scores(run_dir, {"scores": {"mig": {"mig": mig}}, "protocols": {"mig": {}}})


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    study = tmp_path_factory.mktemp("honest-study") / "study"
    sweep = study / SWEEP_DIR
    for beta, (fixed_kl, (ratio, lam0, lam1)) in POINTS.items():
        for seed in SEEDS:
            fixed = dataclasses.replace(BASE, beta=beta, seed=seed)
            write_run(sweep / f"beta{beta:g}-seed{seed}", fixed, fixed_kl, (beta, beta), 0.1 * seed)
            constrained = dataclasses.replace(BASE, epsilon=fixed_kl, seed=seed)
            kl = ratio * fixed_kl * (1 + 0.01 * seed)
            write_run(sweep / f"eps{fixed_kl:g}-seed{seed}", constrained, kl, (lam0, lam1), 0.2 + 0.1 * seed)
    plan = {"betas": list(POINTS), "extra_epsilons": [], "seeds": list(SEEDS)}
    matched = {f"{beta:g}": kl for beta, (kl, _) in POINTS.items()}
    record = {"command": [], "plan": plan, "sweep_args": [], "matched_epsilon": matched}
    (study / STUDY_FILE).write_text(json.dumps(record))
    return study


def row_of(report: str, start: str) -> str:
    return next(line for line in report.splitlines() if line.startswith(start))


def run_analysis(study_dir: Path, capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = analysis_main([str(study_dir), "--no-traversals", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_a_missed_budget_is_a_lower_bound_and_a_moving_or_inactive_lambda_is_named_in_the_report(study_dir, capsys):
    status, out, _ = run_analysis(study_dir, capsys)
    assert status == 0
    assert (study_dir / "analysis" / "report.md").read_text().strip() == out.split("\n\nwrote ")[0].strip()
    unmet = row_of(out, f"| ε = {UNMET:g} ")
    assert "| ≥ 277.2 ± 0 |" in unmet  # λ's tail mean, still rising
    assert "constraint not met (KL 2.6–2.63 ε, 2 of 2 seeds): λ is a lower bound" in unmet
    assert "λ still moving, 2 of 2 seeds" in row_of(out, f"| ε = {MOVING:g} ")
    assert "constraint inactive" in row_of(out, f"| ε = {INACTIVE:g} ")
    settled = row_of(out, f"| ε = {SETTLED:g} ")
    assert "≥" not in settled and settled.endswith("|  |")
    assert "≥" not in row_of(out, "| β = 1 ")
    table = pd.read_csv(study_dir / "analysis" / "study_table.csv")
    table = table[table["mode"] == "constrained"].set_index("value")
    assert table.loc[UNMET, "n_unmet"] == 2 and table.loc[MOVING, "n_unsettled"] == 2
    assert table.loc[INACTIVE, "n_inactive"] == 2 and table.loc[SETTLED, ["n_unmet", "n_unsettled"]].sum() == 0


def test_the_study_warns_in_the_words_of_tradeoff_curves_and_its_map_marks_the_lower_bound(study_dir, capsys):
    status, out, err = run_analysis(study_dir, capsys)
    assert status == 0
    curves = script(capsys, "tradeoff_curves.py", study_dir / SWEEP_DIR)
    assert curves.returncode == 0
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert warnings == [line for line in curves.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 3 and "constraint not met" in warnings[0] and "λ still moving" in warnings[1]
    assert "constraint inactive" in warnings[2]
    assert all(f"- {line}" in out for line in warnings)  # and in report.md
    map_row = row_of(out, f"| {UNMET:g} |")
    assert "| ≥ " in map_row and "constraint not met: λ a lower bound" in map_row
    assert "λ still moving" in row_of(out, f"| {MOVING:.4g} |")


def test_a_pair_whose_constrained_run_missed_or_never_met_its_budget_is_left_out_and_named(study_dir, capsys):
    status, out, _ = run_analysis(study_dir, capsys)
    assert status == 0
    pairs = pd.read_csv(study_dir / "analysis" / "pairs.csv")
    left_out = pairs[pairs["left_out"].notna()]
    assert sorted(left_out["constrained.name"]) == [f"eps{e:g}-seed{s}" for e in (INACTIVE, UNMET) for s in SEEDS]
    paired = pd.read_csv(study_dir / "analysis" / "paired.csv")
    assert paired[paired["beta"].isna()].set_index("quantity").loc["kl", "n_pairs"] == 4  # 8 pairs, 4 left out
    assert set(paired["beta"].dropna()) == {4.0, 16.0}
    assert "Left out of the paired comparison (4 of 8 pairs):" in out
    named = row_of(out, "- β = 1 ↔ ε = 9.05, seed 0:")
    assert f"eps{UNMET:g}-seed0 missed its budget: KL 23.5 > 1.05 ε = 9.5" in named and "not matched" in named
    assert "had its budget inactive: KL 0.2 ≪ ε = 1" in row_of(out, "- β = 64 ↔ ε = 1, seed 0:")


def test_the_effective_beta_figure_rings_the_lower_bound_and_the_moving_lambda_with_a_legend_entry(study_dir):
    from constrained_vae.analysis.study import epsilon_beta_map

    _, sweep = load_study(study_dir)
    maps = epsilon_beta_map(sweep, load_sweep(study_dir / SWEEP_DIR))
    ax = plot_maps(maps).axes[0]
    handles, labels = ax.get_legend_handles_labels()
    drawn = dict(zip(labels, handles, strict=True))
    unmet = drawn[UNCONVERGED_STYLE["unmet"]["label"]]
    assert list(unmet.get_xdata()) == [UNMET] and unmet.get_markeredgecolor() == "red"
    assert unmet.get_markerfacecolor() == "none"
    assert list(drawn[UNCONVERGED_STYLE["moving"]["label"]].get_xdata()) == [MOVING]
    assert list(drawn[UNCONVERGED_STYLE["inactive"]["label"]].get_xdata()) == [INACTIVE]
    assert list(drawn[UNCONVERGED_STYLE["unmet"]["label"] + " (reference sweep)"].get_xdata()) == [UNMET]


def test_a_study_whose_every_constrained_run_met_its_budget_compares_every_pair_with_no_warning(
    study_dir, capsys, tmp_path
):
    clean = tmp_path / "study"
    shutil.copytree(study_dir, clean, ignore=shutil.ignore_patterns("analysis"))
    record = json.loads((clean / STUDY_FILE).read_text())
    record["plan"]["betas"] = [16.0]
    record["matched_epsilon"] = {"16": SETTLED}
    (clean / STUDY_FILE).write_text(json.dumps(record))
    for run in (clean / SWEEP_DIR).iterdir():
        if run.name.split("-")[0] not in ("beta16", f"eps{SETTLED:g}", "beta4", "beta64"):
            shutil.rmtree(run)
    status, out, err = run_analysis(clean, capsys)
    assert status == 0 and "warning" not in err and "≥" not in out and "Left out" not in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--select-by", "bogus"], "error: --select-by 'bogus' is no score of the study's runs; choose one of mig.mig"),
        (["--reference", "/nonexistent"], "error: --reference: /nonexistent is not a folder"),
        (["--seed", "-1"], "error: --seed must be an integer from 0"),
    ],
)
def test_a_bad_flag_of_the_study_analysis_is_one_error_line_and_writes_nothing(
    study_dir, tmp_path, capsys, args, message
):
    study = tmp_path / "study"
    shutil.copytree(study_dir, study, ignore=shutil.ignore_patterns("analysis"))
    capsys.readouterr()
    status = analysis_main([str(study), *args])
    out, err = capsys.readouterr()
    assert status == 2 and out == "" and err.startswith(message) and err.count("\n") == 1, err
    assert not (study / "analysis").exists()


def test_the_tradeoff_figure_of_the_same_sweep_rings_the_same_points(study_dir):
    table, _ = write_tradeoff_analysis(load_sweep(study_dir / SWEEP_DIR))
    assert list(table.loc[~table["constraint_met"], "epsilon"]) == [UNMET]


def test_a_swept_epsilon_whose_runs_have_not_finished_is_reported_and_never_interpolated_across(
    study_dir, tmp_path, capsys
):
    sweep = tmp_path / "sweep"
    shutil.copytree(study_dir / SWEEP_DIR, sweep, ignore=shutil.ignore_patterns("analysis"))
    for seed in SEEDS:
        (sweep / f"eps{MOVING:g}-seed{seed}" / folder.SUMMARY_FILE).unlink()
    answer = script(capsys, "epsilon_to_beta.py", sweep, "--epsilon", MOVING)
    assert answer.returncode == 0, answer.stderr
    dual = next(line for line in answer.stdout.splitlines() if "dual" in line)
    assert f"not interpolated: the runs at swept ε = {MOVING:g} have not finished" in dual
    assert "interpolated between" not in answer.stdout
    assert f"2 unfinished run(s) of {sweep} left out" in answer.stderr
    curves = script(capsys, "tradeoff_curves.py", sweep)
    assert curves.returncode == 0 and f"eps{MOVING:g}-seed0, eps{MOVING:g}-seed1" in curves.stderr
    assert MOVING not in set(pd.read_csv(sweep / "analysis" / "tradeoff.csv")["epsilon"])


def test_runs_rerun_with_another_log_every_are_still_one_sweep_to_every_analysis(study_dir, tmp_path, capsys):
    study = tmp_path / "study"
    shutil.copytree(study_dir, study, ignore=shutil.ignore_patterns("analysis"))
    config_file = study / SWEEP_DIR / f"eps{SETTLED:g}-seed1" / folder.CONFIG_FILE
    config_file.write_text(json.dumps(json.loads(config_file.read_text()) | {"log_every": 5, "threads": 1}))
    assert script(capsys, "tradeoff_curves.py", study / SWEEP_DIR).returncode == 0
    assert script(capsys, "epsilon_to_beta.py", study / SWEEP_DIR, "--epsilon", SETTLED).returncode == 0
    assert run_analysis(study, capsys)[0] == 0


def test_without_the_default_score_the_study_says_it_draws_no_traversals_and_names_the_scores_to_pick_by(
    study_dir, capsys
):
    capsys.readouterr()
    assert analysis_main([str(study_dir)]) == 0
    out, err = capsys.readouterr()
    said = (
        "warning: no traversal figures: the runs hold no betavae_score.eval_accuracy score to pick by; "
        "choose one of mig.mig with --select-by"
    )
    assert said in err.splitlines() and f"- {said}" in out
    assert not list((study_dir / "analysis").glob("traversals-*"))


def test_a_study_whose_every_pair_missed_its_budget_compares_none_and_says_so(study_dir, tmp_path, capsys):
    study = tmp_path / "study"
    shutil.copytree(study_dir, study, ignore=shutil.ignore_patterns("analysis"))
    record = json.loads((study / STUDY_FILE).read_text())
    record["plan"]["betas"], record["matched_epsilon"] = [1.0], {"1": UNMET}
    (study / STUDY_FILE).write_text(json.dumps(record))
    for run in (study / SWEEP_DIR).iterdir():
        if run.name.startswith("eps") and not run.name.startswith(f"eps{UNMET:g}-"):
            shutil.rmtree(run)
    status, out, _ = run_analysis(study, capsys)
    assert status == 0 and "No pair left to compare." in out and "(2 of 2 pairs)" in out
    assert "| quantity | pairs |" not in out

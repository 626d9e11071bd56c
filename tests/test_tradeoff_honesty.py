"""The analysis says when a constraint was not met, and its figures can be read.

The sweep here is hand-written run folders (no training): a linear-Gaussian sweep whose
runs sit on the closed form, except at ε = 0.1, where the run ended with KL = 1.5 ε and λ
at half of β*(ε), still rising.
"""

import dataclasses
import math
import runpy
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from analysis_testing import script

from constrained_vae.analysis.epsilon_beta import estimate_beta, tradeoff_table
from constrained_vae.analysis.sweep_table import Sweep, load_sweep
from constrained_vae.core.linear_gaussian import beta_for_rate, distortion, rate
from constrained_vae.plots.tradeoff import (
    format_table,
    plot_effective_beta,
    plot_rate_distortion,
    plot_training_curves,
    write_tradeoff_analysis,
)
from constrained_vae.run import folder
from constrained_vae.run.settings import RunConfig
from constrained_vae.run.summary import summarise

ROOT = Path(__file__).resolve().parents[1]
SPECTRUM = [9.0, 3.0, 1.0]
UNMET_EPSILON = 0.1
EPSILONS = [UNMET_EPSILON, 0.5, 1.0, 2.0]
BETAS = [0.5, 1.0, 2.0, 4.0, 8.0]
BASE = RunConfig(dataset="linear-gaussian", spectrum=SPECTRUM, steps=200, log_every=10)


def write_run(run_dir: Path, config: RunConfig, kl: float, nll: float, multiplier: float) -> None:
    """A finished run folder whose KL and λ approach ``kl`` and ``multiplier`` over 200 steps."""
    folder.create(run_dir, config)
    rows = []
    for step in range(10, 201, 10):
        settle = 1 - math.exp(-step / 30)
        lam = multiplier * settle if config.epsilon is not None else multiplier
        epsilon = config.epsilon if config.epsilon is not None else math.nan
        row = dict(step=step, nll=nll, kl=kl * (2 - settle), loss=nll + lam * kl, multiplier=lam, epsilon=epsilon)
        rows.append(row | {"seconds": step / 100})
    folder.append_metrics(run_dir, rows)
    folder.write_summary(run_dir, summarise(config, rows, 2.0))


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    sweep = tmp_path_factory.mktemp("honest-sweep")
    for eps in EPSILONS:
        beta = beta_for_rate(eps, SPECTRUM)
        kl, lam = (1.5 * eps, 0.5 * beta) if eps == UNMET_EPSILON else (eps, beta)
        config = dataclasses.replace(BASE, epsilon=eps)
        write_run(sweep / f"eps{eps:g}-seed0", config, kl, distortion(lam, SPECTRUM), lam)
    for beta in BETAS:
        config = dataclasses.replace(BASE, beta=beta)
        write_run(sweep / f"beta{beta:g}-seed0", config, rate(beta, SPECTRUM), distortion(beta, SPECTRUM), beta)
    return sweep


def test_unmet_constraints_are_marked_in_the_table_the_csv_and_a_warning(sweep_dir, capsys):
    done = script(capsys, "tradeoff_curves.py", sweep_dir)
    assert done.returncode == 0, done.stderr
    csv = pd.read_csv(sweep_dir / "analysis" / "tradeoff.csv").set_index("epsilon")
    assert list(csv["constraint_met"]) == [False, True, True, True]
    unmet_row = next(line for line in done.stdout.splitlines() if line.startswith(f"| {UNMET_EPSILON:g} |"))
    assert "≥" in unmet_row and "**no**" in unmet_row
    met_row = next(line for line in done.stdout.splitlines() if line.startswith("| 1 |"))
    assert "≥" not in met_row and met_row.rstrip(" |").endswith("yes")
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1, done.stderr
    assert f"ε = {UNMET_EPSILON:g} (KL 1.5 ε" in warnings[0] and "lower bound" in warnings[0]
    assert "ε = 0.5 " not in warnings[0]


def test_a_dual_estimate_interpolated_through_an_unmet_point_is_not_called_converged(sweep_dir, capsys):
    sweep = load_sweep(sweep_dir)
    assert not estimate_beta(sweep, 0.3)["constraint_met"]  # between 0.1 (unmet) and 0.5
    assert estimate_beta(sweep, 0.7)["constraint_met"]  # between 0.5 and 1, both met
    through = script(capsys, "epsilon_to_beta.py", sweep_dir, "--epsilon", 0.3)
    assert through.returncode == 0, through.stderr
    assert "converged λ" not in through.stdout and "lower bound" in through.stdout
    assert through.stderr.startswith("warning: ") and f"ε = {UNMET_EPSILON:g} (" in through.stderr
    clean = script(capsys, "epsilon_to_beta.py", sweep_dir, "--epsilon", 0.7)
    assert clean.returncode == 0 and "converged λ" in clean.stdout and clean.stderr == ""
    between = (
        0.5 * beta_for_rate(UNMET_EPSILON, SPECTRUM) + beta_for_rate(0.5, SPECTRUM)
    ) / 2  # between λ(0.5) and the unsettled λ(0.1)
    inverse = script(capsys, "epsilon_to_beta.py", sweep_dir, "--beta", between)
    assert inverse.returncode == 0 and "not an estimate" in inverse.stdout and "warning: " in inverse.stderr


def test_the_multiplier_axis_labels_values_between_1_and_10(sweep_dir):
    fig = plot_training_curves(load_sweep(sweep_dir))
    fig.canvas.draw()
    ax_lambda = fig.axes[1]
    labelled = {label.get_position()[1]: label.get_text() for label in ax_lambda.get_yticklabels() if label.get_text()}
    assert labelled.get(0.0) == "0"
    between = {value: text for value, text in labelled.items() if 1 < value < 10}
    assert between and all(float(text) == pytest.approx(value) for value, text in between.items()), labelled
    top = max(ax_lambda.get_ylim())
    assert top >= max(beta_for_rate(eps, SPECTRUM) for eps in EPSILONS[1:])


def _drawn(artist) -> bool:
    """Whether a legend's artist has finite data on the axes."""
    if isinstance(artist, matplotlib.lines.Line2D):
        return bool(np.isfinite(artist.get_xydata()).all(axis=1).any())
    if isinstance(artist, matplotlib.collections.Collection):
        offsets = np.asarray(artist.get_offsets())
        return bool(len(offsets) and np.isfinite(offsets).all(axis=1).any()) or bool(artist.get_paths())
    return True


def test_legends_list_only_what_is_drawn(sweep_dir):
    full = load_sweep(sweep_dir)
    # no fixed-β runs: the inverse estimate has no value at any ε; two ε: no interior slope
    constrained = full.runs[(full.runs["mode"] == "constrained") & full.runs["epsilon"].isin([0.5, 1.0])]
    sweep = Sweep(full.path, constrained.reset_index(drop=True), full.settings | {"dataset": "digits"})
    table = tradeoff_table(sweep)
    assert table["beta_inverse_fixed"].isna().all() and table["beta_slope"].isna().all()
    for fig in (plot_effective_beta(sweep, table), plot_rate_distortion(sweep), plot_training_curves(sweep)):
        for ax in fig.axes:
            legend = ax.get_legend()
            if legend is None:
                continue
            handles, labels = ax.get_legend_handles_labels()
            assert [t.get_text() for t in legend.get_texts()] == labels
            assert all(_drawn(h) for h in handles), [
                lab for h, lab in zip(handles, labels, strict=True) if not _drawn(h)
            ]
        fig = plot_effective_beta(sweep, table)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["dual: converged λ"]


def test_the_analysis_writes_every_figure_with_an_unmet_point(sweep_dir):
    table, paths = write_tradeoff_analysis(load_sweep(sweep_dir))
    assert "≥" in format_table(table)
    for name in ("effective_beta", "rate_distortion", "training_curves"):
        assert sweep_dir / "analysis" / f"{name}.png" in paths


def test_run_figures_refuse_an_unknown_or_absent_device_in_one_line(tmp_path, capsys):
    main = runpy.run_path(str(ROOT / "analysis" / "figures.py"))["main"]
    with pytest.raises(SystemExit) as exited:
        main([str(tmp_path), "--device", "tpu"])
    assert exited.value.code == 2 and "invalid choice: 'tpu'" in capsys.readouterr().err
    if not torch.cuda.is_available():  # the device is refused before the folder is read
        assert main([str(tmp_path), "--device", "cuda"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "CUDA" in err

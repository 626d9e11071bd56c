"""The paper-scale study end to end on a tiny CPU configuration: presets, the study script (interrupted and
continued), its refusals, and the analysis; plus the analysis' statistics on hand-made numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from ray_testing import local_ray
from study_testing import TINY_STUDY_RUNS

from constrained_vae.analysis.study import bootstrap_interval, paired_comparison, sign_test
from constrained_vae.cli import study
from constrained_vae.cli.common import settings_from_args
from constrained_vae.cli.run import run_parser
from constrained_vae.cli.study_analysis import analysis_main
from constrained_vae.errors import ConfigError
from constrained_vae.run import folder, locks
from constrained_vae.run.settings import RunConfig
from constrained_vae.sweeps.study import STUDY_FILE, SWEEP_DIR

# 2 β × 2 seeds, then their 2 matched ε × 2 seeds: 8 dSprites runs of 4 steps, scored on MIG at a tiny size.
TINY = [
    *TINY_STUDY_RUNS,
    "--workers",
    "2",
    "--no-progress",
    "--eval-metrics",
    "mig",
    "--eval-num-train",
    "40",
    "--eval-device",
    "cpu",
    # A multiplier setting: the ε points take it, the β points drop it.
    "--dual-lr",
    "0.01",
]


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    """A study stopped in its second phase, then continued to the end by the same command; its folder and logs."""
    out = tmp_path_factory.mktemp("study") / "study"
    calls = []

    def interrupted_second_phase(argv, *prog):
        calls.append(list(argv))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return sweep_main(argv, *prog)

    sweep_main = study.sweep_main
    with local_ray(num_cpus=2), pytest.MonkeyPatch.context() as patch:
        patch.setattr(study, "sweep_main", interrupted_second_phase)
        stopped = study.study_main(["--out", str(out), *TINY])
        recorded = json.loads((out / STUDY_FILE).read_text())
        finished = study.study_main(["--out", str(out), *TINY])
    return out, stopped, recorded, finished, calls


def test_a_preset_fills_the_settings_not_given_and_is_recorded():
    config = RunConfig(beta=4.0, preset="locatello2019", lr=1e-3).resolved()
    assert (config.steps, config.batch_size, config.optimizer, config.model) == (300_000, 64, "adam", "dlib-conv")
    assert config.lr == 1e-3  # given explicitly: the preset's 1e-4 is overridden
    assert config.to_dict()["preset"] == "locatello2019"
    assert "optimizer" not in RunConfig(beta=4.0).resolved().numerics()  # runs without a preset are unchanged
    args = run_parser().parse_args(["--beta", "4", "--preset", "higgins2017"])
    assert RunConfig(**settings_from_args(args)).resolved().optimizer == "adagrad"
    with pytest.raises(ConfigError, match="--preset higgins2017 is a setup for --dataset dsprites"):
        RunConfig(beta=4.0, dataset="digits", preset="higgins2017").resolved()


def test_the_study_trains_fixed_then_matched_runs_and_continues_after_an_interruption(finished_study):
    out, stopped, recorded, finished, calls = finished_study
    assert stopped == 130 and finished == 0
    sweep = out / SWEEP_DIR
    kls = {b: [folder.read_summary(sweep / f"beta{b}-seed{s}")["kl"] for s in (0, 1)] for b in (1, 4)}
    expected = {f"{b}": float(f"{sum(v) / 2:.3g}") for b, v in kls.items()}
    assert recorded["matched_epsilon"] == expected  # recorded before phase 2 started
    assert "--epsilon" not in calls[0] and "--epsilon" in calls[1]
    assert calls[2][: calls[2].index("--out")] == calls[1][: calls[1].index("--out")]  # no phase 1 on resume
    names = sorted(p.name for p in sweep.iterdir() if (p / folder.SUMMARY_FILE).exists())
    assert names == sorted(
        [f"beta{b}-seed{s}" for b in (1, 4) for s in (0, 1)]
        + [f"eps{e:g}-seed{s}" for e in expected.values() for s in (0, 1)]
    )
    config = folder.read_config(sweep / names[0])
    assert (config.preset, config.steps, config.lr) == ("locatello2019", 4, 1e-4)
    for name in names:
        scores = folder.read_scores(sweep / name)
        assert scores["step"] == 4 and scores["protocols"]["mig"]["num_train"] == 40


def test_rerunning_a_finished_study_trains_and_scores_nothing(finished_study, capsys):
    out = finished_study[0]
    files = [p for p in (out / SWEEP_DIR).rglob("*") if p.is_file() and not locks.is_bookkeeping(p)]
    before = {p: p.stat().st_mtime_ns for p in files}
    assert study.study_main(["--out", str(out), *TINY]) == 0
    assert "0 run(s) scored now" in capsys.readouterr().out
    after = {p: p.stat().st_mtime_ns for p in before}
    assert after == before


def test_a_rerun_its_sweep_refuses_leaves_the_study_folder_as_it_was(finished_study, capsys):
    out = finished_study[0]
    files = [p for p in out.rglob("*") if p.is_file() and not locks.is_bookkeeping(p)]
    before = {p: p.read_bytes() for p in files}
    assert study.study_main(["--out", str(out), *TINY, "--lr", "0.01"]) == 2
    assert "differs in --lr" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in files} == before
    assert sorted(p for p in out.rglob("*") if p.is_file() and not locks.is_bookkeeping(p)) == sorted(files)


def test_another_plan_in_the_same_folder_is_refused_before_anything_runs(finished_study, tmp_path, capsys):
    out = finished_study[0]
    record = (out / STUDY_FILE).read_text()
    assert study.study_main(["--out", str(out), *TINY, "--seeds", "0"]) == 2
    assert "holds a study of" in capsys.readouterr().err
    assert (out / STUDY_FILE).read_text() == record
    assert study.study_main(["--out", str(tmp_path / "s"), *TINY, "--beta", "2"]) == 2
    assert "--beta: the study sets these" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unrecognized arguments: --bogus (see experiments/sweep.py --help)"),
        (["--steps", "0"], "steps must be a positive integer"),
        (["--gpus-per-run", "-1"], "--gpus-per-run must be a non-negative number"),
        (["--kappa", "30"], "--kappa"),  # a GECO setting, refused for the study's runs before phase 1
        (["--eval-num-train", "0"], "--eval-num-train must be an integer ≥ 1, got 0"),
        (["--eval-num-bins", "1"], "--eval-num-bins must be an integer ≥ 2, got 1"),
        (["--eval-seed", "-1"], "--eval-seed must be an integer from 0"),
    ],
)
def test_a_bad_flag_for_the_sweeps_is_refused_before_the_study_folder_is_written(tmp_path, capsys, args, message):
    assert study.study_main(["--out", str(tmp_path / "s"), *TINY, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert not (tmp_path / "s").exists()


def test_the_analysis_writes_the_table_the_paired_comparison_the_map_and_the_figures(finished_study, capsys):
    out = finished_study[0]
    assert analysis_main([str(out), "--select-by", "mig.mig", "--reference", str(out / SWEEP_DIR)]) == 0
    report = capsys.readouterr().out
    assert "SHORTENED from locatello2019's published 300,000" in report
    analysis = out / "analysis"
    table = pd.read_csv(analysis / "study_table.csv")
    assert sorted(table["mode"]) == ["constrained"] * 2 + ["fixed-beta"] * 2
    assert {"kl_mean", "kl_std", "nll_mean", "multiplier_mean", "mig.mig_mean", "mig.mig_std"} <= set(table.columns)
    pairs = pd.read_csv(analysis / "pairs.csv")
    compared = pairs["left_out"].isna()  # runs of 4 steps: a constrained run may end over its budget
    assert len(pairs) == 4 and compared.any()
    for name in pairs.loc[~compared, "constrained.name"]:
        assert f"its constrained run {name} missed its budget" in report
    paired = pd.read_csv(analysis / "paired.csv")
    pooled = paired[paired["beta"].isna()].set_index("quantity")
    assert pooled.loc["mig.mig", "n_pairs"] == compared.sum()
    assert pooled.loc["kl", "ci_low"] <= pooled.loc["kl", "ci_high"]
    maps = pd.read_csv(analysis / "epsilon_beta_map.csv")
    np.testing.assert_allclose(maps["beta_dual"], maps["ref_beta_dual"])  # the reference is the study itself
    for name in (
        "scores_against_kl",
        "training_curves",
        "effective_beta",
        "traversals-fixed-beta",
        "traversals-constrained",
    ):
        assert (analysis / f"{name}.png").stat().st_size > 0


def test_the_sign_test_and_the_bootstrap_interval():
    assert sign_test(np.array([1.0, 2.0, 3.0, -1.0, 0.0])) == (3, 1, pytest.approx(0.625))
    assert math.isnan(sign_test(np.zeros(3))[2])
    assert bootstrap_interval(np.full(5, 2.0)) == (2.0, 2.0)
    low, high = bootstrap_interval(np.array([0.0, 1.0, 2.0, 3.0]), num=2000)
    assert 0.0 <= low < 1.5 < high <= 3.0


def test_the_paired_comparison_takes_constrained_minus_fixed_per_beta_and_pooled():
    pairs = pd.DataFrame(
        {
            "beta": [1.0, 1.0, 4.0, 4.0],
            "epsilon": [20.0, 20.0, 10.0, 10.0],
            "seed": [0, 1, 0, 1],
            "fixed.mig.mig": [0.1, 0.2, 0.3, 0.4],
            "constrained.mig.mig": [0.2, 0.3, 0.3, 0.6],
        }
    )
    table = paired_comparison(pairs, ["mig.mig"]).set_index("beta", drop=False)
    assert table.loc[1.0, "mean_difference"] == pytest.approx(0.1)
    assert table.loc[1.0, "epsilon"] == 20.0
    pooled = table[table["beta"].isna()].iloc[0]
    assert pooled["mean_difference"] == pytest.approx(0.1) and (pooled["n_positive"], pooled["n_negative"]) == (3, 0)


@pytest.mark.parametrize(
    "matched",
    [{"1": 2.0, "4": 1.0, "16": 0.5}, {"1": "2", "4": 1.0}, {"1": [2.0], "4": 1.0}, {"1": 2.0}, [1.0]],
)
def test_a_tampered_study_record_is_refused_in_one_line_naming_it(tmp_path, capsys, matched):
    out = tmp_path / "study"
    out.mkdir()
    plan = {"betas": [1.0, 4.0], "extra_epsilons": [], "seeds": [0, 1]}
    record = {"command": [], "plan": plan, "sweep_args": [], "matched_epsilon": matched}
    (out / STUDY_FILE).write_text(json.dumps(record))
    assert study.study_main(["--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {out / STUDY_FILE} is not a study record (matched_epsilon") and "\n" not in err
    assert sorted(p.name for p in out.iterdir()) == [STUDY_FILE]


@pytest.mark.parametrize(("key", "value"), [("run_settings", [1]), ("points", 5)])
def test_a_tampered_sweep_record_is_refused_in_one_line_naming_it(tmp_path, capsys, key, value):
    from constrained_vae.cli.sweep import sweep_main

    out = tmp_path / "sweep"
    out.mkdir()
    record = {"command": [], "grid": {"epsilon": [1.0], "beta": [], "seeds": [0]}, "run_settings": {}, "points": []}
    (out / "sweep.json").write_text(json.dumps(record | {key: value}))
    assert sweep_main(["--out", str(out), "--epsilon", "1", "--dataset", "linear-gaussian", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {out / 'sweep.json'} is not a sweep record ({key} is not a {type(record[key]).__name__})"

"""experiments/evaluate.py and analysis/figures.py on a tiny trained dSprites run.

The run trains for 4 steps (nothing is learnt; the point is the plumbing): metrics.json and the
PNGs are written with the promised contents, non-run folders are refused with exit 2, and runs
on data without factors are skipped with a message.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

from constrained_vae.analysis.sweep_table import run_row
from constrained_vae.data.dsprites import FACTOR_NAMES as DSPRITES_FACTORS
from constrained_vae.errors import ConfigError, RunFolderError
from constrained_vae.evaluation import scoring
from constrained_vae.evaluation.scoring import (
    evaluate_paths,
    evaluate_run,
    find_run_dirs,
    format_table,
    protocols_with,
    small_sample_note,
)
from constrained_vae.plots.run_figures import plot_reconstructions, write_figures
from constrained_vae.run.folder import SCORES_FILE
from constrained_vae.run.loop import train
from constrained_vae.run.settings import RunConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(num_train=40, num_eval=20, batch_size=4, num_variance_estimate=64, predictor="forest")  # forest: fast
REQUIRED_SCORES = {
    "betavae_score": {"train_accuracy", "eval_accuracy"},
    "factorvae_score": {"train_accuracy", "eval_accuracy"},
    "mig": {"mig"},
    "dci": {"disentanglement", "completeness", "informativeness"},
    "sap_score": {"sap"},
    "modularity_explicitness": {"modularity_score", "explicitness_score_train", "explicitness_score_test"},
}
FIGURES = ("kl_per_dimension.png", "latent_traversals.png", "reconstructions.png", "prior_samples.png")


def load_script(relative: str):
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem + "_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A sweep folder: a 4-step dSprites run, a 4-step linear-gaussian run and a stray folder."""
    root = tmp_path_factory.mktemp("sweep")
    dsprites = RunConfig(
        epsilon=5.0, dataset="dsprites", steps=4, batch_size=4, latent_dim=4, log_every=2, checkpoint_every=2
    )
    train(dsprites, root / "dsprites-eps5", progress=False)
    linear = RunConfig(
        epsilon=1.0,
        dataset="linear-gaussian",
        spectrum=[4.0, 2.0, 1.0],
        num_samples=256,
        steps=4,
        batch_size=32,
        log_every=2,
        checkpoint_every=2,
    )
    train(linear, root / "linear-eps1", progress=False)
    (root / "analysis").mkdir()  # not a run: ignored
    return root


@pytest.fixture(scope="module")
def run(sweep) -> Path:
    return sweep / "dsprites-eps5"


# ---------------------------------------------------------------------------- evaluate


def test_evaluate_writes_metrics_json_with_every_score_and_the_protocol(run):
    protocols = protocols_with(TINY)
    (evaluation,) = evaluate_paths([run], seed=7, protocols=protocols)
    saved = json.loads((run / SCORES_FILE).read_text())
    assert saved == json.loads(json.dumps(evaluation.result))
    for metric, keys in REQUIRED_SCORES.items():
        assert keys <= set(saved["scores"][metric])
        for key in keys:  # a score, or null with the reason (this 4-step encoder's means barely vary)
            value = saved["scores"][metric][key]
            assert 0.0 <= value <= 1.0 if value is not None else key in saved["scores"][metric]["undefined"]
    assert saved["protocols"] == json.loads(json.dumps(protocols))
    assert saved["protocols"]["dci"]["num_test"] == 20 and saved["protocols"]["mig"]["num_bins"] == 20
    assert saved["protocols"]["dci"]["predictor"] == "forest"
    assert saved["scores"]["dci"]["predictor_settings"]["classifier"] == "sklearn.ensemble.RandomForestClassifier"
    assert saved["seed"] == 7 and saved["step"] == 4 and saved["dataset"] == "dsprites"
    assert saved["representation"] == "posterior mean"
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


def test_the_same_seed_gives_the_same_scores(run):
    protocols = protocols_with(TINY, ["mig", "factorvae_score"])
    first = evaluate_run(run, seed=1, protocols=protocols)["scores"]
    assert evaluate_run(run, seed=1, protocols=protocols)["scores"] == first


def test_metrics_scored_one_at_a_time_accumulate_for_the_same_step_and_seed(run):
    evaluate_paths([run], seed=11, protocols=protocols_with(TINY, ["mig"]))
    evaluate_paths([run], seed=11, protocols=protocols_with(TINY, ["dci"]))
    saved = json.loads((run / SCORES_FILE).read_text())
    assert set(saved["scores"]) == set(saved["protocols"]) == set(saved["seconds"]) == {"mig", "dci"}
    evaluate_paths([run], seed=12, protocols=protocols_with(TINY, ["mig"]))  # another seed: a fresh file
    assert set(json.loads((run / SCORES_FILE).read_text())["scores"]) == {"mig"}


def test_a_protocol_too_small_for_a_score_to_mean_anything_is_warned_and_noted_in_metrics_json(tmp_path, run, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    main = load_script("experiments/evaluate.py").main
    one = ["--metrics", "betavae_score", "--num-train", "1", "--num-eval", "1", "--batch-size", "2"]
    assert main([str(copy), *one]) == 0
    out, err = capsys.readouterr()
    note = "num_train = 1, num_eval = 1 < 25 (5 points for each of the 5 factors"
    assert [line for line in err.splitlines() if line.startswith("warning: ")] == [
        f"warning: {copy}: betavae_score: {note} (a point's class is the factor held fixed)): "
        "too few points for the score to mean anything"
    ]
    assert json.loads((copy / SCORES_FILE).read_text())["notes"]["betavae_score"].startswith(note)
    assert f"BetaVAE: {note}" in out  # under the table
    enough = ["--metrics", "betavae_score", "--num-train", "25", "--num-eval", "25", "--batch-size", "2"]
    assert main([str(copy), *enough]) == 0  # scored again at enough points: the note goes
    out, err = capsys.readouterr()
    assert "warning" not in err and "too few points" not in out
    assert json.loads((copy / SCORES_FILE).read_text())["notes"] == {}


def test_each_metric_needs_a_handful_of_points_per_class_or_bin():
    sizes = [3, 6, 40, 32, 32]  # dSprites
    protocols = protocols_with({"num_train": 199, "num_eval": 200})
    noted = {name: small_sample_note(name, protocol, sizes) for name, protocol in protocols.items()}
    assert noted["betavae_score"] is None and noted["factorvae_score"] is None and noted["mig"] is None
    for name in ("dci", "sap_score", "modularity_explicitness"):  # 40 orientations × 5
        assert noted[name].startswith("num_train = 199 < 200 (5 points for each of the 40 values"), name
    assert small_sample_note("mig", {"num_train": 99, "num_bins": 20}, sizes).startswith("num_train = 99 < 100")
    assert small_sample_note("betavae_score", {"num_train": 25, "num_eval": 24}, sizes).startswith("num_eval = 24")
    assert all(small_sample_note(n, p, sizes) is None for n, p in protocols_with().items())  # published sizes


def test_every_per_factor_score_is_keyed_by_the_datasets_factor_names(run):
    evaluate_paths([run], seed=13, protocols=protocols_with(TINY, ["mig", "sap_score"]))
    saved = json.loads((run / SCORES_FILE).read_text())
    assert saved["factor_names"] == DSPRITES_FACTORS
    keyed = [saved["scores"]["mig"]["mig_per_factor"], saved["scores"]["sap_score"]["sap_per_factor"]]
    assert all(list(scores) == DSPRITES_FACTORS for scores in keyed)
    assert all(value is None or 0 <= value <= 1 for value in saved["scores"]["mig"]["mig_per_factor"].values())
    dci = {"informativeness_per_factor": [0.5, 0.6], "importance_matrix": [[0.1, 0.2]], "undefined": {}}
    assert scoring.keyed_by_factor(dci, ["a", "b"]) == dci | {"informativeness_per_factor": {"a": 0.5, "b": 0.6}}
    with pytest.raises(ValueError, match="informativeness_per_factor has 2 scores for 3 factors"):
        scoring.keyed_by_factor(dci, ["a", "b", "c"])


def test_a_metrics_json_with_per_factor_lists_is_still_read_and_keyed_when_metrics_join_it(run):
    step = evaluate_run(run, seed=14, protocols=protocols_with(TINY, ["mig"]))["step"]
    old = {"mig": {"mig": 0.25, "mig_per_factor": [0.1, 0.2, 0.3, 0.4, 0.25], "num_bins": 20}}
    (run / SCORES_FILE).write_text(json.dumps({"scores": old, "protocols": {"mig": {}}, "seed": 14, "step": step}))
    row, _ = run_row(run)  # the sweep table reads the old file as before
    assert row["mig.mig"] == 0.25
    assert scoring.keyed_by_factor(old["mig"], DSPRITES_FACTORS)["mig_per_factor"]["pos_x"] == 0.4
    evaluate_paths([run], seed=14, protocols=protocols_with(TINY, ["sap_score"]))
    saved = json.loads((run / SCORES_FILE).read_text())
    assert saved["scores"]["mig"]["mig_per_factor"] == dict(
        zip(DSPRITES_FACTORS, [0.1, 0.2, 0.3, 0.4, 0.25], strict=True)
    )
    assert list(saved["scores"]["sap_score"]["sap_per_factor"]) == DSPRITES_FACTORS


def test_protocol_overrides_reach_every_metric_with_that_setting():
    protocols = protocols_with({"num_train": 100, "num_eval": 30})
    assert {p["num_train"] for p in protocols.values()} == {100}
    assert protocols["betavae_score"]["num_eval"] == protocols["dci"]["num_test"] == 30
    assert protocols["factorvae_score"]["num_variance_estimate"] == 10000  # untouched default
    assert protocols["dci"]["predictor"] == "boosting"  # the published predictor, recorded explicitly
    assert "n_jobs" not in protocols["dci"]  # speed, not protocol
    assert protocols_with({"num_bins": 10}, ["dci"]) == protocols_with({}, ["dci"])  # not DCI's: ignored
    with pytest.raises(ConfigError, match="no metric has a setting 'num_bin'"):
        protocols_with({"num_bin": 10})
    with pytest.raises(ConfigError, match="unknown metric"):
        protocols_with({}, ["sap"])


def test_a_sweep_is_every_run_subfolder_and_a_run_without_factors_is_skipped(sweep, capsys):
    main = load_script("experiments/evaluate.py").main
    flags = "--num-train 40 --num-eval 20 --batch-size 4 --dci-predictor forest".split()
    assert main([str(sweep), "--metrics", "mig,dci", *flags]) == 0
    out, err = capsys.readouterr()
    assert "skipped" in err and "linear-eps1" in err and "no ground-truth factors" in err
    assert "dsprites-eps5" in out and "ε=5" in out and "MIG" in out and "skipped" in out
    assert not (sweep / "linear-eps1" / SCORES_FILE).exists()
    saved = json.loads((sweep / "dsprites-eps5" / SCORES_FILE).read_text())
    assert set(saved["scores"]) == {"mig", "dci"}
    assert saved["protocols"]["mig"]["num_train"] == 40
    assert saved["protocols"]["dci"]["predictor"] == "forest"
    assert "DCI predictor: forest" in out


def test_evaluate_run_refuses_a_run_without_factors(sweep):
    with pytest.raises(RunFolderError, match="no ground-truth factors"):
        evaluate_run(sweep / "linear-eps1", protocols=protocols_with(TINY))


def test_find_run_dirs_refuses_a_folder_that_is_neither_run_nor_sweep(tmp_path, sweep):
    assert find_run_dirs([sweep]) == [sweep / "dsprites-eps5", sweep / "linear-eps1"]
    with pytest.raises(RunFolderError, match="not a run folder"):
        find_run_dirs([tmp_path])
    with pytest.raises(RunFolderError, match="is not a folder"):
        find_run_dirs([tmp_path / "missing"])


@pytest.mark.parametrize(
    "args",
    [["{empty}"], ["{missing}"], ["{run}", "--metrics", "sap"], ["{run}", "--num-train", "0", "--metrics", "mig"]],
)
def test_bad_input_is_one_line_error_and_exit_2(tmp_path, run, capsys, args):
    names = {"empty": tmp_path, "missing": tmp_path / "missing", "run": run}
    argv = [arg.format(**names) for arg in args]
    assert load_script("experiments/evaluate.py").main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--num-bins", "1"], "--num-bins must be an integer ≥ 2, got 1"),
        (["--num-eval", "-5"], "--num-eval must be an integer ≥ 1, got -5"),
        (["--seed", "-1"], "--seed must be an integer from 0"),
    ],
)
def test_a_bad_protocol_flag_is_refused_before_any_metric_runs(run, capsys, args, message):
    scores = run / SCORES_FILE
    before = scores.read_bytes() if scores.exists() else None
    assert load_script("experiments/evaluate.py").main([str(run), *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"error: {message}") and err.count("\n") == 1
    assert (scores.read_bytes() if scores.exists() else None) == before


def test_the_real_command_line_refuses_a_non_run_folder(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "evaluate.py"), str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "not a run folder" in done.stderr and done.stdout == ""


def test_format_table_has_a_row_per_run(sweep):
    evaluations = evaluate_paths([sweep], protocols=protocols_with(TINY, ["mig"]))
    table = format_table(evaluations)
    assert "dsprites-eps5" in table and "linear-eps1" in table
    assert "—" in table  # scores not computed show a dash


def test_an_undefined_score_is_null_in_metrics_json_with_its_reason_and_undefined_in_the_table(run, monkeypatch):
    """A collapsed encoder (constant posterior mean): FactorVAE has no active dimension to vote for."""
    monkeypatch.setattr(scoring, "posterior_mean_fn", lambda model: lambda x: np.zeros((x.shape[0], 4)))
    (result,) = evaluate_paths([run], seed=21, protocols=protocols_with(TINY, ["factorvae_score", "mig"]))
    text = (run / SCORES_FILE).read_text()
    assert "NaN" not in text
    saved = json.loads(text)["scores"]["factorvae_score"]
    assert saved["eval_accuracy"] is None and saved["train_accuracy"] is None and saved["num_active_dims"] == 0
    assert "no active code dimension" in saved["undefined"]["eval_accuracy"]
    table = format_table([result])
    cells = table.splitlines()[1].split()  # run, setting, BetaVAE, FactorVAE, MIG, …
    assert cells[3] == "undefined" and cells[2] == "—"
    assert f"FactorVAE undefined: {saved['undefined']['eval_accuracy']}" in table


def test_device_cuda_without_a_gpu_is_one_line_error_before_any_run_is_read(sweep, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    main = load_script("experiments/evaluate.py").main
    assert main([str(sweep / "linear-eps1"), "--device", "cuda"]) == 2  # even where every run is skipped
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1 and "cuda" in err
    with pytest.raises(SystemExit) as exit_info:  # not a device at all: refused by the parser, in one line too
        main([str(sweep), "--device", "tpu"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and "invalid choice: 'tpu'" in err
    assert err.count("\n") == 1


# ---------------------------------------------------------------------------- figures


def test_figures_are_valid_pngs_of_sensible_size(run):
    paths = write_figures(run, num_kl_observations=64, num_reconstructions=6, num_prior_samples=16)
    assert sorted(p.name for p in paths) == sorted(FIGURES)
    for path in paths:
        assert path.parent == run / "figures"
        image = matplotlib.image.imread(path)
        height, width = image.shape[:2]
        assert 150 <= height <= 3000 and 300 <= width <= 3000, (path.name, image.shape)
        assert np.ptp(image[..., :3]) > 0.5, path.name  # not blank


def test_traversals_have_a_row_per_latent_and_the_figures_cli_prints_the_paths(run, capsys):
    main = load_script("analysis/figures.py").main
    assert main([str(run), "--num-kl-images", "32"]) == 0
    out = capsys.readouterr().out
    for name in FIGURES:
        assert name in out
    # 4 latent dimensions → the traversal figure is wider than tall
    height, width = matplotlib.image.imread(run / "figures" / "latent_traversals.png").shape[:2]
    assert width > height


def test_the_figures_cli_writes_pdf_or_png_at_the_dpi_asked(run, capsys):
    main = load_script("analysis/figures.py").main
    assert main([str(run), "--num-kl-images", "16", "--format", "pdf"]) == 0
    for name in FIGURES:
        assert (run / "figures" / name).with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
    assert main([str(run), "--num-kl-images", "16", "--dpi", "75"]) == 0
    small = matplotlib.image.imread(run / "figures" / "kl_per_dimension.png").shape
    assert main([str(run), "--num-kl-images", "16"]) == 0  # the default, 150
    default = matplotlib.image.imread(run / "figures" / "kl_per_dimension.png").shape
    assert 1.9 < default[0] / small[0] < 2.1 and 1.9 < default[1] / small[1] < 2.1, (default, small)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--dpi", "0"], "--dpi must be an integer from 1 to 1200, got 0"),
        (["--dpi", "5000"], "--dpi must be an integer from 1 to 1200, got 5000"),
        (["--dpi", "1.5"], "invalid int value"),
        (["--format", "svg"], "invalid choice: 'svg'"),
    ],
)
def test_a_bad_dpi_or_format_is_one_line_error_and_no_figure_is_written(run, capsys, flags, message):
    def written() -> dict:
        return {path: path.stat().st_mtime_ns for path in (run / "figures").glob("*")}

    before = written()
    try:
        code = load_script("analysis/figures.py").main([str(run), *flags])
    except SystemExit as exited:  # refused by the parser
        code = exited.code
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert written() == before


def test_the_reconstructions_figure_says_its_nll_is_of_its_images_at_the_posterior_mean():
    images = np.random.default_rng(0).random((6, 8, 8))
    figure = plot_reconstructions(images, images, nll=123.4)
    (ax,) = figure.axes[:1]
    text = ax.get_title() + " " + ax.get_xlabel()
    assert "posterior mean" in text and "these 6 images decoded at z = μ: 123.4 nats per image" in text
    assert "not the run's tail NLL" in text


def test_figures_of_non_image_data_are_the_kl_chart_only(sweep):
    paths = write_figures(sweep / "linear-eps1", num_kl_observations=32)
    assert [p.name for p in paths] == ["kl_per_dimension.png"]


def test_figures_refuse_a_non_run_folder_with_exit_2(tmp_path, capsys):
    assert load_script("analysis/figures.py").main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_a_geco_run_is_scored_tabled_and_drawn(tmp_path):
    config = RunConfig(objective="geco", kappa=3000.0, steps=2, batch_size=8, latent_dim=3, log_every=1)
    train(config, tmp_path / "geco", progress=False)
    evaluations = evaluate_paths([tmp_path / "geco"], protocols=protocols_with({"num_train": 40}, ["mig"]))
    row = format_table(evaluations).splitlines()[1]
    assert "geco κ=3000" in row and "None" not in row
    assert {path.name for path in write_figures(tmp_path / "geco")} >= {"reconstructions.png", "prior_samples.png"}

"""A model and data of the user's own through the whole tool chain: train, resume, sweep, analysis, scores, figures.

The model below is defined here, not in the package; runs name it ``test_user_model:make_vae`` (this
file is importable as ``test_user_model`` wherever ``tests/`` is on the path).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from constrained_vae import RunConfig, VAEOutput, evaluate_paths, load_run, save_arrays, train, write_figures
from constrained_vae.errors import ConfigError, DataError
from constrained_vae.evaluation.scoring import protocols_with
from constrained_vae.run import folder
from constrained_vae.run.user_models import import_path

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
GRID = (4, 5)  # two factors: 20 observations, every combination once


class TinyVAE(nn.Module):
    """A VAE of the user's own, not a ``constrained_vae.VAE``: one hidden layer each way, its own forward."""

    def __init__(self, features: int, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.body = nn.Sequential(nn.Linear(features, 16), nn.Tanh())
        self.heads = nn.Linear(16, 2 * latent_dim)
        self.out = nn.Sequential(nn.Linear(latent_dim, 16), nn.Tanh(), nn.Linear(16, features))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_var = self.heads(self.body(x)).chunk(2, dim=1)
        return mu, log_var

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(z)

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> VAEOutput:
        mu, log_var = self.encode(x)
        noise = torch.randn_like(mu) if noise is None else noise
        z = mu + noise * (0.5 * log_var).exp()
        return VAEOutput(mu=mu, log_var=log_var, z=z, decoded=self.decode(z))


def make_vae(sample_shape: tuple[int, ...], latent_dim: int) -> TinyVAE:
    return TinyVAE(sample_shape[0], latent_dim)


def not_a_model(sample_shape, latent_dim):
    return nn.Linear(sample_shape[0], latent_dim)


def factor_data(path: Path) -> Path:
    """Vectors of 8 features made from two factors on a complete 4 × 5 grid, plus noise; Gaussian."""
    rng = np.random.default_rng(0)
    factors = np.array([(i, j) for i in range(GRID[0]) for j in range(GRID[1])])
    mixing = rng.normal(size=(2, 8))
    data = (factors / np.array(GRID) - 0.5) @ mixing + 0.05 * rng.normal(size=(len(factors), 8))
    return save_arrays(path, torch.tensor(data), factors=factors, factor_names=["size", "position"])


def config(data: Path, **overrides) -> RunConfig:
    settings = dict(
        epsilon=1.0,
        dataset="arrays",
        data_path=str(data),
        model=import_path(make_vae),
        latent_dim=2,
        steps=30,
        batch_size=8,
        log_every=5,
        checkpoint_every=10,
    )
    return RunConfig(**(settings | overrides))


def script(path: str, *args: str) -> subprocess.CompletedProcess:
    """``python ROOT/path ARGS`` with this file importable (its model is named ``test_user_model:...``)."""
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(ROOT / path), *args], capture_output=True, text=True, env=env)


def numbers(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in folder.read_metrics(run_dir)]


def test_the_import_path_of_a_factory_names_its_module_and_name():
    assert import_path(make_vae) == "test_user_model:make_vae"
    with pytest.raises(ConfigError, match="no import path"):
        import_path(lambda shape, latent: None)


def test_a_model_and_data_of_ones_own_train_resume_and_are_recorded(tmp_path):
    data = factor_data(tmp_path / "data.npz")
    whole = tmp_path / "whole"
    train(config(data), whole, progress=False)
    assert [row["step"] for row in folder.read_metrics(whole)] == [5, 10, 15, 20, 25, 30]
    recorded = json.loads((whole / folder.CONFIG_FILE).read_text())
    assert (recorded["model"], recorded["dataset"], recorded["likelihood"]) == (
        "test_user_model:make_vae",
        "arrays",
        "gaussian",
    )
    assert (
        torch.load(whole / folder.CHECKPOINT_FILE, weights_only=True)["model"].keys()
        == TinyVAE(8, 2).state_dict().keys()
    )

    parts = tmp_path / "parts"
    train(config(data, steps=20), parts, progress=False)
    train(config(data), parts, resume=True, progress=False)
    assert numbers(parts) == numbers(whole)
    assert isinstance(load_run(parts).model, TinyVAE)


def test_a_run_of_ones_own_is_scored_and_drawn(tmp_path):
    data = factor_data(tmp_path / "data.npz")
    run = tmp_path / "run"
    train(config(data), run, progress=False)
    tiny = dict(num_train=40, num_eval=20, batch_size=4, num_variance_estimate=20, predictor="forest")
    evaluate_paths([run], protocols=protocols_with(tiny, ["mig", "betavae_score"]))
    scores = json.loads((run / folder.SCORES_FILE).read_text())
    assert 0.0 <= scores["scores"]["mig"]["mig"] <= 1.0
    assert len(scores["scores"]["mig"]["mig_per_factor"]) == 2
    figures = write_figures(run, num_kl_observations=16, num_reconstructions=4)
    assert figures and all(path.stat().st_size > 0 for path in figures)


def test_a_sweep_over_a_model_and_data_of_ones_own_trains_every_point_and_maps_epsilon_to_beta(tmp_path):
    data = factor_data(tmp_path / "data.npz")
    common = ["--dataset", "arrays", "--data-path", str(data), "--model", "test_user_model:make_vae"]
    grid = ["--latent-dim", "2", "--epsilon", "0.5", "2", "--steps", "20", "--batch-size", "8", "--log-every", "5"]
    sweep = script("experiments/sweep.py", *common, *grid, "--executor", "local", "--out", str(tmp_path / "s"))
    assert sweep.returncode == 0, sweep.stderr
    runs = sorted(path.parent for path in (tmp_path / "s").rglob(folder.SUMMARY_FILE))
    assert len(runs) == 2
    curves = script("analysis/tradeoff_curves.py", str(tmp_path / "s"))
    assert curves.returncode == 0, curves.stderr
    assert (tmp_path / "s" / "analysis").is_dir()


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("no_such_module_here:make", "cannot import no_such_module_here"),
        ("test_user_model:no_such_factory", "has no no_such_factory"),
        ("test_user_model:not_a_model", "lacks encode, decode, latent_dim"),
        ("test_user_model:", "package.module:factory"),
    ],
)
def test_a_model_that_cannot_be_built_is_one_error_line_and_no_folder(tmp_path, model, message):
    data = factor_data(tmp_path / "data.npz")
    flags = ["--epsilon", "1", "--dataset", "arrays", "--data-path", str(data), "--model", model]
    result = script("experiments/run.py", *flags, "--steps", "2", "--batch-size", "8", "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert not (tmp_path / "run").exists()


def test_images_of_another_size_need_a_model_of_ones_own(tmp_path):
    data = save_arrays(tmp_path / "small.npz", torch.rand(10, 3, 32, 32))
    with pytest.raises(ConfigError, match="no built-in model"):
        RunConfig(epsilon=1.0, dataset="arrays", data_path=str(data)).resolved()


def test_vectors_of_ones_own_take_the_vector_defaults_and_the_files_likelihood(tmp_path):
    data = save_arrays(tmp_path / "v.npz", torch.rand(50, 6).round())
    resolved = RunConfig(epsilon=1.0, dataset="arrays", data_path=str(data)).resolved()
    assert (resolved.model, resolved.likelihood) == ("mlp", "bernoulli")
    images = save_arrays(tmp_path / "i.npz", torch.rand(10, 1, 64, 64), likelihood="gaussian")
    resolved = RunConfig(epsilon=1.0, dataset="arrays", data_path=str(images)).resolved()
    assert (resolved.model, resolved.likelihood) == ("conv", "gaussian")


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (dict(data=np.zeros((4, 2, 3), dtype=np.float32)), "must be \\[n, features\\] vectors"),
        (dict(data=np.array([[np.nan, 1.0]])), "NaN"),
        (dict(data=np.zeros((4, 2)), factors=np.array([[0], [0], [1], [1]])), "complete grid"),
        (dict(data=np.zeros((2, 2)), factors=np.array([[0], [1]]), factor_names=np.array(["a", "b"])), "distinct"),
        (dict(data=np.full((2, 2), 3.0), likelihood=np.array("bernoulli")), "needs data in \\[0, 1\\]"),
        (dict(images=np.zeros((2, 2))), "unknown arrays"),
    ],
)
def test_a_file_that_is_not_a_dataset_is_refused_naming_the_problem(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    from constrained_vae.data.arrays import load_arrays

    with pytest.raises(DataError, match=message):
        load_arrays(path)

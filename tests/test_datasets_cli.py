"""Every benchmark dataset through the command line, on files made in its published format: a run trains,
resumes to the numbers of an uninterrupted run, is scored (or refused, without factors) and draws its figures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_files import SHAPES3D_SIZES, random_images, shapes3d_labels, smooth_rgb, write_h5, write_npz
from PIL import Image

from constrained_vae.cli.evaluate import main as evaluate_main
from constrained_vae.cli.figures import main as figures_main
from constrained_vae.cli.run import run_main
from constrained_vae.data import DATASETS, FACTOR_DATASETS
from constrained_vae.data.dsprites_variants import ScreamDSprites
from constrained_vae.evaluation.scoring import reseed_observations
from constrained_vae.run import folder

MPI3D_SIZES = (2, 2, 2, 2, 2, 2, 3)  # a small grid; the metrics need factors of two classes or more
TINY = "--epsilon 5 --latent-dim 3 --batch-size 8 --log-every 2 --checkpoint-every 2 --threads 1 --no-progress".split()


@pytest.fixture(scope="module")
def data_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Each dataset's flags that name its made file (none for the procedural ones)."""
    root = tmp_path_factory.mktemp("data")
    shapes3d = write_h5(
        root / "3dshapes.h5",
        images=random_images(math.prod(SHAPES3D_SIZES), seed=1),
        labels=shapes3d_labels(SHAPES3D_SIZES),
    )
    mpi3d = write_npz(root / "mpi3d_toy.npz", random_images(math.prod(MPI3D_SIZES), seed=2))
    scream = root / "scream.jpg"
    Image.fromarray(smooth_rgb(400, 500, seed=3)).save(scream, quality=95)
    images = root / "images"
    images.mkdir()
    for k in range(12):
        Image.fromarray(smooth_rgb(64, 64, seed=10 + k)).save(images / f"{k:02d}.png")
    sizes = ",".join(map(str, MPI3D_SIZES))
    return {
        "color-dsprites": [],
        "noisy-dsprites": [],
        "scream-dsprites": ["--data-path", str(scream)],
        "shapes3d": ["--data-path", str(shapes3d)],
        "mpi3d-toy": ["--data-path", str(mpi3d), "--factor-sizes", sizes],
        "images": ["--data-path", str(images)],
    }


DATASETS_HERE = ["color-dsprites", "noisy-dsprites", "scream-dsprites", "shapes3d", "mpi3d-toy", "images"]


def numbers(run_dir: Path) -> list[dict[str, float]]:
    """metrics.csv without the wall-clock column."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in folder.read_metrics(run_dir)]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / folder.CHECKPOINT_FILE, weights_only=True)["model"]


@pytest.mark.parametrize("dataset", DATASETS_HERE)
def test_a_run_trains_resumes_exactly_is_scored_and_draws_its_figures(dataset, data_files, tmp_path, capsys):
    flags = ["--dataset", dataset, *data_files[dataset], *TINY]
    assert run_main([*flags, "--steps", "6", "--out", str(tmp_path / "straight")]) == 0
    assert run_main([*flags, "--steps", "4", "--out", str(tmp_path / "split")]) == 0
    assert run_main(["--resume", str(tmp_path / "split"), "--steps", "6", "--no-progress"]) == 0
    assert numbers(tmp_path / "split") == numbers(tmp_path / "straight")
    straight, split = weights(tmp_path / "straight"), weights(tmp_path / "split")
    assert all(torch.equal(straight[name], split[name]) for name in straight)
    assert folder.read_config(tmp_path / "straight").dataset == dataset

    capsys.readouterr()
    assert evaluate_main([str(tmp_path / "straight"), "--metrics", "mig", "--num-train", "40"]) == 0
    scores = folder.read_scores(tmp_path / "straight")
    if dataset in FACTOR_DATASETS:
        assert scores["dataset"] == dataset and 0.0 <= scores["scores"]["mig"]["mig"] <= 1.0
    else:
        printed = capsys.readouterr()
        assert scores is None and "has no ground-truth factors" in printed.out + printed.err

    assert figures_main([str(tmp_path / "straight")]) == 0
    drawn = {path.stem for path in (tmp_path / "straight" / "figures").glob("*.png")}
    assert {"reconstructions", "prior_samples", "kl_per_dimension"} <= drawn


def test_every_dataset_that_reads_a_file_refuses_to_start_without_one(capsys):
    for name, source in DATASETS.items():
        if not source.path:
            continue
        assert run_main(["--epsilon", "5", "--dataset", name, "--steps", "2", "--no-progress"]) == 2
        error = capsys.readouterr().err.strip()
        assert error == f"error: --dataset {name} needs --data-path pointing to {source.path}"


def test_a_bad_file_ends_in_one_error_line_and_leaves_no_run_folder(tmp_path, capsys):
    bad = tmp_path / "3dshapes.h5"
    write_h5(bad, images=random_images(4, seed=0))  # no labels
    code = run_main(["--epsilon", "5", "--dataset", "shapes3d", "--data-path", str(bad), "--out", str(tmp_path / "r")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.startswith("error: ") and "\n" not in error and str(bad) in error
    assert not (tmp_path / "r").exists()


def test_factor_sizes_apply_to_mpi3d_alone_and_must_match_the_file(data_files, tmp_path, capsys):
    assert run_main(["--beta", "1", "--factor-sizes", "2,3", "--steps", "2", "--no-progress"]) == 2
    assert "--factor-sizes does not apply to --dataset dsprites" in capsys.readouterr().err
    path = data_files["mpi3d-toy"][1]
    code = run_main(["--beta", "1", "--dataset", "mpi3d-toy", "--data-path", path, "--out", str(tmp_path / "r")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.startswith("error: ") and path in error and "\n" not in error
    assert not (tmp_path / "r").exists()


def test_a_variant_is_scored_on_draws_fixed_by_the_metric_seed_whatever_was_drawn_before(data_files, tmp_path):
    flags = ["--dataset", "scream-dsprites", *data_files["scream-dsprites"], *TINY, "--steps", "2"]
    assert run_main([*flags, "--out", str(tmp_path / "r")]) == 0
    scored = []
    for _ in range(2):
        assert evaluate_main([str(tmp_path / "r"), "--metrics", "mig", "--num-train", "40"]) == 0
        scored.append(folder.read_scores(tmp_path / "r")["scores"]["mig"]["mig"])
    assert np.isfinite(scored[0]) and scored[0] == scored[1]
    dataset = ScreamDSprites(data_files["scream-dsprites"][1])
    factors = dataset.sample_factors(4, np.random.default_rng(0))
    reseed_observations(dataset, 7)
    first = dataset.observations(factors)
    dataset.observations(factors)  # draws that a figure, or another metric, might have made
    reseed_observations(dataset, 7)
    assert torch.equal(dataset.observations(factors), first)

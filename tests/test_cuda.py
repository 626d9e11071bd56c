"""The CUDA path: every objective and dual rule, resume (CUDA → CUDA and CPU → CUDA), eager against
compiled, banks, and a sweep sharing a GPU. Skipped without a CUDA device; ``CVAE_REQUIRE_CUDA=1``
turns those skips into failures (``benchmarks/gpu_check.sh`` sets it)."""

import dataclasses
import math

import pytest
import torch

from constrained_vae.run import folder
from constrained_vae.run.loop import resume_config, train, train_bank
from constrained_vae.run.settings import RunConfig

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
pytestmark = CUDA

OBJECTIVES = {
    **{f"constrained-{rule}": dict(epsilon=5.0, dual_update=rule) for rule in ("gradient", "log", "pi", "augmented")},
    "constrained-log+ema": dict(epsilon=5.0, dual_update="log+ema"),
    "fixed-beta": dict(beta=4.0),
    "capacity": dict(objective="capacity", epsilon=5.0, capacity_gamma=10.0, anneal_steps=4),
    "controlvae": dict(objective="controlvae", epsilon=5.0, anneal_steps=4),
    "geco": dict(objective="geco", kappa=2000.0),
}


def numbers(run_dir):
    """``metrics.csv`` without its wall-clock column (this file runs where Ray is not installed)."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in folder.read_metrics(run_dir)]


def conv(**overrides) -> RunConfig:
    settings = dict(dataset="dsprites", batch_size=8, latent_dim=4, steps=8, log_every=2, checkpoint_every=4)
    return RunConfig(**(settings | overrides))


def close(rows, expected, rel=1e-3, abs_=1e-4):
    assert [row["step"] for row in rows] == [row["step"] for row in expected]
    for row, other in zip(rows, expected, strict=True):
        for key in ("nll", "kl", "loss", "multiplier"):
            assert math.isclose(row[key], other[key], rel_tol=rel, abs_tol=abs_), (key, row["step"])


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_every_objective_and_rule_trains_and_resumes_on_cuda(tmp_path, name):
    config = conv(device="cuda", **OBJECTIVES[name])
    train(config, tmp_path / "straight", progress=False)
    train(dataclasses.replace(config, steps=4), tmp_path / "split", progress=False)
    train(resume_config(tmp_path / "split", {"steps": 8}), tmp_path / "split", resume=True, progress=False)
    close(numbers(tmp_path / "split"), numbers(tmp_path / "straight"))
    state = torch.load(tmp_path / "split" / folder.CHECKPOINT_FILE, weights_only=True)
    assert state["step"] == 8 and state["rng"]["noise_device"] == "cuda"


def test_a_cpu_run_resumes_on_cuda(tmp_path):
    run = tmp_path / "run"
    train(conv(device="cpu", epsilon=5.0, dual_update="augmented"), run, progress=False)
    train(resume_config(run, {"steps": 16, "device": "cuda"}), run, resume=True, progress=False)
    rows = numbers(run)
    assert [row["step"] for row in rows] == list(range(2, 17, 2))
    assert all(math.isfinite(row[key]) for row in rows for key in ("nll", "kl", "multiplier"))


def test_eager_and_compiled_agree_on_cuda(tmp_path):
    config = conv(device="cuda", epsilon=5.0, steps=6)
    train(config, tmp_path / "eager", progress=False)
    train(dataclasses.replace(config, compile=True), tmp_path / "compiled", progress=False)
    close(numbers(tmp_path / "compiled"), numbers(tmp_path / "eager"), rel=1e-2, abs_=1e-3)


@pytest.mark.parametrize("model", ["conv", "dlib-conv"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_a_stacked_bank_on_cuda_trains_its_members_as_their_solo_runs(tmp_path, compiled, model):
    """Compiled, the members' terms and Lagrangians and their backward run as CUDA graphs: none skipped, no
    graph break."""
    configs = [
        conv(device="cuda", epsilon=5.0, compile=compiled, model=model),
        conv(device="cuda", beta=4.0, seed=1, compile=compiled, model=model),
        conv(device="cuda", epsilon=5.0, dual_update="pi", seed=2, compile=compiled, model=model),
    ]
    for i, config in enumerate(configs):
        train(config, tmp_path / f"solo{i}", progress=False)
    counters = torch._dynamo.utils.counters
    counters.clear()
    dirs = [tmp_path / f"bank{i}" for i in range(len(configs))]
    outcomes = train_bank(configs, dirs, resume=[False] * len(configs), progress=False, strategy="stacked")
    assert all(isinstance(outcome, dict) for outcome in outcomes)
    if compiled:
        assert not counters["inductor"]["cudagraph_skips"], dict(counters)
        assert not counters["graph_break"], dict(counters["graph_break"])
    for i, run_dir in enumerate(dirs):
        close(numbers(run_dir), numbers(tmp_path / f"solo{i}"), rel=1e-2, abs_=1e-2)


def test_a_compiled_bf16_bank_member_continues_eager_and_alone(tmp_path):
    """A member checkpointed by a compiled stacked bank (its optimizers' state made in CUDA graphs) resumes as
    an eager solo run; bf16 runs its forward in bfloat16 and keeps KL and λ in float32."""
    precision = "bf16"
    configs = [
        conv(device="cuda", epsilon=5.0, compile=True, precision=precision),
        conv(device="cuda", beta=4.0, seed=1, compile=True, precision=precision),
    ]
    dirs = [tmp_path / f"bank{i}" for i in range(len(configs))]
    train_bank(configs, dirs, resume=[False, False], progress=False, strategy="stacked")
    train(resume_config(dirs[0], {"steps": 12, "compile": False}), dirs[0], resume=True, progress=False)
    rows = numbers(dirs[0])
    assert [row["step"] for row in rows] == list(range(2, 13, 2))
    assert all(math.isfinite(row[key]) for row in rows for key in ("nll", "kl", "multiplier"))
    state = torch.load(dirs[0] / folder.CHECKPOINT_FILE, weights_only=True)
    assert state["multiplier"] > 0 and state["numerics"]["precision"] == precision


def test_two_points_share_one_gpu_in_a_sweep(tmp_path):
    pytest.importorskip("ray", reason="needs Ray (a sweep sharing a GPU is Ray's)")
    from constrained_vae.cli.sweep import sweep_main

    args = ["--dataset", "dsprites", "--batch-size", "8", "--latent-dim", "4", "--steps", "6", "--log-every", "2"]
    args += ["--device", "cuda", "--epsilon", "5", "--beta", "4", "--gpus-per-run", "0.5", "--no-progress"]
    assert sweep_main([*args, "--out", str(tmp_path / "sweep")]) == 0
    for name in ("eps5-seed0", "beta4-seed0"):
        assert folder.read_config(tmp_path / "sweep" / name).device == "cuda"

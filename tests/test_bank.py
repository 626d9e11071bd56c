"""Run banks: runs of one shape trained side by side in one process, each an ordinary run.

A member's numbers are its solo run's: bit for bit when the bank steps its members in turn
(``sequential``, the CPU default), within :data:`STACKED_TOLERANCE` when one batched forward and
backward serve all of them (``stacked``, the GPU default), whose batched kernels round differently.
"""

import dataclasses
import math
import subprocess
import sys

import pytest
import torch
from ray_testing import ROOT, assert_same_run, numbers

from constrained_vae.core.objectives import Optimization
from constrained_vae.errors import ConfigError, TrainingDiverged
from constrained_vae.run import folder
from constrained_vae.run.bank import Bank, bank_key
from constrained_vae.run.loop import resume_config, train, train_bank
from constrained_vae.run.settings import RunConfig

# Stacked members against their solo runs over 200 dSprites steps: the first rows (20 steps) agree to 0.1%,
# then the runs drift apart as chaotic training amplifies it (measured: NLL within 0.1%, λ within 2%, a KL of
# 0.02–0.2 nats within 0.07 nats).
STACKED_TOLERANCE = {"nll": (0.01, 0.0), "loss": (0.01, 0.0), "multiplier": (0.03, 1e-3), "kl": (0.0, 0.1)}


def linear(**overrides) -> RunConfig:
    settings = dict(
        dataset="linear-gaussian", spectrum=[9.0, 3.0, 1.0], num_samples=512, batch_size=32, steps=200, log_every=20
    )
    return RunConfig(**(settings | overrides))


def conv(**overrides) -> RunConfig:
    settings = dict(
        dataset="dsprites", batch_size=8, latent_dim=4, steps=200, log_every=20, checkpoint_every=100, threads=1
    )
    return RunConfig(**(settings | overrides))


def members(shape) -> list[RunConfig]:
    """A constrained member under each of two dual rules and a fixed-β member, with seeds of their own."""
    return [shape(epsilon=2.0), shape(epsilon=3.0, dual_update="gradient", seed=1), shape(beta=4.0, seed=2)]


def solo_runs(configs, root):
    for i, config in enumerate(configs):
        train(config, root / f"solo{i}", progress=False)
    return [root / f"solo{i}" for i in range(len(configs))]


def bank_runs(configs, root, strategy, tag="bank"):
    run_dirs = [root / f"{tag}{i}" for i in range(len(configs))]
    outcomes = train_bank(configs, run_dirs, resume=[False] * len(configs), progress=False, strategy=strategy)
    assert all(isinstance(outcome, dict) for outcome in outcomes)
    return run_dirs


def assert_close_runs(run_dir, reference):
    rows, expected = numbers(run_dir), numbers(reference)
    assert [row["step"] for row in rows] == [row["step"] for row in expected]
    for key in ("nll", "kl", "loss", "multiplier"):
        assert math.isclose(rows[0][key], expected[0][key], rel_tol=1e-3, abs_tol=1e-3), key
        rel, abs_ = STACKED_TOLERANCE[key]
        for row, solo in zip(rows, expected, strict=True):
            assert math.isclose(row[key], solo[key], rel_tol=rel, abs_tol=abs_), (key, row["step"], row[key], solo[key])


@pytest.mark.parametrize("shape", [linear, conv], ids=["linear-gaussian", "dsprites-conv"])
def test_each_member_is_its_solo_run(tmp_path, shape):
    configs = members(shape)
    solos = solo_runs(configs, tmp_path)
    for run_dir, solo in zip(bank_runs(configs, tmp_path, "sequential"), solos, strict=True):
        assert_same_run(run_dir, solo)
        assert folder.read_config(run_dir) == folder.read_config(solo)
        assert {p.name for p in run_dir.iterdir()} >= {"config.json", "metrics.csv", "summary.json", "checkpoint.pt"}
    for run_dir, solo in zip(bank_runs(configs, tmp_path, "stacked", "stacked"), solos, strict=True):
        assert_close_runs(run_dir, solo)
    two_threads = [dataclasses.replace(config, threads=2) for config in configs]  # one for each member at a time
    one_thread = (
        solos
        if configs[0].threads == 1
        else solo_runs([dataclasses.replace(c, threads=1) for c in configs], tmp_path / "one")
    )
    for run_dir, solo in zip(bank_runs(two_threads, tmp_path, "threaded", "threaded"), one_thread, strict=True):
        assert_same_run(run_dir, solo)


@pytest.mark.parametrize("strategy", ["sequential", "stacked"])
def test_changing_one_member_leaves_the_others_unchanged(tmp_path, strategy):
    configs = members(linear)
    first = bank_runs(configs, tmp_path, strategy, "a")
    changed = [configs[0], linear(epsilon=5.0, dual_update="gradient", seed=7), configs[2]]
    second = bank_runs(changed, tmp_path, strategy, "b")
    assert numbers(first[0]) == numbers(second[0]) and numbers(first[2]) == numbers(second[2])
    assert numbers(first[1]) != numbers(second[1])


def test_a_member_checkpoint_continues_as_a_solo_run(tmp_path):
    configs = members(linear)
    bank_runs([dataclasses.replace(config, steps=100) for config in configs], tmp_path, "sequential")
    solos = solo_runs(configs, tmp_path)
    for i, solo in enumerate(solos):
        run_dir = tmp_path / f"bank{i}"
        train(resume_config(run_dir, {"steps": 200}), run_dir, resume=True, progress=False)
        assert_same_run(run_dir, solo)


@pytest.mark.parametrize("strategy", ["sequential", "stacked"])
def test_a_member_that_diverges_stops_alone_with_its_last_good_checkpoint(tmp_path, monkeypatch, strategy):
    configs = [linear(epsilon=2.0, checkpoint_every=50), linear(epsilon=3.0, seed=1, checkpoint_every=50)]
    solos = solo_runs(configs, tmp_path)
    bank = Bank.build([config.resolved() for config in configs], strategy)
    doomed = bank.members[1].model
    original = Optimization.update
    calls = {"n": 0}

    def update_that_blows_up(self, **kwargs):  # the doomed member's weights turn NaN in its 73rd step
        original(self, **kwargs)
        if self.problem.model is doomed:
            calls["n"] += 1
            if calls["n"] == 73:
                with torch.no_grad():
                    next(doomed.parameters()).fill_(float("nan"))

    monkeypatch.setattr(Optimization, "update", update_that_blows_up)
    monkeypatch.setattr(Bank, "build", classmethod(lambda cls, _configs, _strategy=None: bank))
    outcomes = train_bank(configs, [tmp_path / "a", tmp_path / "b"], resume=[False, False], progress=False)
    assert isinstance(outcomes[0], dict) and isinstance(outcomes[1], TrainingDiverged)
    assert "diverged at step 74" in str(outcomes[1]) and "checkpoint (step 50)" in str(outcomes[1])
    assert_same_run(tmp_path / "a", solos[0]) if strategy == "sequential" else assert_close_runs(
        tmp_path / "a", solos[0]
    )
    state = torch.load(tmp_path / "b" / folder.CHECKPOINT_FILE, weights_only=True)
    assert state["step"] == 50 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (tmp_path / "b" / folder.SUMMARY_FILE).exists()


@pytest.mark.parametrize("optimizer", ["adam", "adagrad"])
def test_one_optimizer_steps_every_stacked_member_as_its_own_optimizer_would(optimizer):
    """The stacked step's one primal optimizer takes, bit for bit, each member's own step, with each member's
    own state, also after a member's optimizer was loaded from a checkpoint (which replaces its state)."""
    configs = [linear(epsilon=2.0, optimizer=optimizer), linear(beta=4.0, seed=1, optimizer=optimizer)]
    bank = Bank.build([config.resolved() for config in configs], "stacked")
    twins = Bank.build([config.resolved() for config in configs], "sequential")
    rng = torch.Generator().manual_seed(0)
    for step in range(4):
        gradients = [[torch.randn(p.shape, generator=rng) for p in m.model.parameters()] for m in bank.members]
        for group in (bank.members, twins.members):
            for member, grads in zip(group, gradients, strict=True):
                for param, grad in zip(member.model.parameters(), grads, strict=True):
                    param.grad = grad.clone()
        bank._primal_step(bank.members)
        for twin in twins.members:
            twin.optimization.primal_optimizer.step()
        if step == 1:  # a checkpoint's optimizer state, loaded into the first member
            saved = bank.members[0].optimization.primal_optimizer.state_dict()
            bank.members[0].optimization.primal_optimizer.load_state_dict(saved)
        for member, twin in zip(bank.members, twins.members, strict=True):
            for mine, theirs in zip(member.model.parameters(), twin.model.parameters(), strict=True):
                assert torch.equal(mine, theirs)
            ours, its = (
                member.optimization.primal_optimizer.state_dict(),
                twin.optimization.primal_optimizer.state_dict(),
            )
            assert ours["state"].keys() == its["state"].keys() and ours["state"]
            for key, state in ours["state"].items():
                assert all(
                    torch.equal(torch.as_tensor(v), torch.as_tensor(its["state"][key][k])) for k, v in state.items()
                )


def test_runs_of_different_shapes_cannot_share_a_bank():
    assert bank_key(linear(epsilon=1.0)) == bank_key(linear(beta=2.0, seed=5, dual_update="pi"))
    assert bank_key(linear(epsilon=1.0)) != bank_key(linear(epsilon=1.0, lr=1e-2))
    with pytest.raises(ConfigError, match="share every setting"):
        Bank.build([linear(epsilon=1.0).resolved(), linear(epsilon=1.0, batch_size=16).resolved()])


# ---------------------------------------------------------------------------- sweeps in banks

SWEEP = (
    "--dataset linear-gaussian --spectrum 4,2,1 --num-samples 256 --batch-size 32 --steps 60 --log-every 10 "
    "--epsilon 1 2 --beta 1 --seeds 0 1 --no-progress"
).split()
NAMES = [f"{tag}-seed{seed}" for tag in ("eps1", "eps2", "beta1") for seed in (0, 1)]


def sweep(out, *args, without_ray=False):
    """``experiments/sweep.py`` in a process of its own; ``without_ray``: as on a machine where Ray is not installed."""
    code = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    if without_ray:
        code = "import sys; sys.modules['ray'] = None; " + code
    command = [sys.executable, "-c", code, str(ROOT / "experiments" / "sweep.py"), *SWEEP, "--out", str(out), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_a_sweep_in_banks_with_and_without_ray_trains_the_points_of_the_sweep_of_solo_runs(tmp_path):
    solo = sweep(tmp_path / "solo", "--workers", "2")
    assert solo.returncode == 0, solo.stderr
    on_ray = sweep(tmp_path / "ray", "--bank-size", "4", "--workers", "2")
    assert on_ray.returncode == 0, on_ray.stderr
    local = sweep(tmp_path / "local", "--bank-size", "6", without_ray=True)
    assert local.returncode == 0, local.stderr
    for name in NAMES:
        assert_same_run(tmp_path / "ray" / name, tmp_path / "solo" / name)
        assert_same_run(tmp_path / "local" / name, tmp_path / "solo" / name)
    again = sweep(tmp_path / "local", "--bank-size", "6", without_ray=True)
    assert again.returncode == 0 and again.stdout.count("skipped") >= len(NAMES), again.stdout


def test_without_ray_a_sweep_refuses_what_needs_ray(tmp_path):
    for args, message in [
        (["--executor", "ray"], "--executor ray needs Ray"),
        (["--workers", "2"], "--workers 2: the sweep trains one bank at a time"),
        (["--bank-size", "0"], "--bank-size must be a positive integer"),
    ]:
        refused = sweep(tmp_path / "s", *args, without_ray=True)
        assert refused.returncode == 2 and refused.stderr.startswith(f"error: {message}"), refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "s").exists()

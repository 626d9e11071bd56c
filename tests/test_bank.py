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
from constrained_vae.run.bank import Bank, SharedSteps, bank_key
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
    original = Optimization.step_terms
    calls = {"n": 0}

    def update_that_blows_up(self, *terms):  # the doomed member's weights turn NaN after its 73rd update
        if self.problem.model is doomed:
            calls["n"] += 1
            if calls["n"] == 73:
                with torch.no_grad():
                    next(doomed.parameters()).fill_(float("nan"))
        return original(self, *terms)

    monkeypatch.setattr(Optimization, "step_terms", update_that_blows_up)
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


def owned_optimizers(member):
    return [member.optimization.primal_optimizer, *member.optimization.dual_optimizers]


def optimized_tensors(member):
    return [p for optimizer in owned_optimizers(member) for group in optimizer.param_groups for p in group["params"]]


@pytest.mark.parametrize("fused", [False, True], ids=["foreach", "fused"])
@pytest.mark.parametrize("optimizer", ["adam", "adagrad"])
def test_shared_optimizers_step_every_member_as_its_own_optimizers_would(optimizer, fused):
    """The stacked step's shared optimizers take, bit for bit, each member's own primal and dual steps, with each
    member's own state, also after a member's optimizers were loaded from a checkpoint (which replaces their
    state): the pi rule's optimizer with its memory, SGD at two dual rates, and a member without a multiplier.
    Fused (Adam's and SGD's kernel, a GPU bank's eager step; here torch's CPU kernel), up to its rounding."""
    configs = [
        linear(epsilon=2.0, dual_update="pi", optimizer=optimizer),
        linear(epsilon=3.0, dual_update="pi", seed=1, optimizer=optimizer),
        linear(epsilon=2.0, dual_update="log", seed=2, optimizer=optimizer),
        linear(epsilon=2.0, dual_update="gradient", seed=3, optimizer=optimizer),
        linear(beta=4.0, seed=4, optimizer=optimizer),
    ]
    bank = Bank.build([config.resolved() for config in configs], "stacked")
    twins = Bank.build([config.resolved() for config in configs], "sequential")
    shared_steps = SharedSteps(fused=fused)
    same = torch.equal if not fused else lambda a, b: torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    rng = torch.Generator().manual_seed(0)
    for step in range(4):
        gradients = [[torch.randn(p.shape, generator=rng) for p in optimized_tensors(m)] for m in bank.members]
        for group in (bank.members, twins.members):
            for member, grads in zip(group, gradients, strict=True):
                for param, grad in zip(optimized_tensors(member), grads, strict=True):
                    param.grad = grad.clone()
        shared = shared_steps.optimizers([o for member in bank.members for o in owned_optimizers(member)])
        assert len(shared) == 4  # the primal Adam (or Adagrad), pi's, and SGD at the log and gradient rules' rates
        for one in shared:
            one.step()
        shared_steps.adopt()
        for twin in twins.members:
            for one in owned_optimizers(twin):
                one.step()
        if step == 1:  # a checkpoint's optimizer state, loaded into the first member
            for one in owned_optimizers(bank.members[0]):
                one.load_state_dict(one.state_dict())
        for member, twin in zip(bank.members, twins.members, strict=True):
            for mine, theirs in zip(optimized_tensors(member), optimized_tensors(twin), strict=True):
                assert same(mine, theirs)
            for ours, its in zip(owned_optimizers(member), owned_optimizers(twin), strict=True):
                ours, its = ours.state_dict(), its.state_dict()
                assert ours["state"].keys() == its["state"].keys()
                for key, state in ours["state"].items():
                    theirs = its["state"][key]
                    assert all(same(torch.as_tensor(v), torch.as_tensor(theirs[k])) for k, v in state.items())


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


@pytest.mark.slow
def test_a_compiled_stacked_bank_steps_as_the_eager_one_in_graphs_it_keeps():
    """The stacked step compiled (the GPU's way, here on CPU): the same numbers as the eager stacked step up
    to rounding, in one graph (and its backward) without a break, and no new graph after the first step."""
    configs = [conv(epsilon=2.0), conv(epsilon=3.0, dual_update="pi", seed=1), conv(beta=4.0, seed=2)]
    counters = torch._dynamo.utils.counters
    rows = {}
    for compiled in (False, True):
        bank = Bank.build([config.resolved() for config in configs], "stacked")
        if compiled:
            torch._dynamo.reset()
            counters.clear()
            bank.compile()
        steps = []
        for step in range(12):
            terms = bank.advance(bank.members)
            steps.append([[float(t.nll), float(t.kl), float(t.loss), float(t.multiplier)] for t in terms])
            if compiled and step == 0:
                graphs = dict(counters["stats"])
        rows[compiled] = steps
    assert dict(counters["stats"]) == graphs and graphs["unique_graphs"] == 1
    assert not counters["graph_break"], dict(counters["graph_break"])
    for eager, compiled in zip(rows[False], rows[True], strict=True):
        for eager_member, compiled_member in zip(eager, compiled, strict=True):
            assert compiled_member == pytest.approx(eager_member, rel=2e-3, abs=2e-3)

"""The multiplier update rules on hand-made violation sequences, and the baseline objectives."""

import json
import math
import re

import cooper
import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from constrained_vae.analysis import tracking
from constrained_vae.core import dual
from constrained_vae.core.likelihoods import BernoulliLikelihood
from constrained_vae.core.linear_gaussian import beta_for_rate
from constrained_vae.core.models import build_vae
from constrained_vae.core.objectives import ControlVAEProblem, objective_settings
from constrained_vae.core.objectives.controlvae import CONTROLVAE_BETA_MIN, CONTROLVAE_KI, CONTROLVAE_KP
from constrained_vae.errors import ConfigError
from constrained_vae.plots import tracking as plots_tracking
from constrained_vae.run import folder
from constrained_vae.run.loop import resume_config, train
from constrained_vae.run.settings import RunConfig

violations = st.lists(st.floats(-5, 5, allow_nan=False, allow_subnormal=False), min_size=1, max_size=30)


class ScriptedProblem(cooper.ConstrainedMinimizationProblem):
    """A one-constraint problem whose violation each step is a number we choose."""

    def __init__(self, update: str, init: float, rate: float, ema_decay: float = 0.99) -> None:
        super().__init__()
        self.update = dual.DualUpdate.parse(update)
        self.weight = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.constraint = dual.make_constraint(self.update, init, rate, self.weight)
        self.average = dual.ViolationAverage(ema_decay, self.weight.device, torch.float64) if self.update.ema else None

    def compute_cmp_state(self, g: float) -> cooper.CMPState:
        violation = torch.tensor(g, dtype=torch.float64) + 0 * self.weight
        strict = self.average.update(violation) if self.average is not None else None
        state = cooper.ConstraintState(violation=violation, strict_violation=strict)
        return cooper.CMPState(loss=self.weight**2, observed_constraints={self.constraint: state})


def run_rule(update: str, sequence: list[float], init: float = 1.0, rate: float = 0.1, kp: float = 0.0) -> list[float]:
    """λ after each step of ``sequence``."""
    problem = ScriptedProblem(update, init, rate)
    primal = torch.optim.SGD([problem.weight], lr=0.1)
    dual_optimizer = dual.make_dual_optimizer(problem.update, problem.dual_parameters(), rate, kp)
    optimizer = cooper.optim.SimultaneousOptimizer(
        cmp=problem, primal_optimizers=primal, dual_optimizers=dual_optimizer
    )
    lambdas = []
    for g in sequence:
        optimizer.roll(compute_cmp_state_kwargs={"g": g})
        lambdas.append(float(dual.multiplier_value(problem.constraint)))
    return lambdas


def by_hand(sequence: list[float], step, init: float = 1.0) -> list[float]:
    lam, out, previous = init, [], None
    for g in sequence:
        lam = step(lam, g, g if previous is None else previous)
        previous = g
        out.append(lam)
    return out


@pytest.mark.parametrize("update", ["gradient", "augmented"])
@given(sequence=violations, init=st.floats(0, 3))
@settings(max_examples=40, deadline=None)
def test_projected_ascent_matches_the_hand_computed_sequence(update, sequence, init):
    got = run_rule(update, sequence, init=init, rate=0.1)
    expected = by_hand(sequence, lambda lam, g, _: max(0.0, lam + 0.1 * g), init)
    assert got == pytest.approx(expected, abs=1e-12)
    assert min(got) >= 0.0


@given(sequence=violations, init=st.floats(0.01, 3))
@settings(max_examples=40, deadline=None)
def test_log_rule_is_multiplicative_and_never_reaches_zero(sequence, init):
    got = run_rule("log", sequence, init=init, rate=0.1)
    expected = by_hand(sequence, lambda lam, g, _: lam * math.exp(0.1 * g), init)
    assert got == pytest.approx(expected, rel=1e-12)
    assert min(got) > 0.0


def test_log_rule_is_clamped_to_its_range():
    assert run_rule("log", [1000.0] * 3, rate=0.1)[-1] == pytest.approx(dual.LOG_RANGE[1])
    assert run_rule("log", [-1000.0] * 3, rate=0.1)[-1] == pytest.approx(dual.LOG_RANGE[0])


@given(sequence=violations, init=st.floats(0, 3), kp=st.floats(0, 10))
@settings(max_examples=40, deadline=None)
def test_pi_rule_matches_the_hand_computed_sequence(sequence, init, kp):
    got = run_rule("pi", sequence, init=init, rate=0.1, kp=kp)
    expected = by_hand(sequence, lambda lam, g, prev: max(0.0, lam + 0.1 * (g + kp * (g - prev))), init)
    assert got == pytest.approx(expected, abs=1e-9)
    assert min(got) >= 0.0


def test_pi_rule_by_hand_on_a_short_sequence():
    # λ0 = 1, η = 0.5, K_P = 2: steps 1 + .5·2 = 2; 2 + .5·(−1 + 2·(−3)) = −1.5 → 0; 0 + .5·(1 + 2·2) = 2.5
    assert run_rule("pi", [2.0, -1.0, 1.0], init=1.0, rate=0.5, kp=2.0) == pytest.approx([2.0, 0.0, 2.5])


def test_pi_with_no_proportional_gain_is_cooper_sgd():
    sequence = [0.5, -2.0, 3.0, 0.1, -0.7]
    assert run_rule("pi", sequence, kp=0.0) == pytest.approx(run_rule("gradient", sequence), abs=1e-12)


@pytest.mark.parametrize("rule", ["gradient", "pi", "augmented", "log"])
@given(sequence=violations)
@settings(max_examples=25, deadline=None)
def test_lambda_moves_the_way_of_the_violation(rule, sequence):
    lambdas = [1.0, *run_rule(rule, sequence, kp=0.0)]
    for before, after, g in zip(lambdas[:-1], lambdas[1:], sequence, strict=True):
        if g > 0:
            assert after >= before
        elif g < 0:
            assert after <= before


@given(sequence=violations, decay=st.floats(0, 0.999))
@settings(max_examples=40, deadline=None)
def test_the_moving_average_equals_its_definition(sequence, decay):
    average = dual.ViolationAverage(decay, torch.device("cpu"), torch.float64)
    expected = None
    for g in sequence:
        expected = g if expected is None else decay * expected + (1 - decay) * g
        assert float(average.update(torch.tensor(g, dtype=torch.float64))) == pytest.approx(expected, abs=1e-12)


@given(sequence=violations)
@settings(max_examples=25, deadline=None)
def test_ema_rules_step_on_the_moving_average(sequence):
    averages, m = [], None
    for g in sequence:
        m = g if m is None else 0.99 * m + 0.01 * g
        averages.append(m)
    assert run_rule("gradient+ema", sequence) == pytest.approx(run_rule("gradient", averages), abs=1e-12)
    assert run_rule("ema", sequence) == pytest.approx(run_rule("gradient", averages), abs=1e-12)
    assert run_rule("log+ema", sequence) == pytest.approx(run_rule("log", averages), rel=1e-12)


def test_augmented_lagrangian_primal_term_is_cooper_s_formula():
    model = build_vae("mlp", (12,), 3, hidden=16).double()
    objective = objective_settings(epsilon=0.5, dual_lr=0.3, multiplier_init=2.0, dual_update="augmented").build(
        model, BernoulliLikelihood()
    )
    torch.manual_seed(0)
    terms = objective.step(torch.rand(16, 12).round().double())
    lam, rho, g = 2.0, 0.3, float(terms.kl) - 0.5
    expected = float(terms.nll) + (max(0.0, lam + rho * g) ** 2 - lam**2) / (2 * rho)
    assert float(terms.loss) == pytest.approx(expected, rel=1e-9)
    assert float(terms.multiplier) == pytest.approx(max(0.0, lam + rho * g), rel=1e-9)


def reference_controlvae(set_points: list[float], kls: list[float]) -> list[float]:
    """The authors' P_PID.pid (ControlVAE-ICML2020, Disentangling/), transcribed with Kp=0.01, Ki=−0.001."""
    integral, previous_w, betas = 0.0, 1.0, []
    for target, kl in zip(set_points, kls, strict=True):
        error = target - kl
        p = CONTROLVAE_KP / (1.0 + math.exp(error)) + 1
        i = integral - CONTROLVAE_KI * error
        if previous_w < 1:
            i = integral
        w = p + i
        previous_w, integral = w, i
        betas.append(max(w, 1.0))
    return betas


@given(kls=st.lists(st.floats(0, 40, allow_subnormal=False), min_size=1, max_size=60))
@settings(max_examples=30, deadline=None)
def test_controlvae_controller_is_the_authors(kls):
    model = build_vae("mlp", (4,), 2, hidden=4).double()
    problem = ControlVAEProblem(model, BernoulliLikelihood(), target=3.0, anneal_steps=40)
    betas, set_points = [], []
    for kl in kls:
        betas.append(float(problem.controller(torch.tensor(kl, dtype=torch.float64))))
        set_points.append(float(problem.state["set_point"]))
    assert betas == pytest.approx(reference_controlvae(set_points, kls), abs=1e-12)
    assert min(betas) >= CONTROLVAE_BETA_MIN


def test_controlvae_set_point_rises_by_0_15_per_period_to_the_target():
    model = build_vae("mlp", (4,), 2, hidden=4)
    problem = ControlVAEProblem(model, BernoulliLikelihood(), target=2.0, anneal_steps=100)
    assert problem.period == 10  # (2 − 0.5) / 0.15 = 10 rises in 100 steps
    points = [float(problem.set_point(torch.tensor(t))) for t in (0, 8, 9, 19, 99, 500)]
    assert points == pytest.approx([0.5, 0.5, 0.65, 0.8, 2.0, 2.0])


def test_capacity_objective_target_and_loss():
    model = build_vae("mlp", (12,), 3, hidden=16).double()
    objective = objective_settings(objective="capacity", epsilon=4.0, capacity_gamma=10.0, anneal_steps=4).build(
        model, BernoulliLikelihood()
    )
    x = torch.rand(16, 12).round().double()
    for step in range(6):
        terms = objective.step(x)
        target = 4.0 * min(1.0, step / 4)
        assert float(terms.budget) == pytest.approx(target)
        assert float(terms.loss) == pytest.approx(float(terms.nll) + 10 * abs(float(terms.kl) - target), rel=1e-9)
        assert float(terms.multiplier) == 10.0 * math.copysign(1, float(terms.kl) - target)


def test_geco_reports_beta_as_one_over_lambda_and_constrains_the_nll():
    model = build_vae("mlp", (12,), 3, hidden=16).double()
    objective = objective_settings(
        objective="geco", kappa=5.0, dual_lr=0.01, multiplier_init=2.0, dual_update="log+ema"
    ).build(model, BernoulliLikelihood())
    terms = objective.step(torch.rand(16, 12).round().double())
    lam = 0.5 * math.exp(0.01 * (float(terms.nll) - 5.0))  # λ0 = 1/β0; the EMA starts at the first violation
    assert float(terms.multiplier) == pytest.approx(1 / lam, rel=1e-9)
    assert float(terms.loss) == pytest.approx(float(terms.kl) + 0.5 * (float(terms.nll) - 5.0), rel=1e-9)
    assert terms.budget is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(objective="geco", epsilon=3.0), "--epsilon does not apply to --objective geco (it takes --kappa)"),
        (dict(objective="geco"), "--objective geco needs --kappa"),
        (dict(objective="geco", kappa=3.0, dual_update="gradient"), "needs λ > 0"),
        (dict(epsilon=3.0, kappa=3.0), "--kappa does not apply to --objective constrained"),
        (dict(beta=3.0, dual_update="log"), "--dual-update does not apply to --objective fixed-beta"),
        (dict(epsilon=3.0, dual_kp=1.0), "--dual-kp does not apply to --dual-update log"),
        (dict(epsilon=3.0, dual_update="pi", dual_ema=0.9), "--dual-ema does not apply to --dual-update pi"),
        (dict(epsilon=3.0, dual_update="log+ema", dual_ema=1.0), "--dual-ema must be below 1"),
        (dict(epsilon=3.0, dual_update="sgd"), "unknown --dual-update 'sgd'"),
        (dict(objective="capacity", beta=3.0), "--objective capacity needs --epsilon"),
        (dict(epsilon=3.0, anneal_steps=10), "--anneal-steps does not apply to --objective constrained"),
        (dict(objective="capacity", epsilon=3.0, capacity_gamma=0.0), "--capacity-gamma must be positive"),
        (dict(epsilon=3.0, dual_update="log", multiplier_init=0.0), "positive --multiplier-init"),
    ],
)
def test_objective_settings_are_checked(settings, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        RunConfig(dataset="linear-gaussian", **settings).resolved()


def test_objective_defaults_are_filled_only_where_they_apply():
    constrained = RunConfig(epsilon=2.0, dataset="linear-gaussian").resolved()
    assert (constrained.dual_update, constrained.dual_kp, constrained.dual_ema) == ("log", None, None)
    assert constrained.dual_lr == 0.01  # the log rules' rate, whatever the dataset
    assert RunConfig(epsilon=2.0, dataset="linear-gaussian", dual_update="gradient").resolved().dual_lr == 0.02
    assert constrained.objective is None and constrained.objective_name == "constrained"
    pi = RunConfig(epsilon=2.0, dataset="linear-gaussian", dual_update="pi+ema").resolved()
    assert (pi.dual_kp, pi.dual_ema) == (1.0, 0.99)
    geco = RunConfig(objective="geco", kappa=20.0, dataset="linear-gaussian").resolved()
    assert geco.dual_update == "log+ema" and geco.dual_ema == 0.99
    capacity = RunConfig(objective="capacity", epsilon=2.0, dataset="linear-gaussian", steps=300).resolved()
    assert (capacity.capacity_gamma, capacity.anneal_steps) == (1000.0, 150)
    assert RunConfig(objective="constrained", epsilon=2.0).resolved().objective is None
    assert "dual_kp" not in constrained.numerics() and "anneal_steps" not in constrained.numerics()


def small_run(**overrides) -> RunConfig:
    settings = dict(
        dataset="linear-gaussian",
        spectrum=[9.0, 3.0, 1.0],
        num_samples=512,
        steps=40,
        batch_size=32,
        log_every=5,
        checkpoint_every=10,
    )
    return RunConfig(**(settings | overrides))


@pytest.mark.parametrize(
    "overrides",
    [
        dict(epsilon=2.0, dual_update="log"),
        dict(epsilon=2.0, dual_update="pi+ema", dual_kp=3.0),
        dict(epsilon=2.0, dual_update="augmented"),
        dict(objective="capacity", epsilon=2.0, anneal_steps=30),
        dict(objective="controlvae", epsilon=2.0, anneal_steps=30),
        dict(objective="geco", kappa=4.0, dual_lr=0.01),
    ],
    ids=["log", "pi+ema", "augmented", "capacity", "controlvae", "geco"],
)
def test_every_rule_and_baseline_resumes_bit_for_bit(tmp_path, overrides):
    config = small_run(**overrides)
    train(config, tmp_path / "straight", progress=False)
    train(RunConfig(**(vars(config) | {"steps": 20})), tmp_path / "split", progress=False)
    train(resume_config(tmp_path / "split", {"steps": 40}), tmp_path / "split", resume=True, progress=False)
    rows = [
        [{k: v for k, v in r.items() if k != "seconds"} for r in folder.read_metrics(tmp_path / d)]
        for d in ("straight", "split")
    ]
    assert rows[0] == rows[1]
    saved = json.loads((tmp_path / "split" / "config.json").read_text())
    assert saved["mode"] == config.objective_name and saved["steps"] == 40


def test_a_run_from_before_dual_updates_still_resumes(tmp_path):
    """A run folder written before --dual-update existed: no such key in config.json or the checkpoint."""
    config = small_run(epsilon=2.0, dual_update="gradient")  # what every run was then
    train(RunConfig(**(vars(config) | {"steps": 20})), tmp_path / "old", progress=False)
    path = tmp_path / "old" / "config.json"
    saved = json.loads(path.read_text())
    legacy = {k: v for k, v in saved.items() if k not in NEW_SETTINGS}
    path.write_text(json.dumps(legacy))
    checkpoint = torch.load(tmp_path / "old" / folder.CHECKPOINT_FILE, weights_only=True)
    checkpoint["numerics"] = {k: v for k, v in checkpoint["numerics"].items() if k not in NEW_SETTINGS}
    checkpoint["objective"]["problem"].pop("extra")
    torch.save(checkpoint, tmp_path / "old" / folder.CHECKPOINT_FILE)
    train(resume_config(tmp_path / "old", {"steps": 40}), tmp_path / "old", resume=True, progress=False)
    train(config, tmp_path / "straight", progress=False)
    assert folder.read_metrics(tmp_path / "old")[-1]["kl"] == folder.read_metrics(tmp_path / "straight")[-1]["kl"]
    assert json.loads(path.read_text())["dual_update"] == "gradient"


NEW_SETTINGS = ("objective", "kappa", "dual_update", "dual_kp", "dual_ema", "capacity_gamma", "anneal_steps")


@pytest.mark.slow
@pytest.mark.parametrize("update", ["gradient", "log", "pi", "augmented", "gradient+ema", "log+ema", "pi+ema"])
def test_each_rule_ends_at_the_closed_form_multiplier(tmp_path, update):
    spectrum, epsilon = [16.0, 8.0, 4.0, 2.0, 1.0], 3.0
    summary = train(RunConfig(epsilon=epsilon, dataset="linear-gaussian", dual_update=update), tmp_path, progress=False)
    assert summary["multiplier"] == pytest.approx(beta_for_rate(epsilon, spectrum), rel=0.05)
    assert summary["kl"] == pytest.approx(epsilon, rel=0.02)


def test_settle_step_is_the_start_of_the_last_stretch_within_tolerance():
    steps = [10, 20, 30, 40, 50]
    assert tracking.settle_step(steps, [5.0, 1.0, 1.5, 1.01, 0.99], 1.0, 0.02) == 40
    assert tracking.settle_step(steps, [1.0, 1.0, 1.0, 1.0, 1.0], 1.0, 0.02) == 10
    assert tracking.settle_step(steps, [1.0, 1.0, 1.0, 1.0, 1.1], 1.0, 0.02) is None


def test_tracking_of_real_runs_and_the_figure(tmp_path):
    train(small_run(epsilon=2.0, dual_update="log", dual_lr=0.01), tmp_path / "log", progress=False)
    train(small_run(objective="capacity", epsilon=2.0), tmp_path / "capacity", progress=False)
    logged = tracking.track(tmp_path / "log", beta_star=3.0, setting="log")
    summary = json.loads((tmp_path / "log" / folder.SUMMARY_FILE).read_text())
    assert logged.lambda_error == pytest.approx((summary["multiplier"] - 3.0) / 3.0)
    assert logged.oscillation >= 0 and logged.dual_update == "log" and logged.steps == 40
    capacity = tracking.track(tmp_path / "capacity", beta_star=3.0)
    assert capacity.oscillation is None and capacity.lambda_error is None
    table = tracking.markdown_table([logged, capacity])
    assert "| log | 2 | 3 |" in table and "±γ" in table
    assert "1/1" in tracking.summary_table([logged]) or "0/1" in tracking.summary_table([logged])
    folders = {"log": (tmp_path / "log", tmp_path / "log"), "capacity": (tmp_path / "capacity", tmp_path / "none")}
    figure = plots_tracking.write_figure(folders, (2.0, 2.0), tmp_path / "fig.png")
    assert figure.stat().st_size > 10_000

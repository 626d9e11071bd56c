"""The constrained and fixed-β objectives as cooper problems."""

from types import SimpleNamespace

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import example, given

from constrained_vae.core import dual
from constrained_vae.core.likelihoods import BernoulliLikelihood, GaussianLikelihood
from constrained_vae.core.models import build_vae
from constrained_vae.core.objectives import KLConstrainedProblem, objective_settings, vae_terms


def small_vae(kind="mlp", features=12, latent_dim=3, seed=0):
    torch.manual_seed(seed)
    return build_vae(kind, (features,), latent_dim, hidden=16).double()


def grads(params):
    return [p.grad.detach().clone() for p in params]


@given(st.floats(0.0, 50.0, exclude_min=True), st.integers(0, 10_000), st.floats(0.1, 30.0))  # β > 0, as runs require
def test_lagrangian_at_lambda_equal_beta_has_the_fixed_beta_gradient(beta, seed, epsilon):
    torch.manual_seed(seed)
    x = torch.rand(5, 12, dtype=torch.float64).round()

    def gradient_of(make_objective):
        model = small_vae(seed=seed)
        objective = make_objective(model)
        torch.manual_seed(seed + 1)  # same posterior sample in both
        state = objective.problem.compute_cmp_state(x=x)
        state.compute_primal_lagrangian().backward()
        return grads(model.parameters())

    constrained = gradient_of(
        lambda m: objective_settings(epsilon=epsilon, multiplier_init=beta, dual_update="gradient").build(
            m, BernoulliLikelihood()
        )
    )
    fixed = gradient_of(lambda m: objective_settings(beta=beta).build(m, BernoulliLikelihood()))
    for g_constrained, g_fixed in zip(constrained, fixed, strict=True):
        torch.testing.assert_close(g_constrained, g_fixed, rtol=1e-10, atol=1e-10)


@given(st.floats(0.0, 20.0), st.floats(0.0, 30.0), st.integers(0, 10_000))
def test_the_dual_lagrangian_gradient_in_lambda_is_kl_minus_epsilon(lam, epsilon, seed):
    model = small_vae(seed=seed).float()
    problem = KLConstrainedProblem(model, BernoulliLikelihood(), epsilon, multiplier_init=lam, update="gradient")
    x = torch.rand(7, 12).round()
    state = problem.compute_cmp_state(x=x)
    state.compute_dual_lagrangian().backward()
    kl = float(state.misc["kl"])
    weight = problem.kl_constraint.multiplier.weight
    assert weight.grad.shape == (1,)
    assert weight.grad.item() == pytest.approx(kl - epsilon, rel=1e-6, abs=1e-5)
    assert all(p.grad is None for p in model.parameters()), "the dual Lagrangian must not reach the model"


@given(
    st.floats(0.0, 5.0),
    st.floats(1e-4, 10.0),
    st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=60),
)
@example(lam0=0.0, dual_lr=1.1740196747345184, kls=[930.0, -928.0])  # float32 leaves ~1e-5 of a 1e3 step
def test_lambda_stays_non_negative_after_any_number_of_dual_steps(lam0, dual_lr, kls):
    """Feed the dual step arbitrary KL values (huge violations either way); λ ≥ 0 always."""
    model = small_vae().float()
    objective = objective_settings(epsilon=1.0, dual_lr=dual_lr, multiplier_init=lam0, dual_update="gradient").build(
        model, BernoulliLikelihood()
    )
    problem = objective.problem
    weight = problem.kl_constraint.multiplier.weight
    expected = lam0
    rounding = 0.0  # float32 rounding the multiplier can have accumulated (λ is stored in float32)
    for kl in kls:
        objective.optimizer.zero_grad()
        weight.grad = torch.tensor([kl - problem.epsilon])  # ∂L/∂λ = KL − ε
        objective.optimizer.dual_step()
        step = dual_lr * (kl - problem.epsilon)
        rounding += 2 * torch.finfo(torch.float32).eps * (abs(expected) + abs(step))
        expected = max(0.0, expected + step)  # projected gradient ascent
        assert problem.multiplier >= 0.0
        assert problem.multiplier == pytest.approx(expected, rel=1e-5, abs=1e-6 + rounding)


def test_a_full_step_moves_lambda_by_dual_lr_times_the_violation():
    model = small_vae().float()
    objective = objective_settings(epsilon=0.5, dual_lr=0.1, multiplier_init=2.0, dual_update="gradient").build(
        model, BernoulliLikelihood()
    )
    x = torch.rand(16, 12).round()
    terms = objective.step(x)
    assert all(t.device == x.device and t.dim() == 0 for t in (terms.nll, terms.kl, terms.loss, terms.multiplier))
    terms = {k: float(v) for k, v in vars(terms).items()}
    assert terms["budget"] == 0.5
    terms = SimpleNamespace(**terms)
    assert terms.multiplier == pytest.approx(max(0.0, 2.0 + 0.1 * (terms.kl - 0.5)), rel=1e-6)
    assert terms.loss == pytest.approx(terms.nll + 2.0 * (terms.kl - 0.5), rel=1e-5)


def test_fixed_beta_step_reports_beta_as_the_multiplier_and_the_beta_loss():
    model = small_vae().float()
    objective = objective_settings(beta=4.0).build(model, BernoulliLikelihood())
    terms = SimpleNamespace(
        **{k: v if v is None else float(v) for k, v in vars(objective.step(torch.rand(16, 12).round())).items()}
    )
    assert terms.budget is None
    assert terms.multiplier == 4.0
    assert terms.loss == pytest.approx(terms.nll + 4.0 * terms.kl, rel=1e-5)
    assert objective.settings.name == "fixed-beta"


def test_learned_sigma_is_a_primal_parameter():
    model = small_vae(kind="linear").float()
    likelihood = GaussianLikelihood(sigma=2.0, learn_sigma=True)
    objective = objective_settings(epsilon=1.0).build(model, likelihood, lr=0.05)
    before = likelihood.sigma
    for _ in range(5):
        objective.step(torch.randn(32, 12) * 0.1)
    assert likelihood.sigma < before  # data with std 0.1: σ shrinks


def test_vae_terms_are_in_nats_per_sample():
    """NLL sums over data dimensions: doubling the features roughly doubles it."""
    torch.manual_seed(0)
    model = build_vae("linear", (4,), 2)
    with torch.no_grad():
        model.decoder.weight.zero_()
        model.decoder.bias.zero_()
    x = torch.zeros(10, 4)
    nll, kl = vae_terms(model, GaussianLikelihood(1.0), x)
    assert nll.item() == pytest.approx(4 * 0.5 * torch.log(torch.tensor(2 * torch.pi)).item(), rel=1e-6)
    assert kl.item() >= 0


def test_the_constrained_problems_own_default_rule_is_the_projects_default():
    model = build_vae("mlp", (16,), latent_dim=2)
    problem = KLConstrainedProblem(model, BernoulliLikelihood(), epsilon=1.0)
    assert dual.DEFAULT_UPDATE == "log"
    assert problem.update == dual.DualUpdate.parse(dual.DEFAULT_UPDATE)

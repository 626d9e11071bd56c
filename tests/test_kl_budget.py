"""KLBudget: the constrained objective's multiplier in a loop of the user's own, with a model of the user's own."""

import io
import math
import subprocess
import sys
from pathlib import Path

import cooper
import pytest
import torch
from torch import nn

from constrained_vae import KLBudget
from constrained_vae.core.likelihoods import BernoulliLikelihood
from constrained_vae.core.linear_gaussian import beta_for_rate
from constrained_vae.core.models import build_vae
from constrained_vae.core.objectives import objective_settings, vae_terms
from constrained_vae.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
RULES = ("log", "gradient", "pi", "augmented", "log+ema", "pi+ema")


class ScaledLinearVAE(nn.Module):
    """A linear VAE written here, not the project's: its forward returns the batch's NLL and KL (nats per sample)."""

    def __init__(self, features: int, latent: int) -> None:
        super().__init__()
        self.encode = nn.Linear(features, latent, bias=False)
        self.decode = nn.Linear(latent, features, bias=False)
        self.log_std = nn.Parameter(torch.zeros(latent))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu = self.encode(x)
        std = self.log_std.exp().expand_as(mu)
        z = mu + std * torch.randn_like(mu)
        nll = 0.5 * ((x - self.decode(z)) ** 2).sum(1).mean() + 0.5 * x.shape[1] * math.log(2 * math.pi)
        kl = (0.5 * (mu**2 + std**2) - self.log_std - 0.5).sum(1).mean()
        return nll, kl


def train_linear(budget: KLBudget, spectrum: list[float], steps: int, seed: int = 1) -> tuple[float, float]:
    """The mean KL and λ over the last fifth of ``steps`` of a linear VAE on N(0, diag(spectrum)) data."""
    torch.manual_seed(seed)
    data = torch.randn(16_384, len(spectrum)) * torch.tensor(spectrum).sqrt()
    model = ScaledLinearVAE(len(spectrum), len(spectrum))
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    tail = []
    for step in range(steps):
        nll, kl = model(data[torch.randint(len(data), (256,))])
        loss = budget.lagrangian(nll, kl)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        budget.step()
        if step >= 0.8 * steps:
            tail.append((float(kl.detach()), float(budget.multiplier)))
    return tuple(sum(column) / len(tail) for column in zip(*tail, strict=True))


@pytest.mark.parametrize(
    ("spectrum", "epsilon", "update"), [([9.0, 3.0, 1.0], 1.5, "log"), ([16.0, 8.0, 2.0], 3.0, "pi")]
)
def test_the_multiplier_of_a_linear_vae_of_ones_own_reaches_the_closed_form_beta(spectrum, epsilon, update):
    kl, multiplier = train_linear(KLBudget(epsilon, update=update), spectrum, steps=3000)
    assert kl == pytest.approx(epsilon, rel=0.03)
    assert multiplier == pytest.approx(beta_for_rate(epsilon, spectrum), rel=0.05)


def test_the_readme_example_script_runs_and_lands_on_the_closed_form():
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "kl_budget.py")], capture_output=True, text=True, check=True
    )
    lines = result.stdout.splitlines()
    multiplier = float(lines[0].rsplit("λ = ", 1)[1])
    beta_star = float(lines[1].rsplit("= ", 1)[1])
    assert beta_star == pytest.approx(beta_for_rate(2.0, [16.0, 4.0, 1.0]), abs=1e-3)
    assert multiplier == pytest.approx(beta_star, rel=0.05)


@pytest.mark.parametrize("update", RULES)
def test_a_budget_in_ones_own_loop_moves_exactly_as_the_constrained_objective_of_train(update):
    """Same model, batches, noise and primal optimizer: KLBudget and ``train()``'s objective take the same steps."""
    torch.manual_seed(0)
    batches = [
        (torch.rand(6, 12, dtype=torch.float64).round(), torch.randn(6, 3, dtype=torch.float64)) for _ in range(8)
    ]

    def model():
        torch.manual_seed(1)
        return build_vae("mlp", (12,), 3, hidden=16).double()

    reference_model = model()
    reference = objective_settings(epsilon=4.0, dual_update=update).build(
        reference_model, BernoulliLikelihood(), lr=1e-2
    )
    expected = [float(reference.step(x, noise).multiplier) for x, noise in batches]

    own_model = model()
    optimizer = torch.optim.Adam(own_model.parameters(), lr=1e-2)
    budget = KLBudget(4.0, update=update)
    multipliers = []
    for x, noise in batches:
        loss = budget.lagrangian(*vae_terms(own_model, BernoulliLikelihood(), x, noise))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        budget.step()
        multipliers.append(float(budget.multiplier))
    assert multipliers == pytest.approx(expected, rel=1e-12, abs=1e-14)
    assert len(set(multipliers)) > 1  # λ moved
    for mine, theirs in zip(own_model.parameters(), reference_model.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("update", ("log", "gradient", "pi", "log+ema"))
def test_the_lagrangian_is_nll_plus_lambda_times_kl_minus_epsilon(update):
    budget = KLBudget(2.0, update=update, multiplier_init=0.7)
    nll, kl = torch.tensor(50.0), torch.tensor(3.5)
    assert float(budget.lagrangian(nll, kl)) == pytest.approx(50.0 + 0.7 * 1.5)


def test_the_default_rule_moves_lambda_by_exp_of_rate_times_violation():
    budget = KLBudget(2.0)
    assert (budget.update, budget.settings.dual_lr) == ("log", 0.01)
    budget.lagrangian(torch.tensor(10.0), torch.tensor(5.0))
    budget.step()
    assert float(budget.multiplier) == pytest.approx(math.exp(0.01 * 3.0))


def test_accumulated_batches_move_lambda_by_their_mean_violation():
    budget = KLBudget(2.0, update="gradient", lr=0.1)
    for kl in (3.0, 5.0):  # violations 1 and 3: mean 2
        budget.lagrangian(torch.tensor(1.0), torch.tensor(kl))
    budget.step()
    assert float(budget.multiplier) == pytest.approx(1.0 + 0.1 * 2.0)
    budget.step()  # no batch since the last step: λ stays
    assert float(budget.multiplier) == pytest.approx(1.2)


def test_an_inactive_budget_keeps_lambda_at_zero_under_the_additive_rule():
    budget = KLBudget(10.0, update="gradient", lr=1.0, multiplier_init=0.5)
    for _ in range(3):
        budget.lagrangian(torch.tensor(1.0), torch.tensor(1.0))
        budget.step()
    assert float(budget.multiplier) == 0.0


@pytest.mark.parametrize("update", RULES)
def test_a_saved_budget_continues_exactly_after_loading_with_weights_only(update):
    violations = [3.0, 0.5, 4.0, 1.0, 2.5, 6.0]

    def run(budget, kls):
        out = []
        for kl in kls:
            budget.lagrangian(torch.tensor(10.0), torch.tensor(kl))
            budget.step()
            out.append(float(budget.multiplier))
        return out

    whole = run(KLBudget(2.0, update=update), violations)
    first = KLBudget(2.0, update=update)
    run(first, violations[:3])
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second = KLBudget(2.0, update=update)
    second.load_state_dict(torch.load(buffer, weights_only=True))
    assert run(second, violations[3:]) == whole[3:]


def test_a_state_of_another_budget_is_refused():
    state = KLBudget(2.0).state_dict()
    with pytest.raises(ValueError, match="another KL budget"):
        KLBudget(3.0).load_state_dict(state)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(epsilon=0.0), "epsilon"),
        (dict(epsilon=-1.0), "epsilon"),
        (dict(epsilon=float("nan")), "epsilon"),
        (dict(epsilon=1.0, update="sgd"), "unknown update 'sgd'"),
        (dict(epsilon=1.0, lr=0.0), "^lr must be positive"),
        (dict(epsilon=1.0, kp=1.0), "^kp does not apply to update log"),
        (dict(epsilon=1.0, ema=1.5, update="log+ema"), "^ema must be below 1"),
        (dict(epsilon=1.0, update="log", multiplier_init=0.0), "positive multiplier_init"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        KLBudget(**kwargs)


def test_terms_that_are_not_batch_means_are_refused():
    with pytest.raises(ValueError, match="0-d NLL and KL"):
        KLBudget(1.0).lagrangian(torch.ones(4), torch.ones(4))


def test_its_problem_drives_cooper_directly():
    budget = KLBudget(2.0, update="gradient", lr=0.1)
    weight = nn.Parameter(torch.tensor(3.0))
    optimizer = cooper.optim.SimultaneousOptimizer(
        cmp=budget.problem,
        primal_optimizers=torch.optim.SGD([weight], lr=0.01),
        dual_optimizers=budget.dual_optimizer,
    )
    optimizer.roll(compute_cmp_state_kwargs={"nll": (weight - 1) ** 2, "kl": weight**2})  # KL 9: violation 7
    assert float(budget.multiplier) == pytest.approx(1.0 + 0.1 * 7.0)
    assert float(weight.detach()) == pytest.approx(3.0 - 0.01 * (2 * 2.0 + 1.0 * 2 * 3.0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_budget_on_cuda_never_synchronises_with_the_host():
    budget = KLBudget(2.0, device="cuda")
    weight = torch.ones(3, device="cuda", requires_grad=True)
    optimizer = torch.optim.Adam([weight], lr=0.1, capturable=True)
    for _ in range(2):  # the first step makes the optimizers' state
        loss = budget.lagrangian((weight - 2).pow(2).sum(), weight.pow(2).sum())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        budget.step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = budget.lagrangian((weight - 2).pow(2).sum(), weight.pow(2).sum())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        budget.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert budget.multiplier.device.type == "cuda"


@pytest.mark.parametrize("page", ["README.md", "docs/library.md"])
def test_the_readme_shows_an_excerpt_of_the_example_script(page):
    readme = (ROOT / page).read_text()
    section = readme.split("# A KL budget in your own loop", 1)[1]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    example = {line.strip() for line in (ROOT / "examples" / "kl_budget.py").read_text().splitlines()}
    lines = [line.strip() for line in block.splitlines() if line.strip()]
    assert len(lines) >= 25
    assert [line for line in lines if line not in example] == []

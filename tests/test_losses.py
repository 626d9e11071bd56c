"""The loss terms against independent references (torch.distributions, float64)."""

import math

import hypothesis.strategies as st
import torch
from hypothesis import given
from hypothesis.extra.numpy import arrays
from torch import distributions as D

from constrained_vae.core import losses

finite = dict(allow_nan=False, allow_infinity=False)


def batches(low: float, high: float, max_n: int = 6, max_d: int = 7):
    shapes = st.tuples(st.integers(1, max_n), st.integers(1, max_d))
    return shapes.flatmap(lambda s: arrays("float64", s, elements=st.floats(low, high, **finite)))


@st.composite
def posteriors(draw):
    mu = draw(batches(-5, 5))
    log_var = draw(arrays("float64", mu.shape, elements=st.floats(-6, 4, **finite)))
    return torch.from_numpy(mu), torch.from_numpy(log_var)


@given(posteriors())
def test_kl_matches_torch_distributions(posterior):
    mu, log_var = posterior
    q = D.Normal(mu, torch.exp(0.5 * log_var))
    p = D.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    reference = D.kl_divergence(q, p)  # [n, d]
    torch.testing.assert_close(losses.gaussian_kl_per_dim(mu, log_var), reference, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(losses.gaussian_kl(mu, log_var), reference.sum(1).mean(), rtol=1e-10, atol=1e-10)


@given(posteriors())
def test_kl_is_non_negative(posterior):
    assert (losses.gaussian_kl_per_dim(*posterior) >= 0).all()


@given(st.integers(1, 8), st.integers(1, 12))
def test_kl_is_exactly_zero_at_the_prior(n, d):
    zeros = torch.zeros(n, d, dtype=torch.float64)
    assert losses.gaussian_kl(zeros, zeros).item() == 0.0
    assert losses.gaussian_kl(zeros.float(), zeros.float()).item() == 0.0


@given(batches(-20, 20), st.data())
def test_bernoulli_nll_matches_torch_distributions(logits, data):
    logits = torch.from_numpy(logits)
    x = torch.from_numpy(data.draw(arrays("float64", tuple(logits.shape), elements=st.sampled_from([0.0, 1.0]))))
    reference = -D.Bernoulli(logits=logits).log_prob(x).sum(1)
    torch.testing.assert_close(losses.bernoulli_nll_per_sample(logits, x), reference, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(losses.bernoulli_nll(logits, x), reference.mean(), rtol=1e-9, atol=1e-9)


@given(batches(-20, 20), st.data())
def test_bernoulli_nll_of_grey_values_is_the_cross_entropy(logits, data):
    logits = torch.from_numpy(logits)
    x = torch.from_numpy(data.draw(arrays("float64", tuple(logits.shape), elements=st.floats(0, 1))))
    p = torch.sigmoid(logits)
    log_p, log_1mp = torch.nn.functional.logsigmoid(logits), torch.nn.functional.logsigmoid(-logits)
    reference = -(x * log_p + (1 - x) * log_1mp).sum(1)
    torch.testing.assert_close(losses.bernoulli_nll_per_sample(logits, x), reference, rtol=1e-9, atol=1e-9)
    assert torch.all(p >= 0)


def test_bernoulli_nll_sums_over_every_image_dimension():
    logits = torch.randn(3, 1, 64, 64, dtype=torch.float64)
    x = (torch.rand(3, 1, 64, 64) > 0.5).double()
    reference = -D.Bernoulli(logits=logits).log_prob(x).sum((1, 2, 3)).mean()
    torch.testing.assert_close(losses.bernoulli_nll(logits, x), reference)


@given(batches(-10, 10), st.data(), st.floats(0.05, 20))
def test_gaussian_nll_fixed_sigma_matches_torch_distributions(mean, data, sigma):
    mean = torch.from_numpy(mean)
    x = torch.from_numpy(data.draw(arrays("float64", tuple(mean.shape), elements=st.floats(-10, 10, **finite))))
    reference = -D.Normal(mean, sigma).log_prob(x).sum(1)
    log_sigma = torch.tensor(math.log(sigma), dtype=torch.float64)
    torch.testing.assert_close(losses.gaussian_nll_per_sample(mean, x, log_sigma), reference, rtol=1e-9, atol=1e-8)


@given(batches(-10, 10), st.data())
def test_gaussian_nll_learned_sigma_matches_and_has_the_right_gradient(mean, data):
    mean = torch.from_numpy(mean)
    shape = tuple(mean.shape)
    x = torch.from_numpy(data.draw(arrays("float64", shape, elements=st.floats(-10, 10, **finite))))
    log_sigma = torch.tensor(data.draw(st.floats(-2, 2)), dtype=torch.float64, requires_grad=True)
    ours = losses.gaussian_nll(mean, x, log_sigma)
    reference = -D.Normal(mean, log_sigma.exp()).log_prob(x).sum(1).mean()
    torch.testing.assert_close(ours, reference, rtol=1e-9, atol=1e-8)
    (g_ours,) = torch.autograd.grad(ours, log_sigma)
    (g_ref,) = torch.autograd.grad(reference, log_sigma)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-8, atol=1e-8)


@given(posteriors(), st.data())
def test_duplicating_a_batch_changes_no_loss_term(posterior, data):
    mu, log_var = posterior
    n, _d = mu.shape
    logits = torch.from_numpy(data.draw(arrays("float64", (n, 5), elements=st.floats(-5, 5, **finite))))
    x = (torch.from_numpy(data.draw(arrays("float64", (n, 5), elements=st.floats(0, 1)))) > 0.5).double()
    twice = lambda t: torch.cat([t, t])  # noqa: E731
    torch.testing.assert_close(losses.gaussian_kl(twice(mu), twice(log_var)), losses.gaussian_kl(mu, log_var))
    torch.testing.assert_close(losses.bernoulli_nll(twice(logits), twice(x)), losses.bernoulli_nll(logits, x))
    log_sigma = torch.tensor(0.3, dtype=torch.float64)
    torch.testing.assert_close(
        losses.gaussian_nll(twice(logits), twice(x), log_sigma), losses.gaussian_nll(logits, x, log_sigma)
    )

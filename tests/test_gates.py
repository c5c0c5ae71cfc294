"""Stochastic gates: eval and training values, noise statistics, gradients through the clamp,
the open-probability penalty and its gradient, and the binary gate."""

from __future__ import annotations

import math

import pytest
import torch

from mome_edge.train.gates import (
    DEFAULT_SIGMA,
    binary_gate,
    fraction_fractional,
    gate_penalty,
    open_probability,
    stochastic_gate,
)


def _phi_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _phi_pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


# --- stochastic_gate: evaluation ----------------------------------------------------------


def test_eval_gate_is_clamped_mu() -> None:
    mu = torch.tensor([-3.0, -1e-6, 0.0, 0.25, 0.5, 0.999, 1.0, 1.5, 40.0])
    z = stochastic_gate(mu, DEFAULT_SIGMA, training=False)
    expected = torch.tensor([0.0, 0.0, 0.0, 0.25, 0.5, 0.999, 1.0, 1.0, 1.0])
    assert torch.equal(z, expected)


def test_eval_gate_ignores_the_random_stream() -> None:
    mu = torch.linspace(-1, 2, 31)
    torch.manual_seed(0)
    first = stochastic_gate(mu, 0.5, training=False)
    second = stochastic_gate(mu, 0.5, training=False)
    assert torch.equal(first, second)


# --- stochastic_gate: training ------------------------------------------------------------

NOISE_SAMPLES = 400_000
# Standard errors at 400k samples: mean ~ sigma/632, std ~ sigma/894, a probability ~ 6e-4.
NOISE_MOMENT_RTOL = 1e-2  # mean and std of z - mu, relative to sigma (>= 6 standard errors)
CLAMP_MASS_TOL = 4e-3  # absolute on P(z == 0), P(z == 1)
INTERIOR_QUANTILE_TOL = 4e-3  # absolute on an empirical CDF value inside (0, 1)


def test_training_gate_is_in_unit_interval_and_seeded() -> None:
    mu = torch.linspace(-2.0, 3.0, 10_001)
    torch.manual_seed(123)
    z1 = stochastic_gate(mu, 0.5, training=True)
    torch.manual_seed(123)
    z2 = stochastic_gate(mu, 0.5, training=True)
    z3 = stochastic_gate(mu, 0.5, training=True)
    assert float(z1.min()) >= 0.0 and float(z1.max()) <= 1.0
    assert torch.equal(z1, z2)  # same seed -> same noise
    assert not torch.equal(z2, z3)  # fresh noise on every call


def test_training_gate_equals_clamped_mu_plus_sigma_randn() -> None:
    mu = torch.linspace(-1.0, 2.0, 1_000)
    sigma = 0.3
    torch.manual_seed(7)
    z = stochastic_gate(mu, sigma, training=True)
    torch.manual_seed(7)
    eps = torch.randn_like(mu)
    assert torch.equal(z, torch.clamp(mu + sigma * eps, 0.0, 1.0))


def test_training_noise_moments_far_from_the_edges() -> None:
    # mu = 0.5 with sigma = 0.05: the clamp edges are 10 sigma away, z - mu is the raw noise.
    sigma = 0.05
    mu = torch.full((NOISE_SAMPLES,), 0.5, dtype=torch.float64)
    torch.manual_seed(0)
    z = stochastic_gate(mu, sigma, training=True)
    assert float(z.min()) > 0.0 and float(z.max()) < 1.0
    eps = z - 0.5
    assert float(eps.mean()) == pytest.approx(0.0, abs=NOISE_MOMENT_RTOL * sigma)
    assert float(eps.std()) == pytest.approx(sigma, abs=NOISE_MOMENT_RTOL * sigma)


@pytest.mark.parametrize("mu_value", [0.5, 0.2, 0.9], ids=["mu0.5", "mu0.2", "mu0.9"])
def test_training_gate_distribution_matches_clamped_normal(mu_value: float) -> None:
    # With sigma = 0.5, z = clamp(mu + eps): P(z = 0) = Phi(-mu/sigma), P(z = 1) = 1 - Phi((1-mu)/sigma),
    # and inside (0, 1) the CDF is the normal one.
    sigma = DEFAULT_SIGMA
    mu = torch.full((NOISE_SAMPLES,), mu_value, dtype=torch.float64)
    torch.manual_seed(1)
    z = stochastic_gate(mu, sigma, training=True)
    assert float((z == 0).double().mean()) == pytest.approx(_phi_cdf(-mu_value / sigma), abs=CLAMP_MASS_TOL)
    assert float((z == 1).double().mean()) == pytest.approx(1 - _phi_cdf((1 - mu_value) / sigma), abs=CLAMP_MASS_TOL)
    for q in (0.25, 0.5, 0.75):
        assert float((z <= q).double().mean()) == pytest.approx(_phi_cdf((q - mu_value) / sigma), abs=INTERIOR_QUANTILE_TOL)


# --- gradient through the clamp -----------------------------------------------------------


def test_eval_gradient_is_one_inside_and_zero_outside() -> None:
    mu = torch.tensor([-0.7, -0.01, 0.01, 0.3, 0.99, 1.01, 2.0], requires_grad=True)
    stochastic_gate(mu, DEFAULT_SIGMA, training=False).sum().backward()
    assert torch.equal(mu.grad, torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0]))


def test_training_gradient_is_one_where_mu_plus_eps_is_inside() -> None:
    mu = torch.linspace(-1.0, 2.0, 5_000, requires_grad=True)
    sigma = 0.5
    torch.manual_seed(11)
    stochastic_gate(mu, sigma, training=True).sum().backward()
    torch.manual_seed(11)
    pre = mu.detach() + sigma * torch.randn_like(mu)
    inside = ((pre > 0) & (pre < 1)).float()
    assert torch.equal(mu.grad, inside)
    assert 0 < float(inside.mean()) < 1  # both branches were exercised


# --- penalty: mean of Phi(mu / sigma) -----------------------------------------------------

PENALTY_TOL = 1e-6  # float32 erf
PENALTY_GRAD_TOL = 1e-6


@pytest.mark.parametrize(
    "mu_value, sigma",
    [(0.0, 0.5), (0.5, 0.5), (-0.5, 0.5), (1.0, 0.25), (-2.0, 1.0), (0.3, 0.1)],
    ids=lambda v: str(v),
)
def test_penalty_of_known_points(mu_value: float, sigma: float) -> None:
    mu = torch.tensor([mu_value])
    assert float(gate_penalty(mu, sigma)) == pytest.approx(_phi_cdf(mu_value / sigma), abs=PENALTY_TOL)


def test_penalty_at_zero_is_one_half() -> None:
    assert float(gate_penalty(torch.zeros(17), 0.5)) == pytest.approx(0.5, abs=PENALTY_TOL)


def test_penalty_is_the_mean_over_gates() -> None:
    values = [-1.0, -0.2, 0.0, 0.1, 0.5, 0.8, 1.4]
    sigma = 0.5
    mu = torch.tensor(values).view(7, 1).expand(7, 3)  # any shape: mean over every element
    expected = sum(_phi_cdf(v / sigma) for v in values) / len(values)
    assert float(gate_penalty(mu, sigma)) == pytest.approx(expected, abs=PENALTY_TOL)
    assert torch.allclose(open_probability(torch.tensor(values), sigma), torch.tensor([_phi_cdf(v / sigma) for v in values]), atol=PENALTY_TOL)


def test_penalty_gradient_is_normal_density_over_sigma_over_n() -> None:
    values = [-1.0, -0.2, 0.0, 0.1, 0.5, 0.8, 1.4]
    sigma = 0.5
    mu = torch.tensor(values, requires_grad=True)
    gate_penalty(mu, sigma).backward()
    expected = torch.tensor([_phi_pdf(v / sigma) / sigma / len(values) for v in values])
    assert torch.allclose(mu.grad, expected, atol=PENALTY_GRAD_TOL)


def test_penalty_gradcheck_float64() -> None:
    mu = torch.linspace(-1.5, 1.5, 13, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m: gate_penalty(m, 0.5), (mu,))
    assert torch.autograd.gradcheck(lambda m: open_probability(m, 0.3), (mu,))


# --- binary gate --------------------------------------------------------------------------


def test_binary_gate_thresholds_clamped_mu() -> None:
    mu = torch.tensor([-1.0, 0.0, 0.3, 0.5, 0.5001, 0.9, 1.0, 7.0])
    assert torch.equal(binary_gate(mu), torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]))
    assert torch.equal(binary_gate(mu, 0.0), torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]))
    # clamp first: mu = 7 is clamp 1.0, which is > 0.95; mu = -1 never exceeds threshold 0
    assert torch.equal(binary_gate(mu, 0.95), torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_binary_gate_is_exactly_zero_or_one(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    mu = (torch.rand(64, 33, dtype=dtype) * 3.0) - 1.0
    for threshold in (0.0, 0.25, 0.5, 0.75):
        z = binary_gate(mu, threshold)
        assert z.dtype == dtype and z.shape == mu.shape
        assert set(torch.unique(z).tolist()) == {0.0, 1.0}
        assert torch.equal(z.bool(), torch.clamp(mu, 0, 1) > threshold)


def test_fraction_fractional_counts_strictly_inside() -> None:
    mu = torch.tensor([-1.0, 0.0, 0.2, 0.7, 1.0, 3.0])
    assert fraction_fractional(mu) == pytest.approx(2 / 6)
    assert fraction_fractional(torch.zeros(0)) == 0.0

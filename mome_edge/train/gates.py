"""Stochastic gates (STG form) as pure functions.

A gate has one parameter mu. In training it opens to z = clamp(mu + eps, 0, 1) with
eps ~ N(0, sigma^2); in evaluation eps = 0. Its sparsity penalty is the probability that it
is open, Phi(mu / sigma), averaged over the gates of a tensor. A binarised gate is the 0/1
mask that is evaluated, compiled and shipped.
"""

from __future__ import annotations

import math

import torch

GATE_MU_INIT = 0.5
DEFAULT_SIGMA = 0.5
DEFAULT_THRESHOLD = 0.5


def stochastic_gate(mu: torch.Tensor, sigma: float, *, training: bool) -> torch.Tensor:
    """z = clamp(mu + eps, 0, 1), eps ~ N(0, sigma^2) when training, eps = 0 otherwise."""
    if training:
        return torch.clamp(mu + sigma * torch.randn_like(mu), 0.0, 1.0)
    return torch.clamp(mu, 0.0, 1.0)


def open_probability(mu: torch.Tensor, sigma: float) -> torch.Tensor:
    """Phi(mu / sigma), elementwise: the chance that the training-time gate is open."""
    return torch.special.ndtr(mu * (1.0 / sigma))


class _StochasticMaskedWeight(torch.autograd.Function):
    """W * clamp(mu + sigma * eps, 0, 1) for (E, out, in) gates in few memory passes.

    Autograd over the plain expression keeps five (E, out, in) temporaries alive and walks
    them in backward; at the paper's sizes that elementwise traffic costs as much as the
    expert matmuls. Here one gate tensor is saved and each gradient is one fused pass.
    """

    @staticmethod
    def forward(ctx, mu: torch.Tensor, weight: torch.Tensor, sigma: float) -> torch.Tensor:
        z = torch.randn_like(mu).mul_(sigma).add_(mu).clamp_(0.0, 1.0)  # (E, out, in)
        ctx.save_for_backward(z, weight)
        return z * weight

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        z, weight = ctx.saved_tensors
        inside = (z > 0) & (z < 1)  # clamp passes gradient only strictly inside (0, 1)
        grad_mu = torch.where(inside, grad * weight, 0.0) if ctx.needs_input_grad[0] else None
        grad_weight = torch.einsum("eoi,eoi->oi", grad, z) if ctx.needs_input_grad[1] else None
        return grad_mu, grad_weight, None


def stochastic_masked_weight(mu: torch.Tensor, weight: torch.Tensor, sigma: float, *, training: bool) -> torch.Tensor:
    """Expert weights W * z for gates mu (E, out, in) and a shared base weight W (out, in)."""
    if training:
        return _StochasticMaskedWeight.apply(mu, weight, sigma)
    return torch.clamp(mu, 0.0, 1.0) * weight


class _OpenProbabilitySum(torch.autograd.Function):
    """sum(Phi(mu / sigma)) with a one-pass analytic gradient phi(mu / sigma) / sigma.

    Expert gates number E x out x in; generic autograd over ndtr costs several full passes.
    """

    @staticmethod
    def forward(ctx, mu: torch.Tensor, sigma: float) -> torch.Tensor:
        ctx.save_for_backward(mu)
        ctx.sigma = sigma
        scaled = mu * (1.0 / (sigma * math.sqrt(2.0)))
        return 0.5 * (mu.numel() + torch.erf(scaled).sum())

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mu,) = ctx.saved_tensors
        sigma = ctx.sigma
        density = (mu * (1.0 / sigma)).square_().mul_(-0.5).exp_()
        return density.mul_(grad / (sigma * math.sqrt(2.0 * math.pi))), None


def open_probability_sum(mu: torch.Tensor, sigma: float) -> torch.Tensor:
    """sum(Phi(mu / sigma)) over every gate of `mu`."""
    return _OpenProbabilitySum.apply(mu, sigma)


def gate_penalty(mu: torch.Tensor, sigma: float) -> torch.Tensor:
    """mean(Phi(mu / sigma)): the expected fraction of open gates (multiply by lambda)."""
    return open_probability_sum(mu, sigma) / mu.numel()


def binary_gate(mu: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """The 0/1 mask that is evaluated, compiled and shipped: 1 where clamp(mu, 0, 1) > threshold."""
    return (torch.clamp(mu, 0.0, 1.0) > threshold).to(mu.dtype)


def fraction_fractional(mu: torch.Tensor) -> float:
    """Share of eval-time gate values strictly between 0 and 1 (not yet binary)."""
    z = torch.clamp(mu.detach(), 0.0, 1.0)
    return float(((z > 0) & (z < 1)).float().mean()) if z.numel() else 0.0

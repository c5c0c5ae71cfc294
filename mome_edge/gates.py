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
    return 0.5 * (1.0 + torch.erf(mu / (sigma * math.sqrt(2.0))))


def gate_penalty(mu: torch.Tensor, sigma: float) -> torch.Tensor:
    """mean(Phi(mu / sigma)): the expected fraction of open gates (multiply by lambda)."""
    return open_probability(mu, sigma).mean()


def binary_gate(mu: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """The 0/1 mask that is evaluated, compiled and shipped: 1 where clamp(mu, 0, 1) > threshold."""
    return (torch.clamp(mu, 0.0, 1.0) > threshold).to(mu.dtype)


def fraction_fractional(mu: torch.Tensor) -> float:
    """Share of eval-time gate values strictly between 0 and 1 (not yet binary)."""
    z = torch.clamp(mu.detach(), 0.0, 1.0)
    return float(((z > 0) & (z < 1)).float().mean()) if z.numel() else 0.0

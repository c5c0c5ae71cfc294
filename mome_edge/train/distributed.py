"""PyTorch's own distributed engine (torchrun + DistributedDataParallel), nothing home-made.

Under torchrun every rank runs the same training loop: the same seed (so gate noise and the
global batch order agree), its slice of each global batch, gradients averaged by DDP, batch
statistics all-reduced (per-expert synchronised batch norm), validation predictions gathered,
and only rank 0 writing files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def gather_rows(self, local: torch.Tensor, total_rows: int) -> torch.Tensor:
        """Rows predicted rank-strided (rank r holds rows r, r + W, ...) back in row order."""
        if not self.enabled:
            return local
        per_rank = -(-total_rows // self.world_size)
        padded = torch.zeros((per_rank, *local.shape[1:]), dtype=local.dtype)
        padded[: local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        stacked = torch.stack(parts, dim=1).reshape(per_rank * self.world_size, *local.shape[1:])  # interleave ranks
        return stacked[:total_rows]


def context_from_env() -> DistributedContext:
    """Join the process group torchrun set up (gloo on CPU, nccl with GPUs); else single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size())


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over ranks (gradients flow back to every rank's share)."""
    return _AllReduceSum.apply(t)


class _AllReduceSum(torch.autograd.Function):
    """y = sum_r x_r on every rank; dL/dx_r = sum_r' dL_r'/dy, since every rank's loss uses y.

    (torch.distributed.nn.functional.all_reduce does the same; this torch marks it deprecated.)
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone(memory_format=torch.contiguous_format)  # gloo needs contiguous buffers
        dist.all_reduce(y, op=dist.ReduceOp.SUM)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class ModelWrapper:
    """DDP around the current model, re-wrapped when the model object changes (a phase switch
    builds a new model with new shapes); the model itself when not distributed."""

    def __init__(self, ctx: DistributedContext) -> None:
        self.ctx = ctx
        self._wrapped: torch.nn.Module | None = None
        self._wrapped_for: torch.nn.Module | None = None

    def __call__(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.ctx.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        if self._wrapped_for is not model:
            # gradients as views of DDP's buckets: no second copy of every gradient, and no
            # stride mismatch between autograd's layout and the bucket's
            self._wrapped, self._wrapped_for = DistributedDataParallel(model, gradient_as_bucket_view=True), model
        return self._wrapped

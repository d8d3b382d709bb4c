"""Straight-through rounding helpers used in training."""
from __future__ import annotations

import torch


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


def ste_floor(x: torch.Tensor) -> torch.Tensor:
    """Floor in the forward pass, identity gradient in the backward pass."""
    return x + (torch.floor(x) - x).detach()


class _Bounded(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi = lo, hi
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        # a gradient step (x -= lr * grad) that moves an out-of-range value back towards the
        # range passes; one that would push it further out is stopped, as in a plain clamp
        passes = ((x >= ctx.lo) & (x <= ctx.hi)) | ((x < ctx.lo) & (grad < 0)) | ((x > ctx.hi) & (grad > 0))
        return grad * passes.to(grad.dtype), None, None


def bounded(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``x.clamp(lo, hi)`` whose gradient is not cut for values outside the range when it
    would move them back in (CompressAI's ``LowerBound`` idea, on both ends).

    A plain clamp has zero gradient outside the range: a scale index that once fell below 0
    could never come back, which left the P-frame codec's contextual latent stuck at the
    smallest scale (every element coded as zero) in the first pre-training run.
    """
    return _Bounded.apply(x, lo, hi)

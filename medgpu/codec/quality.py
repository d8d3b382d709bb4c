"""Quality indices 0..63 interpolate between four trained anchor rates (as DCVC-DC)."""
from __future__ import annotations

import torch

NUM_QUALITIES = 64
NUM_ANCHORS = 4
STEP = (NUM_QUALITIES - 1) // (NUM_ANCHORS - 1)  # 21 quality steps between anchors
ANCHOR_QUALITIES = tuple(a * STEP for a in range(NUM_ANCHORS))  # 0, 21, 42, 63
LAMBDAS = (64.0, 256.0, 1024.0, 4096.0)  # rate-distortion trade-off at the anchors (MSE on [0,1])


def split(q: int) -> tuple[int, int, int]:
    """Quality index -> (lower anchor, upper anchor, integer weight 0..STEP of the upper)."""
    if not 0 <= q < NUM_QUALITIES:
        raise ValueError(f"quality must be in 0..{NUM_QUALITIES - 1}, got {q}")
    a, r = divmod(q, STEP)
    if a >= NUM_ANCHORS - 1:
        return NUM_ANCHORS - 1, NUM_ANCHORS - 1, 0
    return a, a + 1, r


def interp_log(param: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Geometric interpolation of per-anchor positive vectors ``param`` [A, C] -> [B, C, 1, 1].

    ``param`` holds log-values; ``q`` is a [B] integer tensor of quality indices.
    """
    qf = q.to(param.dtype).clamp(0, NUM_QUALITIES - 1) / STEP
    lo = qf.floor().long().clamp(max=NUM_ANCHORS - 1)
    hi = (lo + 1).clamp(max=NUM_ANCHORS - 1)
    w = (qf - lo.to(qf.dtype)).unsqueeze(1)
    logv = param[lo] * (1 - w) + param[hi] * w
    return torch.exp(logv)[:, :, None, None]


def anchor_log_scales(channels: int) -> torch.Tensor:
    """Initial log quantisation scales [A, C]: the step halves from one anchor to the next
    (lambda grows 4x, so the step shrinks about 2x)."""
    steps = torch.tensor([(NUM_ANCHORS - 1) / 2 - a for a in range(NUM_ANCHORS)]) * torch.log(torch.tensor(2.0))
    return steps[:, None].repeat(1, channels)


def lam(q: int) -> float:
    """Lagrangian of quality ``q`` (geometric interpolation between anchors)."""
    a, b, r = split(q)
    la, lb = LAMBDAS[a], LAMBDAS[b]
    return float(la ** (1 - r / STEP) * lb ** (r / STEP))


def lagrangian_cost(quality: int, mse: float, num_bytes: int, pixels: int) -> float:
    """Real rate-distortion cost: lambda(quality) * MSE (codec range [0, 1]) + bits per pixel."""
    return lam(quality) * mse + 8.0 * num_bytes / pixels


def interp_index(indices: torch.Tensor, q: int) -> torch.Tensor:
    """Exact integer interpolation of per-anchor integer scale indices [A, C] -> [C]."""
    a, b, r = split(q)
    ia, ib = indices[a].long(), indices[b].long()
    return torch.div(ia * (STEP - r) + ib * r + STEP // 2, STEP, rounding_mode="floor")

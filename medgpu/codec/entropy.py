"""Gaussian entropy model with integer coding tables and a range coder.

Each latent element has a mean on a 1/4 grid and an integer scale index, both computed
exactly from decoded integers (see :mod:`medgpu.codec.intnet`). The symbol coded is
``round(y - mean)``, clipped to the table's support. Coding tables are integer frequency
tables stored with the weights, so encoder and decoder use bit-identical models; the
range coder is ``constriction``'s queue coder.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from medgpu.codec.quant import ste_round

TABLE_PRECISION = 16  # frequencies sum to 2**16
MAX_SUPPORT = 1024  # symbols are clipped to [-MAX_SUPPORT, MAX_SUPPORT]
LIKELIHOOD_FLOOR = 1e-9
FLAG_INDEX = 10  # scale index whose table codes binary flags (sigma ~0.34: a 0 costs ~0.2 bits)


def scale_values(num_scales: int, smin: float, smax: float) -> np.ndarray:
    """Geometric ladder of Gaussian standard deviations."""
    return np.exp(np.linspace(math.log(smin), math.log(smax), num_scales))


def build_tables(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer frequency tables for zero-mean discretised Gaussians.

    Returns ``(freqs [S, 2*MAX_SUPPORT+1] int32, half_width [S] int32)``; row ``s`` is only
    valid on ``[MAX_SUPPORT - half_width[s], MAX_SUPPORT + half_width[s]]``.
    """
    from scipy.special import ndtr

    total = 2**TABLE_PRECISION
    freqs = np.zeros((len(scales), 2 * MAX_SUPPORT + 1), dtype=np.int32)
    half = np.zeros(len(scales), dtype=np.int32)
    for s, sigma in enumerate(scales):
        hw = int(min(MAX_SUPPORT, math.ceil(sigma * 7.0) + 1))
        k = np.arange(-hw, hw + 1, dtype=np.float64)
        upper = ndtr((k + 0.5) / sigma)
        lower = ndtr((k - 0.5) / sigma)
        upper[-1], lower[0] = 1.0, 0.0  # tails go to the end bins
        p = upper - lower
        f = np.maximum(1, np.floor(p * (total - len(k)))).astype(np.int64)
        f[hw] += total - f.sum()  # the remainder goes to the zero bin
        freqs[s, MAX_SUPPORT - hw : MAX_SUPPORT + hw + 1] = f
        half[s] = hw
    return freqs, half


class GaussianConditional(nn.Module):
    """Training-time likelihoods and coding-time symbol handling for one scale ladder."""

    def __init__(self, num_scales: int = 64, smin: float = 0.11, smax: float = 128.0) -> None:
        super().__init__()
        scales = scale_values(num_scales, smin, smax)
        freqs, half = build_tables(scales)
        self.num_scales = num_scales
        self.register_buffer("scales", torch.tensor(scales, dtype=torch.float32))
        self.register_buffer("freqs", torch.from_numpy(freqs))
        self.register_buffer("half_width", torch.from_numpy(half))

    # ---- training ---------------------------------------------------------------
    def sigma(self, idx: torch.Tensor) -> torch.Tensor:
        """Differentiable standard deviation for a (possibly fractional) scale index."""
        lo, hi = self.scales[0].log(), self.scales[-1].log()
        return torch.exp(lo + (hi - lo) * idx / (self.num_scales - 1))

    def likelihood(self, y: torch.Tensor, mean: torch.Tensor, idx: torch.Tensor, noise: bool = True) -> torch.Tensor:
        """Bin probability of ``y`` under N(mean, sigma(idx)).

        ``noise=True`` (pre-training): uniform noise stands in for rounding. ``noise=False``:
        the residual is rounded as the coder rounds it (straight-through gradient), so the
        value is the probability of the symbol that will really be coded."""
        r = y - mean
        r = r + torch.empty_like(r).uniform_(-0.5, 0.5) if noise else ste_round(r)
        s = self.sigma(idx)
        c = 2**-0.5
        upper = 0.5 * torch.erfc(-(r + 0.5) / s * c)
        lower = 0.5 * torch.erfc(-(r - 0.5) / s * c)
        return (upper - lower).clamp_min(LIKELIHOOD_FLOOR)

    @staticmethod
    def quantize(y: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """Reconstruction-path quantisation: round(y - mean) + mean, straight-through."""
        return ste_round(y - mean) + mean

    # ---- coding -----------------------------------------------------------------
    def symbols(self, y: torch.Tensor, mean: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Integer symbols round(y - mean), clipped to each table's support."""
        q = torch.round(y.double() - mean.double())
        hw = self.half_width[idx.long()].double()
        return torch.maximum(torch.minimum(q, hw), -hw)

    def models(self) -> list:
        """One constriction categorical model per scale index (built on demand)."""
        import constriction

        out = []
        freqs = self.freqs.cpu().numpy()
        half = self.half_width.cpu().numpy()
        total = float(2**TABLE_PRECISION)
        for s in range(self.num_scales):
            row = freqs[s, MAX_SUPPORT - half[s] : MAX_SUPPORT + half[s] + 1]
            out.append(constriction.stream.model.Categorical(row.astype(np.float64) / total, perfect=False))
        return out


class SymbolCoder:
    """Writes or reads groups of symbols that share a scale index, in a fixed order.

    One coder spans a whole GoP packet. The order of calls is the only framing, so the
    decoder must issue exactly the same sequence of calls as the encoder.
    """

    def __init__(self, models: list, half_width: np.ndarray, data: bytes | None = None) -> None:
        import constriction

        self.models = models
        self.half = half_width
        if data is None:
            self.enc = constriction.stream.queue.RangeEncoder()
            self.dec = None
        else:
            words = np.frombuffer(data, dtype=np.uint32).copy()
            self.enc = None
            self.dec = constriction.stream.queue.RangeDecoder(words)

    def encode(self, sym: torch.Tensor, idx: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Encode integer symbols (same shape as ``idx``); ``mask`` selects the positions."""
        s = sym.reshape(-1).cpu().numpy().astype(np.int64)
        i = idx.reshape(-1).cpu().numpy().astype(np.int64)
        sel = np.ones_like(i, dtype=bool) if mask is None else mask.reshape(-1).cpu().numpy().astype(bool)
        for k in np.unique(i[sel]):
            pick = sel & (i == k)
            self.enc.encode((s[pick] + self.half[k]).astype(np.int32), self.models[k])

    def decode(self, idx: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Decode symbols at the masked positions (others are 0) as a float64 tensor."""
        i = idx.reshape(-1).cpu().numpy().astype(np.int64)
        sel = np.ones_like(i, dtype=bool) if mask is None else mask.reshape(-1).cpu().numpy().astype(bool)
        out = np.zeros(i.shape, dtype=np.float64)
        for k in np.unique(i[sel]):
            pick = sel & (i == k)
            vals = self.dec.decode(self.models[k], int(pick.sum()))
            out[pick] = np.asarray(vals, dtype=np.float64) - self.half[k]
        return torch.from_numpy(out.reshape(tuple(idx.shape))).to(idx.device)

    def encode_flag(self, bit: int) -> None:
        """Encode one binary decision (e.g. the coding mode of a frame)."""
        self.encode(torch.tensor([float(bit)]), torch.tensor([FLAG_INDEX]))

    def decode_flag(self) -> int:
        """Decode one binary decision written by :meth:`encode_flag`."""
        value = int(self.decode(torch.tensor([FLAG_INDEX]))[0])
        if value not in (0, 1):
            raise ValueError(f"corrupt stream: coding-mode flag {value}")
        return value

    def to_bytes(self) -> bytes:
        return self.enc.get_compressed().tobytes()


class SymbolRecorder:
    """Stands in for a :class:`SymbolCoder` during a trial encode: measures the real size of
    what was coded and can replay the same calls into another coder."""

    def __init__(self, trial: SymbolCoder) -> None:
        self.trial = trial
        self.calls: list[tuple] = []

    def encode(self, sym: torch.Tensor, idx: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        self.calls.append((sym, idx, mask))
        self.trial.encode(sym, idx, mask)

    def num_bytes(self) -> int:
        return len(self.trial.to_bytes())

    def replay(self, coder: SymbolCoder) -> None:
        for call in self.calls:
            coder.encode(*call)

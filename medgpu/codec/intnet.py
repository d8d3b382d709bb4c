"""Exact integer networks that compute entropy parameters.

Design rule (docs/design.md §4): every entropy parameter is computed only from already
decoded integers, and exactly. Here activations are fixed-point integers (value x 16),
weights are integers (value x 64), and convolutions run on integer-valued float64 tensors:
every partial sum is an integer below 2^53, so the result is the same on any CPU or GPU
and for any thread count or summation order. Rescaling divides by a power of two and
floors, which is exact too. Training runs the same arithmetic in float32 with
straight-through rounding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medgpu.codec.quant import bounded, ste_floor, ste_round

ACT_BITS = 4  # activations are integers representing value * 2**ACT_BITS
WEIGHT_BITS = 6  # weights are integers representing value * 2**WEIGHT_BITS
MAX_WEIGHT = 2**12  # |integer weight| bound
MAX_ACT = 2**20  # activation bound after each layer (keeps sums far below 2**53)
ACT_SCALE = float(2**ACT_BITS)


class ExactConv2d(nn.Module):
    """Convolution whose eval-mode result is bit-exact on any hardware.

    Input and output are fixed-point integers (value * 16). In training mode the same
    arithmetic runs in the input's float dtype with straight-through rounding.
    """

    def __init__(self, cin: int, cout: int, k: int = 3) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        self.pad = k // 2

    def int_weight(self) -> torch.Tensor:
        w = ste_round(self.weight * 2**WEIGHT_BITS)
        return w.clamp(-MAX_WEIGHT, MAX_WEIGHT)

    def int_bias(self) -> torch.Tensor:
        return ste_round(self.bias * 2 ** (WEIGHT_BITS + ACT_BITS))

    def forward(self, x: torch.Tensor, exact: bool = False) -> torch.Tensor:
        if exact:
            w = torch.round(self.weight.detach().double() * 2**WEIGHT_BITS).clamp(-MAX_WEIGHT, MAX_WEIGHT)
            b = torch.round(self.bias.detach().double() * 2 ** (WEIGHT_BITS + ACT_BITS))
            with torch.backends.cudnn.flags(enabled=False):  # cuDNN may pick FFT/Winograd: not exact
                acc = F.conv2d(x.double(), w, b, padding=self.pad)  # im2col + DGEMM: exact integer sums
            return torch.floor(acc * 2.0**-WEIGHT_BITS)
        acc = F.conv2d(x, self.int_weight(), self.int_bias(), padding=self.pad)
        return ste_floor(acc * 2.0**-WEIGHT_BITS)


def exact_relu(x: torch.Tensor) -> torch.Tensor:
    """ReLU with an upper bound; exact on integer-valued inputs."""
    return x.clamp(0.0, float(MAX_ACT))


class ExactSequential(nn.Module):
    """ExactConv2d layers with ReLU between them and optional pixel shuffles.

    ``spec`` items: ("conv", cin, cout, k) or ("relu",) or ("shuffle",).
    """

    def __init__(self, spec: list[tuple]) -> None:
        super().__init__()
        self.spec = [s[0] for s in spec]
        self.layers = nn.ModuleList(ExactConv2d(*s[1:]) for s in spec if s[0] == "conv")

    def forward(self, x: torch.Tensor, exact: bool = False) -> torch.Tensor:
        convs = iter(self.layers)
        for kind in self.spec:
            if kind == "conv":
                x = next(convs)(x, exact)
            elif kind == "relu":
                x = exact_relu(x)
            else:
                x = F.pixel_shuffle(x, 2)
        return x


def to_fixed(latent: torch.Tensor, exact: bool) -> torch.Tensor:
    """A decoded latent (multiples of 1/4) as fixed-point activation integers."""
    x = latent * ACT_SCALE
    return torch.round(x.double()) if exact else x


class ParamHead(nn.Module):
    """Maps fixed-point features to (mean, scale index) of a Gaussian per latent element.

    Means are multiples of 1/4, scale indices are integers in [0, num_scales).
    In training the continuous index is returned with straight-through rounding.
    """

    def __init__(self, cin: int, hidden: int, channels: int, num_scales: int) -> None:
        super().__init__()
        self.net = ExactSequential([("conv", cin, hidden, 1), ("relu",), ("conv", hidden, 2 * channels, 1)])
        self.channels = channels
        self.num_scales = num_scales

    def forward(self, feats: torch.Tensor, exact: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(feats, exact)
        mean_raw, scale_raw = out[:, : self.channels], out[:, self.channels :]
        if exact:
            # mean_raw is value*16: floor(mean_raw/4)/4 puts the value on a 1/4 grid
            mean = torch.floor(mean_raw / 4.0) / 4.0
            idx = torch.floor((scale_raw + ACT_SCALE / 2) / ACT_SCALE).clamp(0, self.num_scales - 1)
            return mean, idx
        mean = ste_floor(mean_raw / 4.0) / 4.0
        idx = bounded(ste_round(scale_raw / ACT_SCALE), 0, self.num_scales - 1)
        return mean, idx

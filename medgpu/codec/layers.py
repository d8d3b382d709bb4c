"""Float building blocks of the encoder and the reconstruction path."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    """A 'same' convolution (stride 2 halves the size)."""
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


def zero_conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    """A :func:`conv` whose weights and bias start at zero (an added branch that starts off)."""
    c = conv(cin, cout, k, stride)
    nn.init.zeros_(c.weight)
    nn.init.zeros_(c.bias)
    return c


class ResBlock(nn.Module):
    """Two 3x3 convolutions with LeakyReLU and an identity skip."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = conv(ch, ch)
        self.conv2 = conv(ch, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.leaky_relu(self.conv1(F.leaky_relu(x, 0.1)), 0.1))


class Down(nn.Module):
    """Stride-2 convolution followed by a residual block."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = conv(cin, cout, 3, 2)
        self.res = ResBlock(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res(self.conv(x))


class Up(nn.Module):
    """Residual block followed by a sub-pixel (pixel-shuffle) x2 upsampling."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.res = ResBlock(cin)
        self.conv = conv(cin, cout * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(self.res(x)), 2)


def warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp ``x`` [B,C,H,W] by ``flow`` [B,2,H,W] (pixels, x then y)."""
    b, _, h, w = x.shape
    ys = torch.arange(h, dtype=x.dtype, device=x.device)
    xs = torch.arange(w, dtype=x.dtype, device=x.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    px = gx.unsqueeze(0) + flow[:, 0]
    py = gy.unsqueeze(0) + flow[:, 1]
    nx = 2.0 * px / max(w - 1, 1) - 1.0
    ny = 2.0 * py / max(h - 1, 1) - 1.0
    grid = torch.stack((nx, ny), dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def resize_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a flow field to ``size`` and scale its vectors accordingly."""
    h, w = flow.shape[-2:]
    out = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
    sx, sy = size[1] / w, size[0] / h
    return torch.stack((out[:, 0] * sx, out[:, 1] * sy), dim=1)

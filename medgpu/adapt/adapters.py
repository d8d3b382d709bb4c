"""Encoder-side adapters, paper eq. (1)-(3).

``adapt_encoder`` returns a copy of a P-frame codec whose encoder-only modules carry
adapters (parallel beside each of the four conv blocks of the motion encoder and of the
contextual encoder, serial
after motion estimation and the two hyper-prior encoders). Every module the decoder runs
is left exactly as it was, and the adapters' last convolution starts at zero, so the copy
codes exactly like the original until the adapters are trained.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from medgpu.codec.inter import InterCodec


class Adapter(nn.Module):
    """delta(F) = W_zero x sigma(W_dw (x) sigma(W_pre x F)), eq. (1)."""

    def __init__(self, cin: int, cout: int, c_dw: int = 8, k: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.pre = nn.Conv2d(cin, c_dw, 1)
        self.stride = stride
        self.dw = nn.Conv2d(c_dw, c_dw, k, padding=k // 2, groups=c_dw)
        self.zero = nn.Conv2d(c_dw, cout, 1)
        nn.init.zeros_(self.zero.weight)
        nn.init.zeros_(self.zero.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Computed the way that is fastest for these tiny layers on CPU (about a third less time
        # forward + backward than three Conv2d calls): the stride is taken by the first 1x1
        # convolution (as in a ResNet projection shortcut), the 1x1 convolutions run as
        # channel matmuls on a channels-last view, the depth-wise one in channels-last layout.
        s = self.stride
        if s > 1:
            x = x[:, :, ::s, ::s]
        h = F.leaky_relu(F.linear(x.permute(0, 2, 3, 1), self.pre.weight[:, :, 0, 0], self.pre.bias), 0.1)
        dw = self.dw
        h = F.conv2d(h.permute(0, 3, 1, 2), dw.weight, dw.bias, 1, dw.padding, groups=dw.groups)
        h = F.leaky_relu(h, 0.1).permute(0, 2, 3, 1)
        return F.linear(h, self.zero.weight[:, :, 0, 0], self.zero.bias).permute(0, 3, 1, 2)


class ParallelAdapted(nn.Module):
    """F <- delta(F) + W_coding x F, eq. (2). Further inputs of the block (the temporal
    context of a contextual-encoder stage) go to the block only."""

    def __init__(self, block: nn.Module, adapter: Adapter) -> None:
        super().__init__()
        self.block, self.adapter = block, adapter

    def forward(self, x: torch.Tensor, *context: torch.Tensor) -> torch.Tensor:
        return self.block(x, *context) + self.adapter(x)


class SerialAdapted(nn.Module):
    """F <- delta(W_coding x F) + W_coding x F, eq. (3)."""

    def __init__(self, block: nn.Module, adapter: Adapter) -> None:
        super().__init__()
        self.block, self.adapter = block, adapter

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        out = self.block(*args)
        return out + self.adapter(out)


class DetachedMotionEstimation(nn.Module):
    """Motion estimation whose reference input is cut from the graph during updating.

    The flow steers only what the motion encoder codes (the decoder never runs motion
    estimation), so the gradient that would run from a later frame's flow back through
    the previous reconstruction is dropped, in both scopes. With frozen weights (the
    adapters scope) no gradient flows through the module at all, so it runs without autograd:
    the adapters save the whole backward pass of motion estimation, which the full update
    must do to train its weights.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, cur: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        if any(p.requires_grad for p in self.module.parameters()):
            return self.module(cur, ref.detach())
        with torch.no_grad():
            return self.module(cur, ref)


def _conv_of(block: nn.Module) -> nn.Conv2d:
    """The convolution that sets a block's channels and stride (of a ``Down`` block or a
    contextual-encoder stage: its convolution of the features)."""
    return block if isinstance(block, nn.Conv2d) else block.conv


def _parallel(block: nn.Module, c_dw: int, k: int) -> ParallelAdapted:
    c = _conv_of(block)
    return ParallelAdapted(block, Adapter(c.in_channels, c.out_channels, c_dw, k, c.stride[0]))


ADAPTER_SEED = 0
"""Seed of the adapters' random first layers (their last layer starts at zero)."""


def adapt_encoder(inter: InterCodec, c_dw: int = 8, k: int = 3, scope: str = "adapters") -> InterCodec:
    """A copy of ``inter`` prepared for online updating.

    ``scope="adapters"`` (the method): adapters are inserted and are the only trainable
    parameters. ``scope="full"`` (the paper's ablation): no adapters; every encoder-side
    parameter is trainable. Decoder-side modules are frozen in both cases.
    """
    if scope not in ("adapters", "full"):
        raise ValueError("scope must be 'adapters' or 'full'")
    # The adapters' first two layers start random: draw them from a fixed seed, leaving the
    # caller's random state alone, so that an update (and the stream it leads to) does not
    # depend on what ran before in the process (it did: two runs found different adapters).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ADAPTER_SEED)
        return _adapted_copy(inter, c_dw, k, scope).to(next(inter.parameters()).device)


def _adapted_copy(inter: InterCodec, c_dw: int, k: int, scope: str) -> InterCodec:
    new = copy.deepcopy(inter)
    for p in new.parameters():
        p.requires_grad_(False)
    encoder_side = [new.motion_estimation, new.motion_encoder, new.motion_latent.hyper_encoder,
                    new.contextual_encoder, new.contextual_latent.hyper_encoder]
    if scope == "full":
        for m in encoder_side:
            for p in m.parameters():
                p.requires_grad_(True)
        new.motion_estimation = DetachedMotionEstimation(new.motion_estimation)
        return new
    mv = new.motion_encoder.net
    for i, block in enumerate(mv):
        mv[i] = _parallel(block, c_dw, k)
    ce = new.contextual_encoder
    for name in ("s1", "s2", "s3", "d4"):
        setattr(ce, name, _parallel(getattr(ce, name), c_dw, k))
    new.motion_estimation = SerialAdapted(DetachedMotionEstimation(new.motion_estimation), Adapter(2, 2, c_dw, k))
    for lat in (new.motion_latent, new.contextual_latent):
        z = lat.hyper_encoder.c3.out_channels
        lat.hyper_encoder = SerialAdapted(lat.hyper_encoder, Adapter(z, z, c_dw, k))
    return new  # the new adapters are on the CPU: adapt_encoder moves the copy to the codec's device


def adapter_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters of an adapted copy."""
    return [p for p in model.parameters() if p.requires_grad]


def encoder_side_parameter_count(inter: InterCodec) -> int:
    """Parameters of the stock encoder-only modules of a P-frame codec."""
    mods = [inter.motion_estimation, inter.motion_encoder, inter.motion_latent.hyper_encoder,
            inter.contextual_encoder, inter.contextual_latent.hyper_encoder]
    return sum(p.numel() for m in mods for p in m.parameters())

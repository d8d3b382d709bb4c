"""Latent coding with a hyperprior, a checkerboard spatial context and an optional
integer temporal prior (the previous frame's decoded latent)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medgpu.codec.entropy import GaussianConditional, SymbolCoder
from medgpu.codec.intnet import ExactSequential, ParamHead, to_fixed
from medgpu.codec.layers import conv
from medgpu.codec.quality import NUM_ANCHORS, interp_index
from medgpu.codec.quant import bounded, ste_round


def checkerboard(h: int, w: int, device=None) -> torch.Tensor:
    """Anchor mask [1,1,H,W]: True where (row + col) is even."""
    i = torch.arange(h, device=device).view(-1, 1)
    j = torch.arange(w, device=device).view(1, -1)
    return ((i + j) % 2 == 0).view(1, 1, h, w)


class HyperEncoder(nn.Module):
    """Float analysis transform y -> z at a quarter of y's resolution (encoder only)."""

    def __init__(self, m: int, z: int) -> None:
        super().__init__()
        self.c1 = conv(m, m, 3)
        self.c2 = conv(m, m, 3, 2)
        self.c3 = conv(m, z, 3, 2)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.c1(y), 0.1)
        x = F.leaky_relu(self.c2(x), 0.1)
        return self.c3(x)


class LatentCodec(nn.Module):
    """Codes a latent ``y`` [B,M,h,w] (h, w multiples of 4).

    Entropy parameters come only from integers: the rounded hyper-latent, the anchor half
    of ``y`` (checkerboard) and, if ``prior_channels`` > 0, a decoded prior latent.
    """

    def __init__(self, m: int, z: int, hidden: int, prior_channels: int = 0, num_scales: int = 64) -> None:
        super().__init__()
        self.m, self.z, self.prior_channels = m, z, prior_channels
        self.hyper_encoder = HyperEncoder(m, z)
        self.z_scale = nn.Parameter(torch.full((NUM_ANCHORS, z), 20.0))  # scale index per anchor rate
        self.hyper_decoder = ExactSequential(
            [("conv", z, hidden * 4, 3), ("shuffle",), ("relu",), ("conv", hidden, hidden * 4, 3), ("shuffle",), ("relu",)]
        )
        self.prior_net = (
            ExactSequential([("conv", prior_channels, hidden, 3), ("relu",)]) if prior_channels else None
        )
        base = hidden * (2 if prior_channels else 1)
        self.context_net = ExactSequential([("conv", m, hidden, 5), ("relu",)])
        self.anchor_head = ParamHead(base, hidden * 2, m, num_scales)
        self.nonanchor_head = ParamHead(base + hidden, hidden * 2, m, num_scales)
        self.gaussian = GaussianConditional(num_scales)

    # ---- shared pieces ----------------------------------------------------------
    def _base_features(self, z_hat: torch.Tensor, prior: torch.Tensor | None, exact: bool) -> torch.Tensor:
        feats = self.hyper_decoder(to_fixed(z_hat, exact), exact)
        if self.prior_net is not None:
            b, _, h, w = feats.shape
            p = prior if prior is not None else feats.new_zeros(b, self.prior_channels, h, w)
            feats = torch.cat((feats, self.prior_net(to_fixed(p, exact), exact)), 1)
        return feats

    def _nonanchor_params(self, base, y_anchor, exact):
        ctx = self.context_net(to_fixed(y_anchor, exact), exact)
        return self.nonanchor_head(torch.cat((base, ctx), 1), exact)

    def z_index_train(self, anchor: torch.Tensor) -> torch.Tensor:
        """Scale index of z per sample for anchor-rate indices ``anchor`` [B] -> [B,Z,1,1]."""
        return ste_round(bounded(self.z_scale[anchor], 0, self.gaussian.num_scales - 1))[:, :, None, None]

    def z_index(self, q: int) -> torch.Tensor:
        """Integer scale index of z per channel at quality ``q`` [Z]."""
        ints = torch.round(self.z_scale.detach().clamp(0, self.gaussian.num_scales - 1))
        return interp_index(ints, q)

    # ---- training ---------------------------------------------------------------
    def forward(self, y: torch.Tensor, anchor: torch.Tensor, prior: torch.Tensor | None = None,
                noise: bool = True) -> tuple[torch.Tensor, dict]:
        """Returns ``(y_hat, {"y": likelihoods, "z": likelihoods})``; ``noise`` as in
        :meth:`GaussianConditional.likelihood`."""
        z = self.hyper_encoder(y)
        z_idx = self.z_index_train(anchor).expand_as(z)
        zero = torch.zeros_like(z)
        z_lik = self.gaussian.likelihood(z, zero, z_idx, noise)
        z_hat = ste_round(z)
        base = self._base_features(z_hat, prior, exact=False)
        mask = checkerboard(y.shape[2], y.shape[3], y.device)
        mean_a, idx_a = self.anchor_head(base)
        y_hat_a = self.gaussian.quantize(y, mean_a) * mask
        mean_n, idx_n = self._nonanchor_params(base, y_hat_a, exact=False)
        mean = torch.where(mask, mean_a, mean_n)
        idx = torch.where(mask, idx_a, idx_n)
        y_hat = self.gaussian.quantize(y, mean)
        y_lik = self.gaussian.likelihood(y, mean, idx, noise)
        return y_hat, {"y": y_lik, "z": z_lik}

    # ---- coding -----------------------------------------------------------------
    @torch.no_grad()
    def compress(self, y: torch.Tensor, q: int, coder: SymbolCoder, prior: torch.Tensor | None = None) -> torch.Tensor:
        """Encode ``y`` (batch 1); returns the y_hat the decoder will rebuild."""
        z = self.hyper_encoder(y)
        z_idx = self.z_index(q).view(1, -1, 1, 1).expand_as(z)
        z_sym = self.gaussian.symbols(z, torch.zeros_like(z), z_idx)
        coder.encode(z_sym, z_idx)
        return self._code_y(z_sym, prior, coder, y=y)

    @torch.no_grad()
    def decompress(self, coder: SymbolCoder, shape: tuple[int, int], q: int, prior: torch.Tensor | None = None) -> torch.Tensor:
        """Decode a latent of spatial ``shape`` (batch 1)."""
        h, w = shape
        z_idx = self.z_index(q).view(1, -1, 1, 1).expand(1, self.z, h // 4, w // 4).to(self.z_scale.device)
        z_hat = coder.decode(z_idx)
        return self._code_y(z_hat, prior, coder, y=None)

    def _code_y(self, z_hat, prior, coder, y):
        """Shared encode/decode walk over the two checkerboard halves."""
        prior_d = prior.double() if prior is not None else None
        base = self._base_features(z_hat.double(), prior_d, exact=True)
        h, w = base.shape[2], base.shape[3]
        mask = checkerboard(h, w, base.device).expand(1, self.m, h, w)
        mean_a, idx_a = self.anchor_head(base, exact=True)
        y_hat_a = self._code_half(y, mean_a, idx_a, mask, coder)
        mean_n, idx_n = self._nonanchor_params(base, y_hat_a, exact=True)
        y_hat_n = self._code_half(y, mean_n, idx_n, ~mask, coder)
        return (y_hat_a + y_hat_n).float()

    def _code_half(self, y, mean, idx, mask, coder):
        if y is not None:
            sym = self.gaussian.symbols(y, mean, idx)
            coder.encode(sym, idx, mask)
        else:
            sym = coder.decode(idx, mask)
        return (sym + mean) * mask

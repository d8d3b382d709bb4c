"""I-frame codec: float analysis/synthesis transforms around an exact-entropy latent codec."""
from __future__ import annotations

import torch
from torch import nn

from medgpu.codec.entropy import SymbolCoder
from medgpu.codec.latent import LatentCodec
from medgpu.codec.layers import Down, ResBlock, Up, conv
from medgpu.codec.quality import anchor_log_scales, interp_log


class IntraCodec(nn.Module):
    """Hyperprior + checkerboard image codec for single-channel frames in [0, 1].

    Input height and width must be multiples of 64 (``stride``).
    """

    stride = 64

    def __init__(self, ch: tuple[int, int, int] = (32, 48, 64), m: int = 64, z: int = 32, hidden: int = 64) -> None:
        super().__init__()
        c1, c2, c3 = ch
        self.m = m
        self.encoder = nn.Sequential(Down(1, c1), Down(c1, c2), Down(c2, c3), conv(c3, m, 3, 2))
        self.decoder = nn.Sequential(conv(m, c3), Up(c3, c2), Up(c2, c1), Up(c1, 16), Up(16, 16), ResBlock(16), conv(16, 1))
        self.latent = LatentCodec(m, z, hidden)
        self.enc_scale = nn.Parameter(anchor_log_scales(m))  # log per-channel quantisation scales
        self.dec_scale = nn.Parameter(anchor_log_scales(m))

    def analysis(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return self.encoder(x - 0.5) / interp_log(self.enc_scale, q)

    def synthesis(self, y_hat: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return self.decoder(y_hat * interp_log(self.dec_scale, q)) + 0.5

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> dict:
        """Training pass: ``q`` [B] holds anchor qualities (0, 21, 42, 63)."""
        y = self.analysis(x, q)
        anchor = torch.div(q, 21, rounding_mode="floor")
        y_hat, lik = self.latent(y, anchor)
        return {"x_hat": self.synthesis(y_hat, q), "likelihoods": lik, "y_hat": y_hat}

    @torch.no_grad()
    def compress(self, x: torch.Tensor, q: int, coder: SymbolCoder) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode one frame [1,1,H,W]; returns (reconstruction, y_hat) as the decoder sees them."""
        qt = torch.tensor([q], device=x.device)
        y_hat = self.latent.compress(self.analysis(x, qt), q, coder)
        return self.synthesis(y_hat, qt).clamp(0, 1), y_hat

    @torch.no_grad()
    def decompress(self, coder: SymbolCoder, size: tuple[int, int], q: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode one frame of padded ``size``; returns (reconstruction, y_hat)."""
        h, w = size[0] // 16, size[1] // 16
        y_hat = self.latent.decompress(coder, (h, w), q).to(device)
        qt = torch.tensor([q], device=device)
        return self.synthesis(y_hat, qt).clamp(0, 1), y_hat

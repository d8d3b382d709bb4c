"""P-frame codec in the DCVC-DC manner: motion estimation, motion coding with a hyperprior,
multi-scale temporal context mining, contextual coding with a hyperprior, and frame
reconstruction. Entropy parameters come only from decoded integers (hyper-latents,
checkerboard anchors, the previous frame's latents)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from medgpu.codec.entropy import SymbolCoder
from medgpu.codec.latent import LatentCodec
from medgpu.codec.layers import Down, ResBlock, Up, conv, resize_flow, warp, zero_conv
from medgpu.codec.quality import anchor_log_scales, interp_log

FEAT = 16  # channels of the reference feature (extracted from a reconstructed frame)


@dataclass
class Reference:
    """Decoder state carried from one frame to the next (passed explicitly)."""

    frame: torch.Tensor  # [B,1,H,W] reconstruction
    feature: torch.Tensor  # [B,FEAT,H,W] features of ``frame`` (``InterCodec.reference``)
    y_hat: torch.Tensor  # [B,M,H/16,W/16] decoded latent (multiples of 1/4)
    m_hat: torch.Tensor | None  # [B,Mm,H/16,W/16] decoded motion latent, None after an I-frame


class MotionEstimation(nn.Module):
    """SpyNet-like coarse-to-fine optical flow on a 3-level pyramid (1/8, 1/4, 1/2);
    the flow is returned at full resolution in pixels."""

    def __init__(self, ch: int = 24, levels: int = 3) -> None:
        super().__init__()
        self.levels = levels
        self.nets = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(4, ch, 5, padding=2), nn.LeakyReLU(0.1),
                nn.Conv2d(ch, ch, 5, padding=2), nn.LeakyReLU(0.1),
                nn.Conv2d(ch, 2, 5, padding=2),
            )
            for _ in range(levels)
        )

    def forward(self, cur: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        pyr = [(cur, ref)]
        for _ in range(self.levels):
            c, r = pyr[-1]
            pyr.append((F.avg_pool2d(c, 2), F.avg_pool2d(r, 2)))
        c, _ = pyr[-1]
        flow = c.new_zeros(c.shape[0], 2, c.shape[2], c.shape[3])
        for lvl in range(self.levels):
            c, r = pyr[self.levels - lvl]
            flow = resize_flow(flow, c.shape[-2:])
            flow = flow + self.nets[lvl](torch.cat((c, warp(r, flow), flow), 1))
        return resize_flow(flow, cur.shape[-2:])


class ContextMining(nn.Module):
    """Multi-scale temporal contexts from the reference feature, warped by decoded motion."""

    def __init__(self, c2: int = 32, c3: int = 48) -> None:
        super().__init__()
        self.down2 = conv(FEAT, c2, 3, 2)
        self.down3 = conv(c2, c3, 3, 2)
        self.refine1 = nn.Sequential(conv(FEAT, FEAT), ResBlock(FEAT))
        self.refine2 = nn.Sequential(conv(c2, c2), ResBlock(c2))
        self.refine3 = nn.Sequential(conv(c3, c3), ResBlock(c3))

    def forward(self, feature: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f1 = feature
        f2 = F.leaky_relu(self.down2(f1), 0.1)
        f3 = F.leaky_relu(self.down3(f2), 0.1)
        c1 = self.refine1(warp(f1, flow))
        c2 = self.refine2(warp(f2, resize_flow(flow, f2.shape[-2:])))
        c3 = self.refine3(warp(f3, resize_flow(flow, f3.shape[-2:])))
        return c1, c2, c3


class ContextStage(nn.Module):
    """One analysis stage of the contextual encoder: a stride-2 convolution of the features
    plus a stride-2 projection of the temporal context at the same resolution, then a
    residual block. The projection starts at zero, so a fresh stage is an I-frame stage."""

    def __init__(self, cin: int, cctx: int, cout: int) -> None:
        super().__init__()
        self.conv = conv(cin, cout, 3, 2)
        self.ctx = zero_conv(cctx, cout, 3, 2)
        self.res = ResBlock(cout)

    def forward(self, f: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.res(self.conv(f) + self.ctx(c))


class ContextualEncoder(nn.Module):
    """x_t and the contexts -> latent y at 1/16 resolution (encoder only).

    The layers mirror the I-frame analysis transform (``IntraCodec.encoder``), with each
    context (full, 1/2, 1/4 resolution) added in the stage that reads that resolution; the
    pre-training starts it from the trained I-frame codec (``pipelines/train.py
    --init-contextual-from-intra``)."""

    def __init__(self, m: int = 64, c2: int = 32, c3: int = 48) -> None:
        super().__init__()
        self.s1 = ContextStage(1, FEAT, c2)  # 1 -> 1/2
        self.s2 = ContextStage(c2, c2, c3)  # 1/2 -> 1/4
        self.s3 = ContextStage(c3, c3, 64)  # 1/4 -> 1/8
        self.d4 = conv(64, m, 3, 2)  # 1/8 -> 1/16

    def forward(self, x, c1, c2, c3):
        return self.d4(self.s3(self.s2(self.s1(x, c1), c2), c3))


class ContextualDecoder(nn.Module):
    """y_hat and the contexts -> reconstructed frame.

    The layers mirror the I-frame synthesis transform (``IntraCodec.decoder``), with each
    context added (through a zero-initialised convolution) where the features reach its
    resolution. There is no shortcut around the latent: the frame is generated from y_hat
    and the contexts together, as in DCVC-DC."""

    def __init__(self, m: int = 64, c2: int = 32, c3: int = 48) -> None:
        super().__init__()
        self.head = conv(m, 64)
        self.u1 = Up(64, 48)  # 1/16 -> 1/8
        self.u2 = Up(48, 32)  # 1/8 -> 1/4
        self.ctx3 = zero_conv(c3, 32)
        self.u3 = Up(32, 16)  # 1/4 -> 1/2
        self.ctx2 = zero_conv(c2, 16)
        self.u4 = Up(16, FEAT)  # 1/2 -> 1
        self.ctx1 = zero_conv(FEAT, FEAT)
        self.res = ResBlock(FEAT)
        self.out = conv(FEAT, 1)

    def forward(self, y_hat, c1, c2, c3):
        f = self.u2(self.u1(self.head(y_hat)))
        f = self.u3(f + self.ctx3(c3))
        f = self.u4(f + self.ctx2(c2))
        return self.out(self.res(f + self.ctx1(c1))) + 0.5


class MotionEncoder(nn.Module):
    def __init__(self, mm: int) -> None:
        super().__init__()
        self.net = nn.Sequential(Down(2, 24), Down(24, 32), Down(32, 48), conv(48, mm, 3, 2))

    def forward(self, flow):
        return self.net(flow)


class MotionDecoder(nn.Module):
    def __init__(self, mm: int) -> None:
        super().__init__()
        self.net = nn.Sequential(conv(mm, 48), Up(48, 32), Up(32, 24), Up(24, 16), Up(16, 16), conv(16, 2))
        nn.init.zeros_(self.net[-1].weight)  # start with zero motion
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, m_hat):
        return self.net(m_hat)


class InterCodec(nn.Module):
    """P-frame codec. ``forward`` for training, ``compress``/``decompress`` for bytes."""

    stride = 64

    def __init__(self, m: int = 64, z: int = 32, hidden: int = 64, mm: int = 32, zm: int = 16, mhidden: int = 32) -> None:
        super().__init__()
        self.m, self.mm = m, mm
        self.motion_estimation = MotionEstimation()
        self.motion_encoder = MotionEncoder(mm)
        self.motion_latent = LatentCodec(mm, zm, mhidden, prior_channels=mm)
        self.motion_decoder = MotionDecoder(mm)
        self.context = ContextMining()
        self.contextual_encoder = ContextualEncoder(m)
        self.contextual_latent = LatentCodec(m, z, hidden, prior_channels=m)
        self.contextual_decoder = ContextualDecoder(m)
        self.feature_adaptor = nn.Sequential(conv(1, FEAT), ResBlock(FEAT))  # reference frame -> feature
        self.enc_scale = nn.Parameter(anchor_log_scales(m))
        self.dec_scale = nn.Parameter(anchor_log_scales(m))
        self.mv_enc_scale = nn.Parameter(anchor_log_scales(mm))
        self.mv_dec_scale = nn.Parameter(anchor_log_scales(mm))

    def reference(self, frame: torch.Tensor, y_hat: torch.Tensor, m_hat: torch.Tensor | None) -> Reference:
        """Reference state for the next P-frame. Its feature is extracted from the reconstructed
        frame alone, after an I-frame and after a P-frame alike, so a P-frame sees the same kind of
        reference wherever it stands in the GoP (a codec trained on short clips holds over 30 frames)."""
        return Reference(frame, self.feature_adaptor(frame - 0.5), y_hat, m_hat)

    def reference_from_intra(self, frame: torch.Tensor, y_hat: torch.Tensor) -> Reference:
        """Reference state after an I-frame."""
        return self.reference(frame, y_hat, None)

    def _contexts(self, m_hat, ref: Reference, q):
        """Decoded motion latent -> the multi-scale temporal contexts (decoder side; the encoder
        uses the same ones)."""
        return self.context(ref.feature, self.motion_decoder(m_hat * interp_log(self.mv_dec_scale, q)))

    def _reconstruct(self, y_hat, contexts, q):
        """Decoded contextual latent and the contexts -> the reconstructed frame."""
        return self.contextual_decoder(y_hat * interp_log(self.dec_scale, q), *contexts)

    def forward(self, x: torch.Tensor, ref: Reference, q: torch.Tensor,
                noise: bool = True) -> tuple[torch.Tensor, Reference, dict]:
        """Training pass on [B,1,H,W]; returns (x_hat, next reference, likelihoods).

        ``noise=False`` gives the likelihoods of the symbols as they will be coded (rounded,
        straight-through) instead of the pre-training's noisy stand-in."""
        anchor = torch.div(q, 21, rounding_mode="floor")
        flow = self.motion_estimation(x, ref.frame)
        m = self.motion_encoder(flow) / interp_log(self.mv_enc_scale, q)
        m_hat, m_lik = self.motion_latent(m, anchor, ref.m_hat, noise)
        ctx = self._contexts(m_hat, ref, q)
        y = self.contextual_encoder(x - 0.5, *ctx) / interp_log(self.enc_scale, q)
        y_hat, y_lik = self.contextual_latent(y, anchor, ref.y_hat, noise)
        x_hat = self._reconstruct(y_hat, ctx, q)
        lik = {"m": m_lik["y"], "zm": m_lik["z"], "y": y_lik["y"], "z": y_lik["z"]}
        return x_hat, self.reference(x_hat, y_hat, m_hat), lik

    @torch.no_grad()
    def compress(self, x: torch.Tensor, ref: Reference, q: int, coder: SymbolCoder) -> Reference:
        """Encode one P-frame [1,1,H,W]; returns the decoder's next reference."""
        qt = torch.tensor([q], device=x.device)
        flow = self.motion_estimation(x, ref.frame)
        m = self.motion_encoder(flow) / interp_log(self.mv_enc_scale, qt)
        m_hat = self.motion_latent.compress(m, q, coder, ref.m_hat).to(x.device)
        ctx = self._contexts(m_hat, ref, qt)
        y = self.contextual_encoder(x - 0.5, *ctx) / interp_log(self.enc_scale, qt)
        y_hat = self.contextual_latent.compress(y, q, coder, ref.y_hat).to(x.device)
        return self.reference(self._reconstruct(y_hat, ctx, qt).clamp(0, 1), y_hat, m_hat)

    @torch.no_grad()
    def decompress(self, coder: SymbolCoder, ref: Reference, q: int) -> Reference:
        """Decode one P-frame given the reference; returns the next reference."""
        h, w = ref.frame.shape[2] // 16, ref.frame.shape[3] // 16
        device = ref.frame.device
        qt = torch.tensor([q], device=device)
        m_hat = self.motion_latent.decompress(coder, (h, w), q, ref.m_hat).to(device)
        y_hat = self.contextual_latent.decompress(coder, (h, w), q, ref.y_hat).to(device)
        return self.reference(self._reconstruct(y_hat, self._contexts(m_hat, ref, qt), qt).clamp(0, 1), y_hat, m_hat)

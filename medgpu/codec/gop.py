"""GoP coding: one I-frame then P-frames, all symbols of a GoP in one range-coded packet."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from medgpu.codec.entropy import SymbolCoder, SymbolRecorder
from medgpu.codec.inter import InterCodec
from medgpu.codec.intra import IntraCodec
from medgpu.codec.quality import lagrangian_cost

P_FRAME, I_FRAME = 0, 1


def padded_size(h: int, w: int, stride: int) -> tuple[int, int]:
    """Smallest multiple of ``stride`` that holds ``h`` x ``w``."""
    return -(-h // stride) * stride, -(-w // stride) * stride


def pad_frames(frames: torch.Tensor, stride: int) -> torch.Tensor:
    """Replicate-pad [T,1,H,W] frames on the bottom/right to a multiple of ``stride``."""
    h, w = frames.shape[-2:]
    ph, pw = padded_size(h, w, stride)
    if (ph, pw) == (h, w):
        return frames
    # replicate padding needs pad < size for 'reflect' only; 'replicate' works for any size
    return F.pad(frames, (0, pw - w, 0, ph - h), mode="replicate")


@contextlib.contextmanager
def float32_coding() -> Iterator[None]:
    """Full float32 while coding, whatever the caller has switched on: no autocast and no TF32
    in cuDNN convolutions (its other settings kept). On a GPU, TF32 moved the decoder's
    reconstruction up to 2e-4 away from the CPU's (full float32: 1.3e-6) and made the stream
    differ from a CPU encode (measured by pipelines/bench_cuda.py, docs/cuda.md)."""
    cudnn = torch.backends.cudnn
    with cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                     allow_tf32=False), torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
        yield


@dataclass
class IntraTrials:
    """I-frame encodes of one GoP's frames at one quality, kept to be reused by a later encode of
    the same frames (the I-frame trials do not depend on the P-frame encoder, so the stock and the
    adapted encoder of an adaptive encode code the same ones). Frame index -> (reconstruction,
    latent, recorded symbols)."""

    quality: int
    frames: dict[int, tuple[torch.Tensor, torch.Tensor, SymbolRecorder]] = field(default_factory=dict)


class GopCoder:
    """Encodes and decodes GoPs with a pair of intra/inter networks."""

    def __init__(self, intra: IntraCodec, inter: InterCodec) -> None:
        self.intra = intra
        self.inter = inter
        self.stride = max(intra.stride, inter.stride)
        self._models = None

    def _coder(self, data: bytes | None = None) -> SymbolCoder:
        g = self.intra.latent.gaussian
        if self._models is None:
            self._models = g.models()
        return SymbolCoder(self._models, g.half_width.cpu().numpy(), data)

    def _device(self) -> torch.device:
        return next(self.intra.parameters()).device

    def _intra_trial(self, i: int, cur: torch.Tensor, quality: int,
                     trials: IntraTrials | None) -> tuple[torch.Tensor, torch.Tensor, SymbolRecorder]:
        """Frame ``i`` coded as an I-frame into a recorder (from ``trials`` when it is there)."""
        if trials is not None and i in trials.frames:
            return trials.frames[i]
        rec = SymbolRecorder(self._coder())
        xi, yi = self.intra.compress(cur, quality, rec)
        if trials is not None:
            trials.frames[i] = (xi, yi, rec)
        return xi, yi, rec

    @torch.no_grad()
    @float32_coding()
    def encode(self, frames: torch.Tensor, quality: int, on_frame: Callable[[int], None] | None = None,
               inter: InterCodec | None = None, mode: str = "auto",
               intra_trials: IntraTrials | None = None) -> tuple[bytes, torch.Tensor]:
        """Encode [T,1,H,W] frames in [0,1]; returns (payload, decoder-side reconstruction).

        Frame 0 is an I-frame. Each later frame carries a coded mode flag: with
        ``mode="auto"`` the encoder codes it both as a P-frame and as an I-frame and keeps
        the one with the lower rate-distortion cost (real bytes, lambda of ``quality``);
        ``mode="p"`` forces P-frames (the paper's IPPP setting). ``inter`` may be an
        encoder-adapted copy of the P-frame codec: its decoder-side modules are the stock
        ones, so the stream decodes with the stock networks. ``intra_trials`` (at ``quality``)
        collects the I-frame encodes of these frames, or supplies those of an earlier encode of
        the same frames: the stream is the same, the work is done once.
        """
        if mode not in ("auto", "p"):
            raise ValueError("mode must be 'auto' or 'p'")
        if intra_trials is not None and intra_trials.quality != quality:
            raise ValueError(f"I-frame trials were coded at quality {intra_trials.quality}, not {quality}")
        inter = inter or self.inter
        device = self._device()
        t, _, h, w = frames.shape
        x = pad_frames(frames.float().to(device), self.stride)
        coder = self._coder()
        recon = torch.empty(t, 1, h, w)
        if intra_trials is None:
            x0, y0 = self.intra.compress(x[0:1], quality, coder)
        else:  # recorded once, replayed into each encode of these frames
            x0, y0, rec0 = self._intra_trial(0, x[0:1], quality, intra_trials)
            rec0.replay(coder)
        ref = inter.reference_from_intra(x0, y0)
        recon[0] = x0[0, :, :h, :w].cpu()
        if on_frame:
            on_frame(0)
        for i in range(1, t):
            cur = x[i : i + 1]
            p_rec = SymbolRecorder(self._coder())
            p_ref = inter.compress(cur, ref, quality, p_rec)
            choice, chosen, rec = P_FRAME, p_ref, p_rec
            if mode == "auto":
                xi, yi, i_rec = self._intra_trial(i, cur, quality, intra_trials)
                if self._cost(i_rec, xi, cur, h, w, quality) < self._cost(p_rec, p_ref.frame, cur, h, w, quality):
                    choice, chosen, rec = I_FRAME, inter.reference_from_intra(xi, yi), i_rec
            coder.encode_flag(choice)
            rec.replay(coder)
            ref = chosen
            recon[i] = ref.frame[0, :, :h, :w].cpu()
            if on_frame:
                on_frame(i)
        return coder.to_bytes(), recon

    @staticmethod
    def _cost(rec: SymbolRecorder, frame: torch.Tensor, target: torch.Tensor, h: int, w: int, quality: int) -> float:
        """lambda * MSE + bits per pixel of a trial encode (on the unpadded frame)."""
        mse = float(((frame[..., :h, :w] - target[..., :h, :w]) ** 2).mean())
        return lagrangian_cost(quality, mse, rec.num_bytes(), h * w)

    @torch.no_grad()
    @float32_coding()
    def decode(self, payload: bytes, num_frames: int, height: int, width: int, quality: int,
               on_frame: Callable[[int], None] | None = None) -> torch.Tensor:
        """Decode a GoP payload to [T,1,H,W] frames in [0,1]."""
        if len(payload) % 4:
            raise ValueError("GoP payload length is not a multiple of 4 bytes")
        device = self._device()
        ph, pw = padded_size(height, width, self.stride)
        coder = self._coder(payload)
        out = torch.empty(num_frames, 1, height, width)
        x0, y0 = self.intra.decompress(coder, (ph, pw), quality, device)
        ref = self.inter.reference_from_intra(x0, y0)
        out[0] = x0[0, :, :height, :width].cpu()
        if on_frame:
            on_frame(0)
        for i in range(1, num_frames):
            if coder.decode_flag() == I_FRAME:
                xi, yi = self.intra.decompress(coder, (ph, pw), quality, device)
                ref = self.inter.reference_from_intra(xi, yi)
            else:
                ref = self.inter.decompress(coder, ref, quality)
            out[i] = ref.frame[0, :, :height, :width].cpu()
            if on_frame:
                on_frame(i)
        return out



"""Codecs built by name, with the weights that ship inside the package."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from typing import Callable

import torch

from medgpu.codec.gop import GopCoder
from medgpu.codec.inter import InterCodec
from medgpu.codec.intra import IntraCodec
from medgpu.codec.quality import NUM_QUALITIES

DEFAULT_CODEC = "dcvc-s"


@dataclass(frozen=True)
class CodecConfig:
    """Architecture of a registered codec and the file its weights ship in."""

    intra: dict = field(default_factory=dict)
    inter: dict = field(default_factory=dict)
    weights_file: str = ""


def _configs() -> dict[str, CodecConfig]:
    return {"dcvc-s": CodecConfig(intra={}, inter={}, weights_file="dcvc-s.pt")}


def available_codecs() -> list[str]:
    """Names accepted by :func:`load_codec`."""
    return sorted(_configs())


def state_hash(state: dict[str, torch.Tensor]) -> bytes:
    """SHA-256 over parameter names, dtypes, shapes and bytes (stable across torch versions)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.digest()


def weights_path(name: str = DEFAULT_CODEC):
    """Path of the shipped weights of codec ``name``."""
    return resources.files("medgpu.weights").joinpath(_configs()[name].weights_file)


class VolumeCodec:
    """A named intra/inter codec pair with its weights hash; codes GoPs to bytes."""

    num_qualities = NUM_QUALITIES

    def __init__(self, name: str, intra: IntraCodec, inter: InterCodec, weights_hash: bytes) -> None:
        self.codec_id = name
        self.intra = intra.eval()
        self.inter = inter.eval()
        self.weights_hash = weights_hash
        self.gop = GopCoder(self.intra, self.inter)
        self.stride = self.gop.stride

    @property
    def device(self) -> torch.device:
        return next(self.intra.parameters()).device

    def encode_gop(self, frames: torch.Tensor, quality: int, on_frame: Callable[[int], None] | None = None,
                   inter: InterCodec | None = None, mode: str = "auto") -> bytes:
        """Encode [T,1,H,W] frames in [0,1] at ``quality`` (0..63) to a GoP payload.

        ``mode="auto"`` picks I or P per frame by rate-distortion cost; ``"p"`` forces P-frames.
        """
        return self.gop.encode(frames, quality, on_frame, inter, mode)[0]

    def encode_gop_with_recon(self, frames: torch.Tensor, quality: int, on_frame=None, inter=None, mode="auto",
                              intra_trials=None):
        """As :meth:`encode_gop`, also returning the decoder's reconstruction; ``intra_trials``
        as in :meth:`GopCoder.encode`."""
        return self.gop.encode(frames, quality, on_frame, inter, mode, intra_trials)

    def decode_gop(self, payload: bytes, num_frames: int, height: int, width: int, quality: int,
                   on_frame: Callable[[int], None] | None = None) -> torch.Tensor:
        """Decode a GoP payload to [T,1,H,W] frames in [0,1]."""
        return self.gop.decode(payload, num_frames, height, width, quality, on_frame)


def build_networks(name: str = DEFAULT_CODEC) -> tuple[IntraCodec, InterCodec]:
    """Fresh (untrained) networks of codec ``name``."""
    cfg = _configs()[name]
    return IntraCodec(**cfg.intra), InterCodec(**cfg.inter)


def load_state(intra: IntraCodec, inter: InterCodec, state: dict[str, torch.Tensor]) -> None:
    """Load a combined state dict (keys prefixed ``intra.`` / ``inter.``)."""
    for prefix, net in (("intra.", intra), ("inter.", inter)):
        sub = {k[len(prefix):]: v.float() if v.is_floating_point() else v for k, v in state.items() if k.startswith(prefix)}
        net.load_state_dict(sub)


def export_state(intra: IntraCodec, inter: InterCodec) -> dict[str, torch.Tensor]:
    """Combined state dict for shipping: float tensors in fp16, integer tables as they are."""
    out = {}
    for prefix, net in (("intra.", intra), ("inter.", inter)):
        for k, v in net.state_dict().items():
            out[prefix + k] = v.half() if v.is_floating_point() else v
    return out


def load_codec(name: str | None = None, device: str | torch.device = "cpu", pretrained: bool = True,
               weights: str | None = None) -> VolumeCodec:
    """Build codec ``name`` (default ``dcvc-s``) with its shipped weights on ``device``.

    ``pretrained=False`` gives seeded random weights (fast plumbing tests only);
    ``weights`` overrides the weights file path.
    """
    name = name or DEFAULT_CODEC
    if name not in _configs():
        raise ValueError(f"unknown codec {name!r}; available: {', '.join(available_codecs())}")
    if pretrained or weights:
        with (open(weights, "rb") if weights else weights_path(name).open("rb")) as f:
            state = torch.load(f, map_location="cpu", weights_only=True)
        intra, inter = build_networks(name)
        load_state(intra, inter, state)
    else:
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(0)
        intra, inter = build_networks(name)
        torch.random.set_rng_state(gen_state)
    state = export_state(intra, inter)
    load_state(intra, inter, state)  # snap to the shipped precision so hash and weights agree
    return VolumeCodec(name, intra.to(device), inter.to(device), state_hash(state))

"""Neural video codec for medical volumes (slices are frames).

Contract used by the rest of the package::

    from medgpu.codec import load_codec
    codec = load_codec()                     # shipped weights, CPU
    codec = load_codec(pretrained=False)     # random (seeded) weights: fast tests only
    codec.codec_id        # str, e.g. "dcvc-s"
    codec.weights_hash    # bytes (32): SHA-256 of the weights; stored in every stream
    codec.num_qualities   # 64: quality indices 0..63, higher = more bits, higher PSNR
    payload = codec.encode_gop(frames, quality)      # frames: torch.float32 [T,1,H,W] in [0,1]
    frames = codec.decode_gop(payload, T, H, W, quality)  # -> torch.float32 [T,1,H,W] in [0,1]

Frames of any size (>=1 pixel) are accepted; padding to the network stride and the
crop back happen inside the codec. Frame 0 of a GoP is intra coded, the rest are
P-frames coded from the previous reconstruction.
"""
from __future__ import annotations

from medgpu.codec.registry import available_codecs, load_codec

__all__ = ["available_codecs", "load_codec"]

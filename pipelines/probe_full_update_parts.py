#!/usr/bin/env python
"""Which encoder-side module carries the full update's gain? (diagnostic for the adapters' gap)

The full update (every encoder-side parameter) gains several times what the adapters gain
(docs/cuda.md). This trains the full update restricted to one encoder-side module at a time
(``--parts``: "all" or PARTS names), or an adapter placement (VARIANTS), on the first GoP of val
volumes (centre crop, forced P-frames), and prints the real RD-cost change against the stock
encoder after chosen epochs.

    python pipelines/probe_full_update_parts.py [--volumes a.nii.gz,b.dcm] [--epochs 4,8,16] [--size 128]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_adapt import VAL, first_gop, rd_change_by_epoch  # noqa: E402

from medgpu.adapt import AdaptConfig, adapt_encoder, update_gop  # noqa: E402
from medgpu.adapt.adapters import ADAPTER_SEED, Adapter, SerialAdapted, _conv_of, _parallel  # noqa: E402
from medgpu.codec import load_codec  # noqa: E402

PARTS = {
    "motion_estimation": lambda m: m.motion_estimation,
    "motion_encoder": lambda m: m.motion_encoder,
    "motion_hyper_encoder": lambda m: m.motion_latent.hyper_encoder,
    "contextual_encoder": lambda m: m.contextual_encoder,
    "contextual_hyper_encoder": lambda m: m.contextual_latent.hyper_encoder,
}
"""Encoder-side modules of the P-frame codec (those the full update trains)."""


def restricted_full_update(inter, part: str):
    """A full-scope copy of ``inter`` in which only ``part`` ("all": every encoder-side module) trains."""
    model = adapt_encoder(inter, scope="full")
    if part != "all":
        keep = {id(p) for p in PARTS[part](model).parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in keep)
    return model


def adapters_with_context(inter):
    """The method's adapters plus a parallel adapter beside each contextual-encoder stage's
    projection of the temporal context (which the stock placement cannot reach: the stage's
    parallel adapter sees only the features)."""
    model = adapt_encoder(inter)
    for name in ("s1", "s2", "s3"):
        stage = getattr(model.contextual_encoder, name).block
        stage.ctx = _parallel(stage.ctx, 8, 3)
    return model


def serial_contextual_adapters(inter):
    """The method's adapters, but those of the contextual encoder's stages serial (eq. 3, on
    the stage's output, which carries the temporal context) instead of parallel (eq. 2)."""
    model = adapt_encoder(inter)
    ce = model.contextual_encoder
    for name in ("s1", "s2", "s3", "d4"):
        block = getattr(ce, name).block
        c = _conv_of(block).out_channels
        setattr(ce, name, SerialAdapted(block, Adapter(c, c, 8, 3)))
    return model


class LowRankConv(torch.nn.Module):
    """A frozen convolution whose weight gets a trainable rank-``r`` change B @ A (B starts at
    zero, so the layer starts as it was): a weight-space adapter, not the paper's form."""

    def __init__(self, conv: torch.nn.Conv2d, rank: int) -> None:
        super().__init__()
        self.conv = conv
        cout, cin, kh, kw = conv.weight.shape
        fan_in = cin * kh * kw
        self.a = torch.nn.Parameter(torch.randn(rank, fan_in) / fan_in**0.5)
        self.b = torch.nn.Parameter(torch.zeros(cout, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        w = c.weight + (self.b @ self.a).view_as(c.weight)
        return torch.nn.functional.conv2d(x, w, c.bias, c.stride, c.padding, c.dilation, c.groups)


def low_rank_encoders(inter, rank: int = 4):
    """Every convolution of the contextual and the motion encoder with a rank-``rank`` weight change."""
    model = adapt_encoder(inter, scope="full")
    for p in model.parameters():
        p.requires_grad_(False)
    for enc in (model.contextual_encoder, model.motion_encoder):
        for parent in list(enc.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.Conv2d):
                    setattr(parent, name, LowRankConv(child, rank))
    return model


VARIANTS = {"adapters": lambda inter: adapt_encoder(inter), "adapters_ctx": adapters_with_context,
            "adapters_serial": serial_contextual_adapters, "lowrank4": low_rank_encoders}
"""Adapter placements (trained at the adapters' learning rate); any other name is a PARTS entry or
"all" (trained at the full update's)."""


def build(inter, name: str):
    """(model to train, scope whose learning rate applies). The random layers that a variant adds
    come from ``ADAPTER_SEED``, as ``adapt_encoder``'s do, and the model is moved to the codec's device."""
    if name not in VARIANTS:
        return restricted_full_update(inter, name), "full"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ADAPTER_SEED)
        return VARIANTS[name](inter).to(next(inter.parameters()).device), "adapters"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--val", default=str(VAL))
    ap.add_argument("--volumes", default="us_echo_octave_10f.dcm,mr_breast_radiomics_breast1.nii.gz")
    ap.add_argument("--parts", default="all," + ",".join(PARTS))
    ap.add_argument("--epochs", default="4,8,16")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--quality", type=int, default=42)
    ap.add_argument("--lr", type=float, default=None, help="Adam step (default: that of the variant's scope)")
    args = ap.parse_args()
    codec, q = load_codec(), args.quality
    epochs = [int(e) for e in args.epochs.split(",")]
    for name in args.volumes.split(","):
        x = first_gop(Path(args.val) / name, args.size, 30)[0]
        for part in args.parts.split(","):
            model, scope = build(codec.inter, part)
            n = sum(p.numel() for p in model.parameters() if p.requires_grad)
            curve, code = rd_change_by_epoch(codec, x, q, epochs)
            t = time.time()
            with torch.enable_grad():
                update_gop(codec.intra, codec.inter, x, q, AdaptConfig(steps=max(epochs), scope=scope, lr=args.lr),
                           adapted=model, on_epoch=code)
            print(json.dumps({"volume": name, "part": part, "lr": args.lr, "trainable": n, "rd_cost_change_percent_by_epoch": curve,
                              "seconds": round(time.time() - t, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""P-frame against I-frame coding on 16 fixed training clips (the figures of docs/codec.md,
"History"): for each anchor quality, the estimated RD cost (lambda x MSE + bits per pixel from the
likelihoods of the rounded symbols, as coded) of coding frames 1..T-1 of each clip as P-frames
(each from the reconstruction before it, after an I-frame) against coding them as I-frames.

    python pipelines/p_vs_i_clips.py                      # shipped weights
    python pipelines/p_vs_i_clips.py --ckpt runs/train/codec.ckpt --frames 4

The clips (16 x 6 frames, 128x128, seed 123 of ``train_data.SequenceSampler``) are drawn once from
``../shared/data/train`` and cached in ``runs/p_vs_i_clips.npy``, so checkpoints compare on the same data.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from train import bits  # noqa: E402
from train_data import SequenceSampler, load_videos, load_volumes  # noqa: E402

from medgpu.codec.quality import ANCHOR_QUALITIES, LAMBDAS  # noqa: E402
from medgpu.codec.registry import build_networks, load_codec, load_state  # noqa: E402


def bits_per_pixel(likelihoods: dict, pixels: int) -> torch.Tensor:
    """Per-sample estimated bits per pixel of all latents."""
    return sum(bits(likelihoods).values()) / pixels


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", help="training checkpoint (pipelines/train.py); default: the shipped weights")
    ap.add_argument("--frames", type=int, default=4, help="clip length (1 I-frame + P-frames), at most 6")
    ap.add_argument("--data", default=str(HERE.parents[1] / "shared" / "data" / "train"))
    ap.add_argument("--cache", default=str(HERE.parent / "runs" / "p_vs_i_clips.npy"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.ckpt:
        intra, inter = build_networks()
        load_state(intra, inter, torch.load(args.ckpt, weights_only=False)["state"])
    else:
        codec = load_codec()
        intra, inter = codec.intra, codec.inter
    intra.eval(), inter.eval()
    cache = Path(args.cache)
    if cache.exists():
        x = torch.from_numpy(np.load(cache))
    else:
        sampler = SequenceSampler(load_volumes(args.data), load_videos(args.data), seed=123)
        x = torch.from_numpy(sampler.batch(16, 6, 128))
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, x.numpy())
    x = x[:, : args.frames]
    pixels = x.shape[-1] * x.shape[-2]
    torch.manual_seed(0)
    with torch.no_grad():
        for a, q0 in enumerate(ANCHOR_QUALITIES):
            q, lam = torch.full((x.shape[0],), q0), LAMBDAS[a]
            first = intra(x[:, 0], q)
            ref = inter.reference_from_intra(first["x_hat"], first["y_hat"])
            p_cost, i_cost = [], []
            for t in range(1, x.shape[1]):
                x_hat, ref, lik = inter(x[:, t], ref, q, noise=False)
                p_cost.append(float((lam * ((x_hat - x[:, t]) ** 2).flatten(1).mean(1) + bits_per_pixel(lik, pixels)).mean()))
                y_hat, i_lik = intra.latent(intra.analysis(x[:, t], q), torch.div(q, 21, rounding_mode="floor"), noise=False)
                i_hat = intra.synthesis(y_hat, q)
                i_cost.append(float((lam * ((i_hat - x[:, t]) ** 2).flatten(1).mean(1) + bits_per_pixel(i_lik, pixels)).mean()))
            p, i = np.mean(p_cost), np.mean(i_cost)
            print(f"q{q0:2d}: P-frame RD cost {p:.4f}, I-frame {i:.4f} ({100 * (p / i - 1):+.1f} %); per frame P/I "
                  + " ".join(f"{a_ / b_:.2f}" for a_, b_ in zip(p_cost, i_cost)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

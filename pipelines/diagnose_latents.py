#!/usr/bin/env python
"""Health check of the codec's latents: are they used, and can their entropy models still learn?

For two consecutive slices of a volume (centre crop) and a few qualities, codes slice 0 as an
I-frame and slice 1 as a P-frame (training-mode pass of the networks, no stream) and reports,
for the I-frame latent, the P-frame motion latent and the P-frame contextual latent:

* ``active``: latent channels with more than 1 % of their elements non-zero after quantisation
  (a channel that is always zero carries nothing);
* ``below0``: share of scale indices the entropy model asks for below 0, i.e. clamped to the
  smallest scale (before ``medgpu.codec.quant.bounded`` such elements got no gradient at all);
* ``bpp``: estimated bits per pixel of the latent (likelihoods, not a stream);
* the PSNR of the I- and P-frame reconstructions.

    python pipelines/diagnose_latents.py ../shared/data/val/ct_chest_radiomics_lung1.nii.gz
    python pipelines/diagnose_latents.py VOLUME --weights runs/some.pt --qualities 0,42,63

A healthy P-frame codec has active contextual channels whose number grows with the quality.
"""
from __future__ import annotations

import argparse

import torch


def centre_pair(path: str, size: int) -> torch.Tensor:
    """Frames n/2-1 and n/2 of the volume's first video (the frames `medgpu compress` codes),
    centre-cropped to a multiple of 64, in [0, 1], as [2,1,h,w]."""
    from medgpu.framing import plan_for_volume, to_videos
    from medgpu.intensity import IntensityMapping
    from medgpu.io import load_volume

    volume = load_volume(path)
    frames = to_videos(volume.array, plan_for_volume(volume))[0]
    t = max(0, frames.shape[0] // 2 - 1)
    h = min(size, frames.shape[1] // 64 * 64)
    w = min(size, frames.shape[2] // 64 * 64)
    if h == 0 or w == 0:
        raise SystemExit(f"{path}: slices smaller than 64 pixels")
    r0, c0 = (frames.shape[1] - h) // 2, (frames.shape[2] - w) // 2
    pair = frames[t : t + 2, r0 : r0 + h, c0 : c0 + w]
    return torch.from_numpy(IntensityMapping.fit(volume.array).forward(pair))[:, None]


def latent_stats(seen: dict, pixels: int) -> dict:
    """Active channels, share of scale indices below 0 and estimated bpp of one latent, from
    what the hooks in :func:`main` saw: ``y``, its likelihoods ``lik`` and, per checkerboard
    half, the head's (mean, scale index as asked for before clamping)."""
    from medgpu.codec.latent import checkerboard

    y = seen["y"]
    mask = checkerboard(y.shape[2], y.shape[3], y.device)
    mean = torch.where(mask, seen["anchor"][0], seen["nonanchor"][0])
    raw = torch.where(mask, seen["anchor"][1], seen["nonanchor"][1])
    nonzero = (torch.round(y - mean) != 0).float().mean((0, 2, 3))
    return {"active": int((nonzero > 0.01).sum()), "channels": int(y.shape[1]),
            "below0": float((torch.round(raw) < 0).float().mean()),
            "bpp": float((-torch.log2(seen["lik"])).sum()) / pixels}


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of two [0, 1] tensors (``medgpu.metrics.psnr`` with peak 1)."""
    from medgpu.metrics import psnr

    return psnr(b.numpy(), a.numpy(), peak=1.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("volume")
    ap.add_argument("--weights", default=None, help="exported weights (.pt) instead of the shipped ones")
    ap.add_argument("--qualities", default="0,21,42,63")
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()

    from medgpu.codec.intnet import ACT_SCALE
    from medgpu.codec.registry import load_codec

    codec = load_codec(weights=args.weights)
    x = centre_pair(args.volume, args.size)
    pixels = x[0].numel()
    parts = {"I y": codec.intra.latent, "P motion": codec.inter.motion_latent, "P contextual": codec.inter.contextual_latent}
    seen: dict[str, dict] = {name: {} for name in parts}

    def hook_head(name, which):
        def hook(head, inputs, output):  # the mean the head gives
            seen[name][which] = (output[0], seen[name].pop("raw"))
        return hook

    def hook_raw(name):
        def hook(net, inputs, output):  # runs first, inside the head: the scale index before the clamp
            channels = output.shape[1] // 2
            seen[name]["raw"] = output[:, channels:] / ACT_SCALE
        return hook

    def hook_latent(name):
        def hook(module, inputs, output):
            seen[name]["y"], seen[name]["lik"] = inputs[0], output[1]["y"]
        return hook

    for name, lat in parts.items():
        for which in ("anchor", "nonanchor"):
            head = getattr(lat, f"{which}_head")
            head.net.register_forward_hook(hook_raw(name))
            head.register_forward_hook(hook_head(name, which))
        lat.register_forward_hook(hook_latent(name))

    print(f"{args.volume}: slices of {tuple(x.shape[2:])}; weights {args.weights or 'shipped'}")
    print(f"{'q':>3} {'latent':<13} {'active':>9} {'below0':>7} {'bpp':>7}   PSNR")
    with torch.no_grad():
        for q in [int(v) for v in args.qualities.split(",")]:
            qt = torch.tensor([q])
            out = codec.intra(x[0:1], qt)
            i_hat = out["x_hat"].clamp(0, 1)
            p_hat, _, _ = codec.inter(x[1:2], codec.inter.reference_from_intra(i_hat, out["y_hat"]), qt)
            psnr = {"I y": psnr_db(i_hat, x[0:1]), "P contextual": psnr_db(p_hat.clamp(0, 1), x[1:2])}
            for name in parts:
                stats = latent_stats(seen[name], pixels)
                p = f"{psnr[name]:.2f} dB" if name in psnr else ""
                print(f"{q:>3} {name:<13} {stats['active']:>4}/{stats['channels']:<4} {stats['below0']:>7.2f} "
                      f"{stats['bpp']:>7.4f}   {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

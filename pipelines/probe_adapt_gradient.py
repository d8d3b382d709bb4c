#!/usr/bin/env python
"""Is the update's gradient a descent direction at the shipped optimum? (docs/adaptation.md, "Why
the gains are small".)

On the first GoP of a val volume (centre crop, forced P-frames), takes the gradient of the update's
loss (``medgpu.adapt.online._chain_loss``, per P-frame) with respect to the encoder-side parameters
of ``SCOPE``, and prints the loss with rounded symbols (what the coder codes) after steps of
growing length along the normalised negative gradient, and along three random directions.

    python pipelines/probe_adapt_gradient.py ct_chest_radiomics_lung1.nii.gz 42 adapters [rounded|noisy] [FRAMES]

Adapters start at zero, where their inner layers get no gradient, so their zero-initialised last
layers get a 1e-4 random start first (the loss moves by less than 1e-5).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_adapt import VAL, first_gop  # noqa: E402

from medgpu.adapt import adapt_encoder, adapter_parameters  # noqa: E402
from medgpu.adapt.online import _chain_loss, decoded_i_frame  # noqa: E402
from medgpu.codec import load_codec  # noqa: E402
from medgpu.codec.gop import pad_frames  # noqa: E402

STEPS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    name, q, scope = argv[0], int(argv[1]), argv[2]
    noise = len(argv) > 3 and argv[3] == "noisy"
    torch.manual_seed(0)
    codec = load_codec()
    x = pad_frames(first_gop(VAL / name, 128, 30)[0], max(codec.intra.stride, codec.inter.stride))
    x = x[: int(argv[4])] if len(argv) > 4 else x
    x0, y0 = decoded_i_frame(codec.intra, x[0:1], q)
    model = adapt_encoder(codec.inter, scope=scope)
    params = adapter_parameters(model)
    if scope == "adapters":
        with torch.no_grad():
            for n, p in model.named_parameters():
                if p.requires_grad and "zero.weight" in n:
                    p.normal_(0, 1e-4)

    def loss(nz: bool = False) -> torch.Tensor:
        return _chain_loss(model, x, model.reference_from_intra(x0, y0), q, nz) / (x.shape[0] - 1)

    loss(noise).backward()
    grads = [p.grad.clone() for p in params]
    norm = torch.sqrt(sum((v ** 2).sum() for v in grads))
    base = [p.detach().clone() for p in params]

    def along(direction: list[torch.Tensor], dnorm: torch.Tensor, sign: float) -> list[float]:
        out = []
        for eps in STEPS:
            for p, b, d in zip(params, base, direction):
                p.copy_(b + sign * eps * d / dnorm)
            out.append(round(float(loss()), 5))
        return out

    with torch.no_grad():
        print(f"{name} q{q} {scope} ({'noisy' if noise else 'rounded'} gradient): loss {float(loss()):.5f}, "
              f"gradient norm {float(norm):.4g}; steps {STEPS}")
        print("  along -gradient:", along(grads, norm, -1.0))
        for _ in range(3):
            d = [torch.randn_like(p) for p in params]
            print("  random direction:", along(d, torch.sqrt(sum((v ** 2).sum() for v in d)), 1.0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

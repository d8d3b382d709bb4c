#!/usr/bin/env python
"""Why do the adapters lose after one update step? Adam's first step against fixed-length steps
along the gradient (docs/adaptation.md, "The first update steps").

Adam's first step moves every parameter that has a gradient by exactly the learning rate. At the
start only the adapters' zero-initialised last layers have one (3,546 parameters), so the step has
an L2 length of 1e-3 * sqrt(3546) = 0.06 whatever the gradient says. This probe compares, on the
first GoP of each val volume (centre crop, one patch-GoP, forced P-frames), the real RD-cost change
against the stock encoder after 1, 2 and 4 steps of:

  adam       the product's update (Adam, lr 1e-3)
  ngd<r>     steps of L2 length r along the negative gradient of the same loss

    python pipelines/probe_first_steps.py [--size 128] [--q 42] [--steps 1,2,4] [--lengths 1e-3,3e-3]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_adapt import DEFAULT_VOLUMES, VAL, first_gop, rd_change_by_epoch  # noqa: E402

from medgpu.adapt import adapt_encoder, adapter_parameters  # noqa: E402
from medgpu.adapt.config import LEARNING_RATES  # noqa: E402
from medgpu.adapt.online import decoded_i_frame, update_step  # noqa: E402
from medgpu.codec import load_codec  # noqa: E402
from medgpu.codec.gop import pad_frames  # noqa: E402


def normalised_step(params: list[torch.Tensor], length: float) -> None:
    """Move ``params`` by ``length`` (L2, all together) along their negative gradient."""
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    if float(norm) == 0.0:
        return
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p -= length * p.grad / norm


class NormalisedStep(torch.optim.Optimizer):
    """Steps of L2 length ``length`` along the negative gradient (:func:`normalised_step`)."""

    def __init__(self, params: list[torch.Tensor], length: float) -> None:
        super().__init__(params, {"length": length})

    def step(self, closure=None) -> None:
        for group in self.param_groups:
            normalised_step(group["params"], group["length"])


def run(codec, x: torch.Tensor, q: int, variant: str, steps: list[int]) -> dict[int, float]:
    """Real RD-cost change (%) after each count in ``steps`` of one variant's updates of the whole
    GoP ``x`` (one patch-GoP: the crop must fit one patch)."""
    curve, on_step = rd_change_by_epoch(codec, x, q, steps)
    model = adapt_encoder(codec.inter)
    params = adapter_parameters(model)
    opt = (torch.optim.Adam(params, lr=LEARNING_RATES["adapters"]) if variant == "adam"
           else NormalisedStep(params, float(variant[3:])))
    xp = pad_frames(x, codec.gop.stride)
    x0, y0 = decoded_i_frame(codec.intra, xp[0:1], q)
    for k in range(1, max(steps) + 1):
        with torch.enable_grad():
            update_step(model, opt, xp, model.reference_from_intra(x0, y0), q, valid=x.shape[-2:])
        on_step(k, model)
    return curve


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--volumes", default=",".join(DEFAULT_VOLUMES))
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--q", type=int, default=42)
    ap.add_argument("--steps", default="1,2,4")
    ap.add_argument("--lengths", default="1e-3,3e-3")
    args = ap.parse_args(argv)
    codec = load_codec()
    steps = [int(s) for s in args.steps.split(",")]
    variants = ["adam"] + [f"ngd{r}" for r in args.lengths.split(",")]
    for name in args.volumes.split(","):
        x = first_gop(VAL / name, args.size, 30)[0]
        for variant in variants:
            curve = run(codec, x, args.q, variant, steps)
            print(json.dumps({"volume": name, "variant": variant, "quality": args.q, "size": list(x.shape),
                              "rd_cost_change_percent_by_step": curve}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

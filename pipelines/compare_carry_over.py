#!/usr/bin/env python
"""Carry-over against reset of the adapters across the GoPs of one scan (docs/adaptation.md,
"Carry-over or reset"): which start should the update of the next GoP take?

    python pipelines/compare_carry_over.py [--gop 10] [--size 128] [--qualities 21,42,63]

Each val volume (centre crop, GoPs of ``--gop`` slices) is coded GoP by GoP with the product's
adaptive encode (``encode_adapted_gop``: update, stock and adapted encode, the stream with the
lower real RD cost kept), once with every GoP's adapters starting from zero (reset) and once
starting from the adapters of the previous GoP that won (``AdaptConfig(carry_over=True)``).
The first GoP of a volume is coded the same way in both; the later ones are compared on the
real RD cost of the kept stream. One JSON line per volume and quality, then a summary line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_adapt import DEFAULT_VOLUMES, VAL, cropped_gops  # noqa: E402

from medgpu.adapt import AdaptConfig  # noqa: E402
from medgpu.adapt.online import encode_adapted_gop  # noqa: E402
from medgpu.codec import load_codec  # noqa: E402
from medgpu.intensity import IntensityMapping  # noqa: E402


def encode_volume(codec, gops: list[np.ndarray], mapping: IntensityMapping, quality: int, config: AdaptConfig,
                  mode: str = "p") -> tuple[list[dict], list[bytes]]:
    """The product's adaptive encode of each GoP in order, the adapters carried over from GoP to
    GoP when ``config.carry_over``; per GoP the real RD costs of the stock (``before``), adapted
    (``after``) and kept (``kept``) stream, which was kept, the frames and bytes; and the payloads."""
    rows, payloads, carried = [], [], None
    for frames in gops:
        x = torch.from_numpy(mapping.forward(frames)).unsqueeze(1)
        payload, adapters, rep = encode_adapted_gop(codec, x, quality, config,
                                                    carried if config.carry_over else None, mode)
        carried = adapters
        kept = rep["rd_cost_after"] if rep["used"] == "adapted" else rep["rd_cost_before"]
        rows.append({"frames": int(x.shape[0]), "bytes": len(payload), "before": rep["rd_cost_before"],
                     "after": rep["rd_cost_after"], "kept": kept, "used": rep["used"]})
        payloads.append(payload)
    return rows, payloads


def compare(pairs: list[tuple[dict, dict]]) -> dict:
    """Carry-over against reset on (reset, carry-over) rows of the same GoPs: the mean change of
    the kept stream's real RD cost (negative: carry-over better) and the GoPs where each is
    strictly better."""
    changes = [100.0 * (c["kept"] - r["kept"]) / r["kept"] for r, c in pairs]
    return {"gops_compared": len(pairs),
            "mean_change_percent": float(np.mean(changes)) if changes else None,
            "carry_better": sum(c["kept"] < r["kept"] for r, c in pairs),
            "reset_better": sum(r["kept"] < c["kept"] for r, c in pairs)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--val", default=str(VAL))
    ap.add_argument("--volumes", default=",".join(DEFAULT_VOLUMES))
    ap.add_argument("--qualities", default="21,42,63")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--gop", type=int, default=10)
    ap.add_argument("--steps", type=int, default=AdaptConfig.steps)
    ap.add_argument("--mode", choices=["p", "auto"], default="p")
    args = ap.parse_args(argv)
    codec = load_codec()
    pairs = []  # (reset, carry-over) of every GoP after the first of its volume
    for name in args.volumes.split(","):
        gops, mapping, _ = cropped_gops(Path(args.val) / name, args.size, args.gop)
        if len(gops) < 2 or gops[1].shape[0] < 2:
            print(json.dumps({"volume": name, "skipped": f"{len(gops)} GoP(s): nothing to carry over"}), flush=True)
            continue
        for q in (int(v) for v in args.qualities.split(",")):
            reset, _ = encode_volume(codec, gops, mapping, q, AdaptConfig(steps=args.steps), args.mode)
            carry, _ = encode_volume(codec, gops, mapping, q, AdaptConfig(steps=args.steps, carry_over=True),
                                     args.mode)
            # the first GoP is coded the same way by both, and a lone I-frame is not updated
            later = [(r, c) for r, c in zip(reset[1:], carry[1:]) if r["frames"] > 1]
            pairs += later
            print(json.dumps({"volume": name, "quality": q, **compare(later), "reset": reset, "carry_over": carry}),
                  flush=True)
    print(json.dumps({"summary": True, "settings": vars(args), **compare(pairs)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

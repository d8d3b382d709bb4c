#!/usr/bin/env python
"""Write medgpu/weights/MODEL_CARD.md from the training log (MODEL_CARD.json, written by
pipelines/train.py --export) and the validation results (docs/eval/results.json, written by
pipelines/evaluate.py). Run after both."""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medgpu.codec.registry import build_networks  # noqa: E402

EXTRA_STEPS = {"intra": 2330}  # steps of an earlier intra run (lr 5e-4, 15 min) before the quantisation-scale re-init


def main() -> int:
    intra_m, inter_m = (sum(p.numel() for p in net.parameters()) / 1e6 for net in build_networks())
    card = json.loads((ROOT / "medgpu/weights/MODEL_CARD.json").read_text())
    train = card.get("training", {})
    res_path = ROOT / "docs/eval/results.json"
    res = json.loads(res_path.read_text()) if res_path.exists() else {"rows": [], "bd": []}
    weights = ROOT / "medgpu/weights/dcvc-s.pt"
    lines = [
        "# Model card: medgpu `dcvc-s` weights",
        "",
        f"File: `medgpu/weights/dcvc-s.pt` ({weights.stat().st_size / 1e6:.1f} MB, fp16 parameters + integer coding tables).",
        f"Architecture: `docs/codec.md` (I-frame hyperprior/checkerboard codec, {intra_m:.2f} M parameters; P-frame",
        f"DCVC-DC-style codec with motion estimation, motion and contextual coding, {inter_m:.2f} M parameters).",
        "",
        "## Data",
        "`../shared/data/train` only (see its README): 5 NIfTI volumes (CT head, MR T1, MR DWI, two T1",
        "templates), every volume read along all three axes (slices of each axis are frames), each scaled",
        "by its own min..max to [0,1]; plus the 8 natural videos as grey-level frames (30% of samples).",
        "Random 128x128 crops, flips, frame order reversal, slice step 1-2 (P-frame stage: 1-4, for thick",
        "slices), random intensity window and gamma.",
        "Validation volumes (`../shared/data/val`) were never used for training.",
        "",
        "## Training (pipelines/train.py, schedule in pipelines/train_all.sh)",
        "",
        "| stage | what | steps | wall time | hardware |",
        "|---|---|---|---|---|",
    ]
    what = {"intra": "I-frame codec, batch 8, 4 anchor rates (steps after 10,649 with scale indices bounded by "
                     "`medgpu.codec.quant.bounded`, lr 2e-4 then 1e-4)", "motion": "motion estimation alone (warping loss)",
            "inter_before_init_from_intra": "earlier P-frame codec, clips of 2 then 4 frames (its contextual branch "
                                             "collapsed and was replaced; its motion coding is what the current codec "
                                             "started from)",
            "inter": "P-frame codec, I-frame frozen, contextual branch started as a copy of the I-frame codec "
                     "(`--init-contextual-from-intra`), 3-frame clips (batch 6) coded through their own "
                     "reconstructions, lr 1e-4 (1e-3 for the temporal parts); rate from the rounded symbols "
                     "(`--rounded-rate`) after the first 600 steps"}
    total_s = 0.0
    for stage in ("intra", "motion", "inter_before_init_from_intra", "inter"):
        t = train.get(stage)
        if not t:
            continue
        steps = t["steps"] + EXTRA_STEPS.get(stage, 0)
        secs = t["seconds"] + (900 if stage in EXTRA_STEPS else 0)
        total_s += secs
        lines.append(f"| {stage.replace('_', ' ')} | {what[stage]} | {steps} | {secs / 60:.0f} min | {t.get('device', 'cpu')} "
                     "(2-core CPU, 1-2 torch threads) |")
    lines += ["", f"Total: {total_s / 3600:.2f} hours on a 2-core CPU, no GPU. Adam, gradient clipping at 1.0; "
              "loss lambda * MSE + bits per pixel, lambda in (64, 256, 1024, 4096). Not counted: about 45 min of "
              "discarded P-frame trial runs (docs/codec.md, 'History').",
              "", "All curves still slope downwards at the end of every stage: the weights are far from converged "
              "(DCVC-DC-class models train for days on GPUs). Resume with `pipelines/train.py` (it starts from "
              "the shipped weights) where more compute is available.", ""]
    rows = [r for r in res.get("rows", []) if str(r.get("codec", "")).startswith("medgpu") and r.get("psnr")]
    if rows:
        lines += ["## Rate-distortion on ../shared/data/val (pipelines/evaluate.py)", "",
                  "| volume | codec | quality | bits/voxel | PSNR (dB) |", "|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['volume']} | {r['codec']} | {r['param']} | {float(r['bits_per_voxel']):.3f} | "
                         f"{float(r['psnr']):.2f} |")
        lines += ["", "BD-rates against JPEG 2000 and x265: `docs/evaluation.md`.", ""]
    (ROOT / "medgpu/weights/MODEL_CARD.md").write_text("\n".join(lines))
    print("wrote medgpu/weights/MODEL_CARD.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

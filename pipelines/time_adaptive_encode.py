#!/usr/bin/env python
"""Wall time of an adaptive encode (update + stock and adapted coding, the product's mode) of the
first 30x256x256 GoP of the val CT at quality 42, per number of update epochs (and patch size).

    python pipelines/time_adaptive_encode.py 1 2      # epochs to time (default: 1 2)
    python pipelines/time_adaptive_encode.py 2@64     # 2 epochs with 64-pixel patches

Prints one JSON line per setting: seconds, update seconds, both real RD costs, the stream kept.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_adapt import VAL, first_gop, time_adaptive_encode  # noqa: E402

from medgpu.adapt import AdaptConfig  # noqa: E402
from medgpu.codec import load_codec  # noqa: E402


def main(argv: list[str]) -> int:
    codec = load_codec()
    x = first_gop(VAL / "ct_chest_radiomics_lung1.nii.gz", 256, 30)[0]
    for arg in argv or ["1", "2"]:
        steps, _, patch = arg.partition("@")
        cfg = AdaptConfig(steps=int(steps), patch=int(patch or AdaptConfig.patch))
        seconds, rep = time_adaptive_encode(codec, x, 42, cfg)
        print(json.dumps({"epochs": cfg.steps, "patch": cfg.patch, "seconds": round(seconds, 1),
                          "update_seconds": round(rep["update_seconds"], 1),
                          "rd_cost_before": round(rep["rd_cost_before"], 5),
                          "rd_cost_after": round(rep["rd_cost_after"], 5), "used": rep["used"]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

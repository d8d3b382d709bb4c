#!/usr/bin/env python
"""Learning-rate / epochs probe of content-adaptive encoding on one GoP (the table in
docs/adaptation.md, "Learning-rate probe").

    python pipelines/probe_adapt_lr.py ct_chest_radiomics_lung1.nii.gz 256 42 0:0:adapters 2:1e-2:adapters 2:3e-4:full

Arguments: val volume, centre-crop size, quality, then one ``EPOCHS:LR:SCOPE`` per point
(``0:...`` = the stock encoder), optionally ``:noisy`` for the noisy rate estimate. Each point prints real bits per voxel, PSNR over the volume's
data range, the real RD cost and the update time, coding the first GoP with forced P-frames.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_adapt import VAL, code, first_gop  # noqa: E402

from medgpu.adapt import AdaptConfig  # noqa: E402
from medgpu.codec import load_codec  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    name, size, q = argv[0], int(argv[1]), int(argv[2])
    codec = load_codec()
    x, mapping, original, peak = first_gop(VAL / name, size, 30)
    print(name, tuple(x.shape), flush=True)
    for spec in argv[3:]:
        steps, lr, scope, *rate = spec.split(":")
        cfg = None if steps == "0" else AdaptConfig(steps=int(steps), lr=float(lr), scope=scope, rate=(rate or ["rounded"])[0])
        t = time.time()
        bpv, p, secs, rep = code(codec, x, q, mapping, original, peak, cfg, "p")
        print(json.dumps({"spec": spec, "bpv": round(bpv, 5), "psnr": round(p, 3), "rd_cost": round(rep["rd_cost"], 4),
                          "update_s": round(secs, 1), "s_epoch": rep.get("seconds_per_epoch"),
                          "total_s": round(time.time() - t, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

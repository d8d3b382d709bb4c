#!/usr/bin/env python
"""How an update step's time depends on the thread count and the OpenMP wait policy, and what the
adapters' branches cost (docs/adaptation.md, "Re-measured on 2026-12-01").

    python pipelines/time_update_threads.py            # both policies, then the adapter branches

Part 1: one update step (forward and backward of the 30-frame P-chain of one 128-pixel patch-GoP of
the val CT, adapters, q42) at 2 and 1 threads, alternating, in a fresh process per OpenMP wait policy
(the default and PASSIVE; the policy is read when OpenMP starts). Part 2: forward and backward of
each adapter alone at the input shape it sees in a 128-pixel patch. One JSON line per measurement.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_adapt import VAL, first_gop  # noqa: E402

from medgpu.adapt.adapters import Adapter, adapt_encoder, adapter_parameters  # noqa: E402
from medgpu.adapt.online import decoded_i_frame, update_step  # noqa: E402
from medgpu.codec import load_codec  # noqa: E402

PATCH, QUALITY, ROUNDS = 128, 42, 2


def step_seconds(codec, x: torch.Tensor, threads: list[int]) -> dict[int, float]:
    """Best seconds of one Adam step of the adapters on ``x`` [T,1,h,w] per thread count."""
    model = adapt_encoder(codec.inter)
    opt = torch.optim.Adam(adapter_parameters(model), lr=1e-3)
    x0, y0 = decoded_i_frame(codec.intra, x[0:1], QUALITY)
    best: dict[int, float] = {}
    for n in threads:
        torch.set_num_threads(n)
        t = time.perf_counter()
        update_step(model, opt, x, model.reference_from_intra(x0, y0), QUALITY)
        best[n] = min(best.get(n, float("inf")), time.perf_counter() - t)
    return best


def adapter_seconds(codec, repeats: int = 20) -> list[dict]:
    """Forward + backward milliseconds of each adapter alone, at its input shape in a patch."""
    model = adapt_encoder(codec.inter)
    seen: list[tuple[Adapter, tuple]] = []
    hooks = [m.register_forward_hook(lambda m, inp, out: seen.append((m, tuple(inp[0].shape))))
             for m in model.modules() if isinstance(m, Adapter)]
    ref = model.reference_from_intra(torch.rand(1, 1, PATCH, PATCH), torch.zeros(1, codec.inter.m, PATCH // 16, PATCH // 16))
    with torch.enable_grad():
        model(torch.rand(1, 1, PATCH, PATCH), ref, torch.tensor([QUALITY]), False)
    for h in hooks:
        h.remove()
    out = []
    for adapter, shape in seen:
        inp = torch.randn(shape, requires_grad=True)
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(repeats):
                adapter(inp).sum().backward()
            best = min(best, (time.perf_counter() - t) / repeats)
        out.append({"input": list(shape), "stride": adapter.stride, "ms": round(1000 * best, 2)})
    return out


def main(argv: list[str]) -> int:
    codec = load_codec()
    if argv[:1] == ["--child"]:
        x = first_gop(VAL / "ct_chest_radiomics_lung1.nii.gz", 256, 30)[0][..., :PATCH, :PATCH].contiguous()
        step_seconds(codec, x, [2])  # warm-up
        best = step_seconds(codec, x, [2, 1] * ROUNDS)
        print(json.dumps({"part": "step", "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
                          "seconds_2_threads": round(best[2], 2), "seconds_1_thread": round(best[1], 2)}), flush=True)
        return 0
    for policy in (None, "PASSIVE"):
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        if policy:
            env["OMP_WAIT_POLICY"] = policy
        child = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True, text=True, check=True)
        print(child.stdout.strip().splitlines()[-1], flush=True)
    per_adapter = adapter_seconds(codec)
    print(json.dumps({"part": "adapters", "per_adapter": per_adapter,
                      "total_ms_per_frame": round(sum(a["ms"] for a in per_adapter), 1)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""The thread-timing script's parts run on synthetic data and time what they say."""
from __future__ import annotations

import torch

from medgpu.adapt.adapters import Adapter, adapt_encoder


def test_adapter_timing_covers_every_adapter_at_its_patch_shape(threads_script, codec):
    rows = threads_script.adapter_seconds(codec, repeats=1)
    assert len(rows) == sum(isinstance(m, Adapter) for m in adapt_encoder(codec.inter).modules())
    assert all(r["ms"] > 0 for r in rows)
    patch = threads_script.PATCH
    assert [1, 1, patch, patch] in [r["input"] for r in rows]  # the first contextual stage sees the frame


def test_step_timing_reports_each_thread_count(threads_script, codec):
    before = torch.get_num_threads()
    try:
        best = threads_script.step_seconds(codec, torch.rand(3, 1, 64, 64), [1, 2, 1])
    finally:
        torch.set_num_threads(before)
    assert sorted(best) == [1, 2] and all(v > 0 for v in best.values())

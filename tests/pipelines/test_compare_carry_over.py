"""Carry-over against reset: the per-GoP product encode and the comparison of the kept streams."""
from __future__ import annotations

import numpy as np
import pytest

from medgpu.adapt import AdaptConfig
from medgpu.intensity import IntensityMapping


def test_compare_counts_later_gops_on_the_kept_cost(carry_script):
    reset = [{"kept": 1.0}, {"kept": 2.0}, {"kept": 1.0}]
    carry = [{"kept": 1.0}, {"kept": 1.0}, {"kept": 1.1}]
    out = carry_script.compare(list(zip(reset[1:], carry[1:])))
    assert out["gops_compared"] == 2 and out["carry_better"] == 1 and out["reset_better"] == 1
    assert out["mean_change_percent"] == pytest.approx((-50.0 + 10.0) / 2)
    assert carry_script.compare([])["mean_change_percent"] is None


def test_encode_volume_codes_each_gop_as_the_product_does(carry_script, codec):
    rng = np.random.default_rng(0)
    base = np.linspace(0, 400, 64 * 64).reshape(64, 64)
    volume = np.stack([base + 20 * k + rng.normal(0, 5, base.shape) for k in range(6)]).astype(np.int16)
    gops, mapping = [volume[:3], volume[3:]], IntensityMapping.fit(volume)
    reset, payloads = carry_script.encode_volume(codec, gops, mapping, 42, AdaptConfig(steps=1))
    carry, _ = carry_script.encode_volume(codec, gops, mapping, 42, AdaptConfig(steps=1, carry_over=True))
    assert reset[0] == carry[0]  # the first GoP starts from zero either way
    for row in reset + carry:
        assert row["kept"] == (row["after"] if row["used"] == "adapted" else row["before"])
        assert row["kept"] <= row["before"] and row["frames"] == 3
    assert [r["bytes"] for r in reset] == [len(p) for p in payloads]
    decoded = codec.decode_gop(payloads[1], 3, 64, 64, 42)  # the stock decoder reads what was kept
    assert decoded.shape == (3, 1, 64, 64)


def test_encode_volume_passes_the_adapters_on_only_with_carry_over(carry_script, monkeypatch):
    calls = []

    def fake_encode(codec, x, quality, config, adapted, mode):
        calls.append(adapted)
        adapters = object()  # what the update of this GoP returns to carry
        return b"x", adapters, {"rd_cost_before": 1.0, "rd_cost_after": 0.5, "used": "adapted"}

    monkeypatch.setattr(carry_script, "encode_adapted_gop", fake_encode)
    gops, mapping = [np.zeros((2, 8, 8), np.int16)] * 3, IntensityMapping.fit(np.arange(10, dtype=np.int16))
    carry_script.encode_volume(None, gops, mapping, 42, AdaptConfig(carry_over=True))
    assert calls[0] is None and calls[1] is not None and calls[2] is not None and calls[1] is not calls[2]
    calls.clear()
    carry_script.encode_volume(None, gops, mapping, 42, AdaptConfig())
    assert calls == [None, None, None]

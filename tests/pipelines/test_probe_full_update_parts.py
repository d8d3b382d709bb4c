"""The adaptation probe's model variants: each trains only what it names and starts from the stock
encoder (a stream byte-identical to the stock one before any update step)."""
from __future__ import annotations

import pytest
import torch


def _trainable(model):
    return {name for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("name", ["adapters", "adapters_ctx", "adapters_serial", "lowrank4", "contextual_encoder",
                                  "motion_estimation", "all"])
def test_variants_start_as_the_stock_encoder(probe, codec, name):
    model, scope = probe.build(codec.inter, name)
    assert scope == ("adapters" if name in probe.VARIANTS else "full")
    assert _trainable(model)
    x = torch.rand(3, 1, 64, 64)
    assert codec.encode_gop(x, 42, inter=model, mode="p") == codec.encode_gop(x, 42, mode="p")


def test_restricted_full_update_trains_only_its_module(probe, codec):
    model = probe.restricted_full_update(codec.inter, "contextual_encoder")
    assert all(n.startswith("contextual_encoder.") for n in _trainable(model))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == sum(
        p.numel() for p in codec.inter.contextual_encoder.parameters())


def test_low_rank_conv_trains_only_its_factors(probe, codec):
    model = probe.low_rank_encoders(codec.inter, rank=2)
    names = _trainable(model)
    assert names and all(n.endswith((".a", ".b")) for n in names)
    assert all(n.startswith(("contextual_encoder.", "motion_encoder.")) for n in names)
    conv = torch.nn.Conv2d(3, 5, 3, padding=1)
    lr = probe.LowRankConv(conv, 2)
    with torch.no_grad():
        lr.b.fill_(0.1)
    x = torch.rand(1, 3, 8, 8)
    w = conv.weight + (lr.b @ lr.a).view_as(conv.weight)
    assert torch.allclose(lr(x), torch.nn.functional.conv2d(x, w, conv.bias, padding=1))

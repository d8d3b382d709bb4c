"""The pre-training script's helpers: rate weights, warm-up, and starting the P-frame codec's
contextual branch from the I-frame codec."""
from __future__ import annotations

import pytest
import torch

from medgpu.codec.registry import build_networks


def test_rate_warmup_weight_is_off_then_ramps_to_one(train):
    w = [train.rate_warmup_weight(s, 100) for s in (0, 25, 50, 75, 100, 1000)]
    assert w == [0.0, 0.0, 0.0, 0.5, 1.0, 1.0]
    assert train.rate_warmup_weight(0, 0) == 1.0


def test_rate_weights_scale_only_the_named_latents(train):
    x = torch.zeros(2, 1, 4, 4)
    lik = {"m": torch.full((2, 1, 2, 2), 0.5), "y": torch.full((2, 1, 2, 2), 0.25)}
    full, _, bpp = train.rd_loss(x, x, lik, torch.ones(2))
    no_y, _, bpp_no_y = train.rd_loss(x, x, lik, torch.ones(2), {"y": 0.0})
    assert full.item() == pytest.approx((4 * 1 + 4 * 2) / 16)
    assert no_y.item() == pytest.approx(4 * 1 / 16)
    assert bpp == bpp_no_y  # the reported rate stays unweighted


def test_contextual_branch_starts_as_the_intra_codec(train):
    """Initialised from an I-frame codec, a P-frame codes its frame exactly as that I-frame codec
    would (same latent, same entropy parameters, same reconstruction), whatever the reference."""
    torch.manual_seed(0)
    intra, inter = build_networks()
    with torch.no_grad():
        for p in intra.parameters():
            p.add_(0.01 * torch.randn_like(p))  # stands in for trained weights (non-zero biases)
    train.init_contextual_from_intra(inter, intra)
    x = torch.rand(2, 1, 1, 64, 64)
    q = torch.tensor([42])
    seen = {}
    for name, latent in (("intra", intra.latent), ("inter", inter.contextual_latent)):
        for head in ("anchor_head", "nonanchor_head"):
            getattr(latent, head).register_forward_hook(
                lambda m, i, o, key=(name, head): seen.__setitem__(key, o))
    with torch.no_grad():
        first = intra(x[0], q)
        ref = inter.reference_from_intra(torch.rand(1, 1, 64, 64), first["y_hat"] + 1.0)
        want = intra(x[1], q)
        x_hat, nxt, _ = inter(x[1], ref, q)
    assert torch.equal(nxt.y_hat, want["y_hat"])
    assert torch.allclose(x_hat, want["x_hat"], atol=1e-6)
    for head in ("anchor_head", "nonanchor_head"):
        for a, b in zip(seen[("intra", head)], seen[("inter", head)]):
            assert torch.equal(a, b)


def test_init_from_intra_keeps_the_motion_path_and_starts_contexts_at_zero(train):
    torch.manual_seed(1)
    intra, inter = build_networks()
    with torch.no_grad():
        for p in inter.parameters():
            p.add_(0.5)  # stands in for trained weights
    before = {k: v.clone() for k, v in inter.state_dict().items()}
    train.init_contextual_from_intra(inter, intra)
    after = inter.state_dict()
    motion = [k for k in before if k.startswith(train.MOTION_PATH)]
    contextual = [k for k in before if k.startswith(train.CONTEXTUAL_PATH)]
    assert motion and contextual and len(motion) + len(contextual) == len(before)
    assert all(torch.equal(before[k], after[k]) for k in motion)
    projections = [k for k in after if ".ctx" in k]
    assert len(projections) == 12 and all(not after[k].any() for k in projections)
    assert torch.equal(after["contextual_decoder.out.weight"], intra.state_dict()["decoder.6.weight"])

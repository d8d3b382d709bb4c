"""The pre-training script's helpers for reviving the P-frame codec's contextual branch."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

from medgpu.codec.quality import interp_log
from medgpu.codec.registry import build_networks

TRAIN = Path(__file__).resolve().parents[2] / "pipelines" / "train.py"


@pytest.fixture(scope="module")
def train():
    spec = importlib.util.spec_from_file_location("medgpu_pipelines_train", TRAIN)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(TRAIN.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(TRAIN.parent))
    return module


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


def test_reinit_touches_the_contextual_branch_only(train):
    torch.manual_seed(0)
    _, inter = build_networks()
    with torch.no_grad():
        for p in inter.parameters():
            p.add_(0.5)  # stands in for trained weights
    before = {k: v.clone() for k, v in inter.state_dict().items()}
    train.reinit_contextual(inter)
    after = inter.state_dict()
    contextual = [k for k in before if k.startswith(train.CONTEXTUAL_PATH)]
    motion = [k for k in before if k.startswith(train.MOTION_PATH)]
    assert contextual and motion and len(contextual) + len(motion) == len(before)
    assert all(torch.equal(before[k], after[k]) for k in motion)
    trained = {k for k, _ in inter.named_parameters()}
    assert all(not torch.equal(before[k], after[k]) for k in contextual if k in trained)


def test_reinit_starts_the_latent_off_zero(train):
    """Fresh, the contextual latent rounds to all-zero symbols; with the reinit gain it does not."""
    torch.manual_seed(0)
    _, plain = build_networks()
    _, revived = build_networks()
    train.reinit_contextual(revived)
    x = torch.rand(1, 1, 64, 64)
    q = torch.tensor([63])

    def nonzero_share(inter) -> float:
        c1, c2, c3 = inter.context(inter.feature_adaptor(x - 0.5), torch.zeros(1, 2, 64, 64))
        y = inter.contextual_encoder(x - 0.5, c1, c2, c3) / interp_log(inter.enc_scale, q)
        return float((y.round() != 0).float().mean())

    with torch.no_grad():
        revived.load_state_dict({k: v for k, v in plain.state_dict().items()
                                 if not k.startswith(("enc_scale", "dec_scale"))}, strict=False)
        assert nonzero_share(plain) < 0.05
        assert nonzero_share(revived) > 0.3
        ratio = interp_log(plain.enc_scale, q) / interp_log(revived.enc_scale, q)
        assert torch.allclose(ratio, torch.full_like(ratio, train.REINIT_LATENT_GAIN))
        assert math.isclose(float((interp_log(revived.dec_scale, q) / interp_log(plain.dec_scale, q)).mean()),
                            1 / train.REINIT_LATENT_GAIN, rel_tol=1e-5)

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medgpu.adapt import AdaptConfig, adapt_encoder, adapter_parameters, update_gop
from medgpu.adapt.adapters import Adapter, encoder_side_parameter_count
from medgpu.adapt.online import encode_adapted_gop, patch_windows, rd_cost
from medgpu.codec import load_codec


def frames(t=4, h=64, w=64, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    out = [0.5 + 0.3 * np.sin(6 * xx + 0.3 * i) * np.cos(5 * yy) + 0.02 * rng.standard_normal((h, w)) for i in range(t)]
    return torch.from_numpy(np.clip(np.stack(out), 0, 1)[:, None].astype(np.float32))


@pytest.fixture(scope="module")
def codec():
    return load_codec()


def test_patch_windows_cover_the_frame():
    assert patch_windows(256, 128, 64) == [0, 128]
    assert patch_windows(192, 128, 64) == [0, 64]
    assert patch_windows(64, 128, 64) == [0]
    for size in (64, 192, 320):
        starts = patch_windows(size, 128, 64)
        covered = np.zeros(size, bool)
        for s in starts:
            covered[s : s + min(size, 128)] = True
        assert covered.all() and all(s % 64 == 0 for s in starts)


def test_adapters_only_touch_the_encoder_and_are_small(codec):
    adapted = adapt_encoder(codec.inter)
    trainable = adapter_parameters(adapted)
    n = sum(p.numel() for p in trainable)
    assert 0 < n < 0.10 * encoder_side_parameter_count(codec.inter)
    stock = dict(codec.inter.named_parameters())
    for name, p in adapted.named_parameters():
        if not p.requires_grad:
            continue
        assert "adapter" in name
    # every stock parameter is still there, unchanged, in the adapted copy
    matched = 0
    for name, p in adapted.named_parameters():
        key = name.replace(".block", "").replace(".module", "")
        if key in stock:
            assert torch.equal(p, stock[key])
            matched += 1
    assert matched == len(stock)
    full = adapt_encoder(codec.inter, scope="full")
    assert sum(p.numel() for p in adapter_parameters(full)) == encoder_side_parameter_count(codec.inter)


@pytest.mark.parametrize("cin,cout,stride,size", [(2, 2, 1, 16), (17, 32, 2, 16), (24, 32, 2, 15)])
def test_adapter_computes_equation_one(cin, cout, stride, size):
    """The fast forward equals the plain convolutions of eq. (1), stride on the first 1x1."""
    torch.manual_seed(0)
    a = Adapter(cin, cout, c_dw=8, k=3, stride=stride)
    torch.nn.init.normal_(a.zero.weight)
    x = torch.randn(2, cin, size, size)
    h = F.leaky_relu(F.conv2d(x, a.pre.weight, a.pre.bias, stride=stride), 0.1)
    h = F.leaky_relu(F.conv2d(h, a.dw.weight, a.dw.bias, padding=1, groups=8), 0.1)
    want = F.conv2d(h, a.zero.weight, a.zero.bias)
    got = a(x)
    assert got.shape == (2, cout, -(-size // stride), -(-size // stride))
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("scope", ["adapters", "full"])
def test_motion_estimation_passes_no_gradient_to_the_reference(codec, scope):
    model = adapt_encoder(codec.inter, scope=scope)
    cur = torch.rand(1, 1, 64, 64)
    ref = torch.rand(1, 1, 64, 64, requires_grad=True)
    flow = model.motion_estimation(cur, ref)
    flow.square().sum().backward()
    assert ref.grad is None
    me = model.motion_estimation if scope == "full" else model.motion_estimation.block
    grads = [p.grad is not None for p in me.parameters()]
    assert grads and all(grads) == (scope == "full") and any(grads) == (scope == "full")


def test_zero_steps_give_a_byte_identical_stream(codec):
    x = frames()
    for mode in ("p", "auto"):
        plain = codec.encode_gop(x, 40, mode=mode)
        model, report = update_gop(codec.intra, codec.inter, x, 40, AdaptConfig(steps=0))
        assert codec.encode_gop(x, 40, inter=model, mode=mode) == plain
    assert report["epochs"] == 0


def test_adapted_stream_decodes_with_the_stock_decoder(codec):
    x = frames(t=4, h=64, w=128, seed=1)
    model, report = update_gop(codec.intra, codec.inter, x, 40, AdaptConfig(steps=2, patch=64, lr=3e-3))
    assert report["patches"] == 2
    assert any(float(p.detach().abs().sum()) > 0 for n, p in model.named_parameters() if "adapter.zero" in n)
    payload, recon = codec.encode_gop_with_recon(x, 40, inter=model, mode="p")
    assert payload != codec.encode_gop(x, 40, mode="p")
    fresh = load_codec()  # stock weights, no adapters anywhere
    assert torch.equal(fresh.decode_gop(payload, 4, 64, 128, 40), recon)


@pytest.mark.parametrize("scope", ["adapters", "full"])
def test_updating_fits_an_encoder_that_no_longer_matches_the_decoder(codec, scope):
    """The update recovers from a mismatched encoder (the contextual encoder's output scaled
    by 0.6, a stand-in for content it was not trained for) with the default step sizes. (At the
    shipped optimum itself the loss only wanders: docs/adaptation.md.)"""
    x = frames(t=5, seed=2)
    inter = copy.deepcopy(codec.inter)
    with torch.no_grad():
        inter.contextual_encoder.d4.weight.mul_(0.6)
    _, report = update_gop(codec.intra, inter, x, 30, AdaptConfig(steps=6, patch=64, scope=scope))
    losses = report["training_loss_per_epoch"]
    assert len(losses) == 6 and losses[-1] < 0.85 * losses[0]
    assert all(b < a for a, b in zip(losses, losses[1:]))


@pytest.mark.parametrize("quality", [10, 50])
def test_adaptive_gop_keeps_the_cheaper_stream(codec, quality):
    """The kept stream has the lower real RD cost of stock and adapted, and decodes with the
    stock decoder to the reconstruction that cost was measured on."""
    x = frames(t=4, h=64, w=128, seed=3)
    cfg = AdaptConfig(steps=2, patch=64)
    payload, carried, rep = encode_adapted_gop(codec, x, quality, cfg, mode="p")
    stock, stock_recon = codec.encode_gop_with_recon(x, quality, mode="p")
    assert rep["rd_cost_before"] == pytest.approx(rd_cost(x, stock_recon, stock, quality))
    if rep["used"] == "adapted":  # the carried adapters are the ones that coded the kept stream
        ada, ada_recon = codec.encode_gop_with_recon(x, quality, inter=carried, mode="p")
        assert rep["rd_cost_after"] == pytest.approx(rd_cost(x, ada_recon, ada, quality))
        assert payload == ada and rep["rd_cost_after"] < rep["rd_cost_before"]
    else:
        assert payload == stock and carried is None and rep["rd_cost_after"] >= rep["rd_cost_before"]
    decoded = load_codec().decode_gop(payload, 4, 64, 128, quality)
    kept = rd_cost(x, decoded, payload, quality)
    assert kept == pytest.approx(min(rep["rd_cost_before"], rep["rd_cost_after"]))


def test_losing_adapters_are_not_carried_on(codec, monkeypatch):
    """When the stock stream wins, the next GoP starts from the adapters it was given, untouched."""
    import medgpu.adapt.online as online

    x = frames(t=3, seed=4)
    cfg = AdaptConfig(steps=1, patch=64)
    previous = adapt_encoder(codec.inter)
    snapshot = {k: v.clone() for k, v in previous.state_dict().items()}
    stock = codec.encode_gop(x, 20)
    costs = iter([0.0, 1.0])  # rd_cost is called for the stock stream first, then the adapted one
    monkeypatch.setattr(online, "rd_cost", lambda frames, recon, payload, q: next(costs))
    payload, carried, rep = encode_adapted_gop(codec, x, 20, cfg, previous)
    assert rep["used"] == "stock" and payload == stock and carried is previous
    assert all(torch.equal(v, snapshot[k]) for k, v in previous.state_dict().items())
    costs = iter([1.0, 0.0])
    payload, carried, rep = encode_adapted_gop(codec, x, 20, cfg, previous)
    assert rep["used"] == "adapted" and carried is not previous
    assert payload == codec.encode_gop(x, 20, inter=carried)


def test_a_tie_keeps_the_stock_stream(codec, monkeypatch):
    """Equal real costs (as when no frame is coded as a P-frame) are reported as the stock stream."""
    import medgpu.adapt.online as online

    monkeypatch.setattr(online, "rd_cost", lambda frames, recon, payload, q: 1.0)
    x = frames(t=3, seed=6)
    payload, carried, rep = encode_adapted_gop(codec, x, 20, AdaptConfig(steps=1, patch=64))
    assert rep["used"] == "stock" and payload == codec.encode_gop(x, 20) and carried is None


def test_adaptive_encode_codes_each_i_frame_trial_once(codec, monkeypatch):
    """The adapted encode reuses the stock encode's I-frame trials (they do not depend on the
    P-frame encoder): one intra encode per frame, plus the update's own I-frame."""
    x = frames(t=4, seed=7)
    calls = []
    compress = codec.intra.compress
    monkeypatch.setattr(codec.intra, "compress", lambda *a, **k: calls.append(1) or compress(*a, **k))
    encode_adapted_gop(codec, x, 20, AdaptConfig(steps=1, patch=64), mode="auto")
    assert len(calls) == 4 + 1


def test_single_frame_gop_is_coded_once(codec):
    x = frames(t=1)
    payload, _, rep = encode_adapted_gop(codec, x, 20, AdaptConfig(steps=2, patch=64))
    assert rep["used"] == "stock" and payload == codec.encode_gop(x, 20) and rep["epochs"] == 0


def test_learning_rate_defaults_per_scope():
    import json

    from medgpu.adapt.config import LEARNING_RATES

    assert set(LEARNING_RATES) == {"adapters", "full"}
    assert AdaptConfig().learning_rate == LEARNING_RATES["adapters"]
    assert AdaptConfig(scope="full").learning_rate == LEARNING_RATES["full"]
    assert AdaptConfig(scope="full", lr=5e-3).learning_rate == 5e-3
    assert json.loads(json.dumps(AdaptConfig().to_dict()))["lr"] == LEARNING_RATES["adapters"]
    with pytest.raises(ValueError, match="adapt-scope"):
        AdaptConfig(scope="decoder").learning_rate


def test_rate_estimate_is_an_option_and_reaches_the_loss(codec):
    from medgpu.adapt.online import _chain_loss

    with pytest.raises(ValueError, match="rate estimate"):
        AdaptConfig(rate="exact").validate()
    x = frames(t=3, seed=7)
    model = adapt_encoder(codec.inter)
    ref = model.reference_from_intra(x[0:1], torch.zeros(1, codec.inter.m, 4, 4))
    rounded = [float(_chain_loss(model, x, ref, 30)) for _ in range(2)]
    noisy = [float(_chain_loss(model, x, ref, 30, noise=True)) for _ in range(2)]
    assert rounded[0] == rounded[1]  # the symbols as coded: no randomness
    assert noisy[0] != noisy[1]


def test_loss_leaves_out_the_stride_padding(codec):
    """Distortion in the padding does not count; bits are per pixel of the frame itself."""
    from medgpu.adapt.online import _chain_loss
    from medgpu.codec.quality import lam

    x = frames(t=2, h=64, w=64, seed=8)
    model = adapt_encoder(codec.inter)
    ref = model.reference_from_intra(x[0:1], torch.zeros(1, codec.inter.m, 4, 4))
    padded = x.clone()
    padded[..., 40:, :] = 1.0 - padded[..., 40:, :]  # garbage where a 40-row frame was padded
    whole = float(_chain_loss(model, x, ref, 30, valid=(40, 64)))
    other = float(_chain_loss(model, padded, ref, 30, valid=(40, 64)))
    full = float(_chain_loss(model, x, ref, 30))
    assert whole != full
    # only the bits may differ (the garbage is coded too), the distortion term may not
    x_hat, _, lik = model(padded[1:2], ref, torch.tensor([30]), False)
    bits = float(sum((-torch.log2(v)).sum() for v in lik.values())) / (40 * 64)
    mse = float(torch.mean((x_hat[..., :40, :] - padded[1:2, :, :40, :]) ** 2))
    assert other == pytest.approx(lam(30) * mse + bits, rel=1e-5)


@pytest.mark.parametrize("scope", ["adapters", "full"])
def test_adapted_copy_lives_on_the_codec_device(codec, scope):
    # the adapters are created after the copy: they must follow the codec to its device
    # (on a GPU they were left on the CPU, and the first update step failed)
    meta = copy.deepcopy(codec.inter).to("meta")
    adapted = adapt_encoder(meta, scope=scope)
    assert {p.device.type for p in adapted.parameters()} == {"meta"}
    assert adapter_parameters(adapted)


def test_on_epoch_sees_each_epoch_of_the_model_being_trained(codec):
    calls = []
    with torch.enable_grad():
        model, rep = update_gop(codec.intra, codec.inter, frames(t=3, h=64, w=64), 42, AdaptConfig(steps=3),
                                on_epoch=lambda e, m: calls.append((e, m, sum(float(p.abs().sum()) for p in adapter_parameters(m)))))
    assert [c[0] for c in calls] == [1, 2, 3]
    assert all(c[1] is model for c in calls)
    assert len({c[2] for c in calls}) == 3  # the adapters moved between the calls


def test_adapters_start_the_same_whatever_ran_before(codec):
    # their random first layers come from a fixed seed; the caller's random state is left alone
    torch.manual_seed(1)
    a = adapt_encoder(codec.inter)
    after_a = torch.rand(1)
    torch.manual_seed(2)
    b = adapt_encoder(codec.inter)
    torch.manual_seed(1)
    assert torch.equal(torch.rand(1), after_a)
    pa, pb = adapter_parameters(a), adapter_parameters(b)
    assert len(pa) == len(pb) and all(torch.equal(x, y) for x, y in zip(pa, pb))


def test_the_same_update_finds_the_same_adapters(codec):
    x = frames(t=3, h=64, w=64)
    runs = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        with torch.enable_grad():
            model, _ = update_gop(codec.intra, codec.inter, x, 42, AdaptConfig(steps=2))
        runs.append(torch.cat([p.detach().flatten() for p in adapter_parameters(model)]))
    assert torch.equal(runs[0], runs[1])

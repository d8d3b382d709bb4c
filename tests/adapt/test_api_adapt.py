import json

import numpy as np

from medgpu import api
from medgpu.adapt import AdaptConfig
from medgpu.volume import Volume


def _volume() -> Volume:
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[0:6, 0:48, 0:40]
    a = 800 + 400 * np.sin(xx / 6.0 + zz / 3.0) * np.cos(yy / 7.0) + 20 * rng.standard_normal(xx.shape)
    return Volume(a.transpose(2, 1, 0).astype(np.int16), np.diag([0.8, 0.8, 2.5, 1.0]))


def test_adaptive_compress_decodes_with_the_stock_path_and_reports(tmp_path):
    vol = _volume()
    out = tmp_path / "a.mgpu"
    rep = api.compress(vol, out, quality=40, adapt=AdaptConfig(steps=1, patch=64))
    ada = rep["adaptation"]
    assert ada["enabled"] and ada["settings"]["steps"] == 1 and ada["trainable_parameters"] > 0
    gop = ada["per_gop"][0]
    assert len(ada["per_gop"]) == 1 and gop["rd_cost_before"] > 0 and ada["settings"]["lr"] == AdaptConfig().learning_rate
    assert gop["used"] == ("adapted" if gop["rd_cost_after"] < gop["rd_cost_before"] else "stock")
    assert 0 < gop["update_seconds"] <= gop["seconds"]
    side = json.loads((tmp_path / "a.mgpu.json").read_text())
    assert side["report"]["adaptation"]["enabled"] is True
    decoded = api.decompress(out)  # the stock decoder: adapters are never needed to decode
    assert decoded.array.shape == vol.array.shape and decoded.array.dtype == vol.array.dtype
    plain = api.compress(vol, tmp_path / "b.mgpu", quality=40)
    assert plain["adaptation"] == {"enabled": False}


def test_adaptive_compress_over_several_gops_never_loses_to_the_plain_encoder(tmp_path):
    """Two GoPs with carried-over adapters: each GoP's kept stream costs at most the stock one,
    and where the stock stream was kept the file holds exactly the plain encoder's packet."""
    from medgpu.bitstream.container import ContainerReader

    vol = _volume()
    cfg = AdaptConfig(steps=2, patch=64, carry_over=True)
    rep = api.compress(vol, tmp_path / "a.mgpu", quality=30, gop=3, adapt=cfg)
    plain = api.compress(vol, tmp_path / "b.mgpu", quality=30, gop=3)
    per_gop = rep["adaptation"]["per_gop"]
    assert len(per_gop) == 2
    with ContainerReader(tmp_path / "a.mgpu") as ra, ContainerReader(tmp_path / "b.mgpu") as rb:
        adapted_packets, plain_packets = ra.read_packets(), rb.read_packets()
    for gop, a, b in zip(per_gop, adapted_packets, plain_packets):
        assert gop["used"] == ("adapted" if gop["rd_cost_after"] < gop["rd_cost_before"] else "stock")
        if gop["used"] == "stock":
            assert a == b
    assert rep["bytes"] > 0 and plain["bytes"] > 0


def test_progress_counts_every_update_step_of_every_gop(tmp_path):
    """--adapt on a CPU takes minutes per GoP: the progress advances per update step, not per GoP.
    The volume is 40x48 with 7 slices: GoPs of 3, 3 and 1 slices; 32-pixel patches (stride 64:
    one window of 64x64), 2 epochs, so 2 steps in each of the first two GoPs and none in the lone
    I-frame."""
    vol = Volume(np.concatenate([_volume().array, _volume().array[..., :1]], axis=2), np.diag([0.8, 0.8, 2.5, 1.0]))
    calls = []
    rep = api.compress(vol, tmp_path / "a.mgpu", quality=30, gop=3, adapt=AdaptConfig(steps=2, patch=32),
                       progress=lambda stage, done, total: calls.append((stage, done, total)))
    adapting = [(d, t) for s, d, t in calls if s == "adapting"]
    per_gop = rep["adaptation"]["per_gop"]
    steps = sum((g["epochs"] or 0) * (g["patches"] or 0) for g in per_gop)
    assert steps == 4 and [g["epochs"] for g in per_gop] == [2, 2, 0]
    assert adapting == [(n, steps) for n in range(steps + 1)]
    assert [d for s, d, _ in calls if s == "encoding"] == [0, 1, 2, 3]


def test_planned_steps_are_the_steps_the_update_takes():
    import torch

    from medgpu.adapt.online import planned_steps, update_gop
    from medgpu.codec import load_codec

    codec = load_codec(pretrained=False)
    frames = torch.rand(4, 1, 130, 70)  # padded to 192x128: 3x2 windows of 64 pixels
    for cfg in (AdaptConfig(steps=1, patch=64), AdaptConfig(steps=2, patch=64, frames=1),
                AdaptConfig(steps=1, patch=100), AdaptConfig(steps=1, patch=512)):
        _, rep = update_gop(codec.intra, codec.inter, frames, 30, cfg)
        assert planned_steps(codec.intra, codec.inter, tuple(frames.shape), cfg) == rep["epochs"] * rep["patches"]
    assert planned_steps(codec.intra, codec.inter, (4, 1, 130, 70), AdaptConfig(steps=1, patch=64)) == 6
    assert planned_steps(codec.intra, codec.inter, (1, 1, 130, 70), AdaptConfig()) == 0  # a lone I-frame
    assert planned_steps(codec.intra, codec.inter, (4, 1, 130, 70), AdaptConfig(steps=0)) == 0

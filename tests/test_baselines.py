"""Classical-codec baselines on small synthetic volumes (no data files needed)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from medgpu.baselines import (
    CLASSICAL_CODECS,
    decode_classical,
    encode_classical,
    frames_to_volume,
    from_uint16_codes,
    run_classical,
    run_classical_detailed,
    sweep,
    to_uint16_codes,
    volume_to_frames,
)
from medgpu.metrics import psnr


def _phantom(shape: tuple[int, int, int] = (64, 64, 8), dtype=np.int16, seed: int = 0) -> np.ndarray:
    """Smooth int volume (X, Y, Z): gradient + sinusoid + bright disc + a little noise."""
    x, y, z = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij")
    cx, cy = shape[0] / 2, shape[1] / 2
    v = -600 + 20 * x + 300 * np.sin(y / 7 + z / 3)
    v += 1500 * (((x - cx) ** 2 + (y - cy) ** 2) < (min(shape[:2]) / 4) ** 2)
    v += np.random.default_rng(seed).normal(0, 8, shape)
    return np.rint(v).astype(dtype)


def _require(name: str) -> None:
    if not CLASSICAL_CODECS[name].available():
        pytest.skip(f"{name} encoder not installed")


@pytest.fixture(scope="module")
def vol() -> np.ndarray:
    return _phantom()


# ----------------------------------------------------------------------- framing / mapping


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_frames_roundtrip_3d(axis: int) -> None:
    v = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    f = volume_to_frames(v, axis)
    assert f.shape[0] == v.shape[axis]
    np.testing.assert_array_equal(f[1], np.take(v, 1, axis=axis))
    np.testing.assert_array_equal(frames_to_volume(f, v.shape, axis), v)


def test_frames_roundtrip_4d() -> None:
    v = np.arange(4 * 5 * 6 * 3).reshape(4, 5, 6, 3)
    f = volume_to_frames(v, 2)
    assert f.shape == (18, 4, 5)
    np.testing.assert_array_equal(f[6 + 2], v[:, :, 2, 1])  # time point 1, slice 2
    np.testing.assert_array_equal(frames_to_volume(f, v.shape, 2), v)


def test_uint16_mapping_float() -> None:
    v = np.random.default_rng(1).normal(100.0, 30.0, (16, 16, 4))
    codes, m = to_uint16_codes(v)
    assert codes.dtype == np.uint16 and codes.min() == 0 and codes.max() == 65535
    back = from_uint16_codes(codes, m, np.float64)
    assert np.max(np.abs(back - v)) <= m.step / 2 + 1e-9


# ----------------------------------------------------------------------- every codec


@pytest.mark.parametrize("name", list(CLASSICAL_CODECS))
def test_shape_dtype_and_bytes(name: str, vol: np.ndarray, tmp_path) -> None:
    _require(name)
    param = sweep(name)[len(sweep(name)) // 2]
    enc = encode_classical(name, vol, 2, param)
    dec = decode_classical(enc)
    assert dec.shape == vol.shape and dec.dtype == vol.dtype
    assert enc.nbytes == sum(len(p) for p in enc.payload) > 0
    files = enc.save(tmp_path)
    assert sum(p.stat().st_size for p in files) == enc.nbytes
    assert len(files) == (1 if name in ("x265", "av1") else vol.shape[2])
    d2, nbytes = run_classical(name, vol, 2, param)
    assert nbytes == enc.nbytes or name in ("x265", "av1")  # video encoders may be non-deterministic
    assert d2.shape == vol.shape and psnr(vol, d2) > 25


@pytest.mark.parametrize("name", list(CLASSICAL_CODECS))
def test_psnr_increases_with_rate(name: str, vol: np.ndarray) -> None:
    _require(name)
    params = sweep(name)
    params = [params[0], params[len(params) // 2], params[-1]]
    results = [run_classical(name, vol, 2, p) for p in params]
    psnrs = [psnr(vol, d) for d, _ in results]
    sizes = [n for _, n in results]
    assert all(b > a for a, b in zip(psnrs, psnrs[1:])), psnrs
    assert all(b > a for a, b in zip(sizes, sizes[1:])), sizes


@pytest.mark.parametrize("name", [n for n, c in CLASSICAL_CODECS.items() if c.lossless_param is not None])
def test_lossless_is_exact(name: str) -> None:
    _require(name)
    v = _phantom((32, 40, 3))
    dec, nbytes = run_classical(name, v, 2, CLASSICAL_CODECS[name].lossless_param)
    np.testing.assert_array_equal(dec, v)
    assert 0 < nbytes < v.nbytes


@pytest.mark.parametrize("name", [n for n, c in CLASSICAL_CODECS.items() if c.lossless_param is not None])
def test_lossless_is_exact_on_an_8_bit_range(name: str) -> None:
    """int16 data spanning < 256 codes (the val breast MR: 6..248) once broke JPEG XL lossless."""
    _require(name)
    v = (_phantom((32, 40, 3)).astype(np.int64) % 200 + 6).astype(np.int16)
    dec, _ = run_classical(name, v, 2, CLASSICAL_CODECS[name].lossless_param)
    np.testing.assert_array_equal(dec, v)


# ----------------------------------------------------------------------- JPEG 2000 / x265 specifics


def test_jpeg2000_lossless_dtypes_and_axis() -> None:
    _require("jpeg2000")
    lossless = CLASSICAL_CODECS["jpeg2000"].lossless_param
    assert lossless is not None and math.isinf(lossless)
    for dtype, shift in [(np.uint8, 700), (np.uint16, 1000), (np.int16, 0), (np.int32, 0)]:
        v = _phantom((24, 20, 6), dtype=np.int64) + shift
        if dtype == np.uint8:
            v = np.clip(v // 16, 0, 255)
        v = v.astype(dtype)
        dec, _ = run_classical("jpeg2000", v, 0, lossless)
        assert dec.dtype == v.dtype
        np.testing.assert_array_equal(dec, v)


def test_jpeg2000_12bit_header() -> None:
    _require("jpeg2000")
    v = np.linspace(-1024, 3071, 32 * 32 * 2).reshape(32, 32, 2).astype(np.int16)  # CT range 4095
    enc = encode_classical("jpeg2000", v, 2, math.inf)
    siz = enc.payload[0].index(b"\xff\x51")
    ssiz = enc.payload[0][siz + 40]  # SIZ marker: Ssiz of component 0 = precision - 1
    assert ssiz == 11
    np.testing.assert_array_equal(decode_classical(enc), v)


def test_wide_range_requantised() -> None:
    _require("jpeg2000")
    v = (np.arange(16 * 16 * 2, dtype=np.int64).reshape(16, 16, 2) * 1000).astype(np.int32)  # range > 2**16
    dec, _ = run_classical("jpeg2000", v, 2, math.inf)
    step = (v.max() - v.min()) / 65535
    assert np.max(np.abs(dec.astype(np.int64) - v)) <= step / 2 + 1


def test_x265_stream_odd_size_and_4d() -> None:
    _require("x265")
    v = _phantom((45, 31, 3))[..., None].repeat(2, axis=3)  # odd sizes, 4-D (2 time points)
    r = run_classical_detailed("x265", v, 2, 16.0)
    assert r.decoded.shape == v.shape and r.num_frames == 6
    assert psnr(v, r.decoded) > 35
    enc = encode_classical("x265", v[..., 0], 2, 16.0)
    assert enc.payload[0][:4] == b"\x00\x00\x00\x01"  # raw Annex-B HEVC bitstream
    assert len(enc.payload) == 1


def test_float_volume_rejected() -> None:
    with pytest.raises(TypeError):
        run_classical("jpeg2000", np.zeros((8, 8, 2), np.float32), 2, 40.0)
    with pytest.raises(KeyError):
        sweep("nope")

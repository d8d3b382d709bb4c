"""Intensity mapping to and from the codec range [0, 1]."""
from __future__ import annotations

import json

import numpy as np
import pytest

from medgpu.intensity import EXACT_INTEGER_SPAN, IntensityMapping

INT_DTYPES = ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64"]


@pytest.mark.parametrize("dtype", INT_DTYPES + ["float32", "float64"])
def test_forward_range_and_round_trip(dtype: str, make_array) -> None:
    array = make_array((9, 7, 5), dtype)
    mapping = IntensityMapping.fit(array)
    y = mapping.forward(array)
    assert y.dtype == np.float32 and y.shape == array.shape
    assert y.min() == 0.0 and y.max() == 1.0
    back = mapping.inverse(y)
    assert back.dtype == array.dtype
    if array.dtype.kind == "f":
        tol = float(mapping.span) * 2.0**-23
        np.testing.assert_allclose(back, array, rtol=0, atol=tol)
        assert not mapping.is_exact
    else:
        assert mapping.is_exact
        np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "uint16"])
def test_full_dtype_range_is_exact(dtype: str) -> None:
    info = np.iinfo(dtype)
    array = np.arange(int(info.min), int(info.max) + 1).astype(dtype)
    mapping = IntensityMapping.fit(array)
    assert (mapping.low, mapping.high) == (int(info.min), int(info.max))
    np.testing.assert_array_equal(mapping.inverse(mapping.forward(array)), array)


@pytest.mark.parametrize("span", [EXACT_INTEGER_SPAN - 1, EXACT_INTEGER_SPAN, 12_345_677])
def test_exact_up_to_2_pow_24(span: int) -> None:
    rng = np.random.default_rng(span)
    low = -(2**31) + 17
    k = np.concatenate([np.arange(0, 2000), np.arange(span - 2000, span + 1), rng.integers(0, span, 200_000)])
    array = (k + low).astype(np.int32)
    mapping = IntensityMapping(dtype="int32", low=low, high=low + span)
    assert mapping.is_exact
    np.testing.assert_array_equal(mapping.inverse(mapping.forward(array)), array)


def test_huge_range_int32_is_close_and_in_range() -> None:
    info = np.iinfo(np.int32)
    array = np.array([info.min, -1, 0, 1, 123456789, info.max], dtype=np.int32)
    mapping = IntensityMapping.fit(array)
    assert not mapping.is_exact
    back = mapping.inverse(mapping.forward(array))
    assert back.dtype == np.int32
    assert back[0] == info.min and back[-1] == info.max
    assert np.abs(back.astype(np.int64) - array).max() <= 2**32 * 2.0**-24


def test_uint32_top_of_range() -> None:
    array = np.array([2**32 - 1, 2**32 - 2**24, 2**32 - 5], dtype=np.uint32)
    mapping = IntensityMapping.fit(array)
    np.testing.assert_array_equal(mapping.inverse(mapping.forward(array)), array)


@pytest.mark.parametrize("dtype", INT_DTYPES + ["float32", "float64", "bool"])
def test_constant_volume(dtype: str) -> None:
    value = np.array(1 if dtype == "bool" else 7, dtype=dtype)
    array = np.full((4, 3, 2), value, dtype=dtype)
    mapping = IntensityMapping.fit(array)
    assert mapping.is_constant and mapping.is_exact
    y = mapping.forward(array)
    assert np.all(y == 0.5)
    back = mapping.inverse(y + 0.3)  # whatever the codec returns
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


def test_inverse_clips_and_rounds() -> None:
    mapping = IntensityMapping("uint8", 10, 20)
    y = np.array([-0.5, 0.0, 0.049, 0.051, 0.5, 1.0, 1.5, np.nan], dtype=np.float32)
    np.testing.assert_array_equal(mapping.inverse(y), [10, 10, 10, 11, 15, 20, 20, 10])


def test_float_nan_inf_never_crash() -> None:
    array = np.array([[np.nan, 1.0], [np.inf, -3.0], [-np.inf, 0.5]], dtype=np.float32)
    mapping = IntensityMapping.fit(array)
    assert (mapping.low, mapping.high) == (-3.0, 1.0)
    assert (mapping.nan_count, mapping.posinf_count, mapping.neginf_count) == (1, 1, 1)
    y = mapping.forward(array)
    assert np.all(np.isfinite(y)) and y.min() >= 0 and y.max() <= 1
    np.testing.assert_array_equal(y, [[0.0, 1.0], [1.0, 0.0], [0.0, 0.875]])
    back = mapping.inverse(y)
    assert np.all(np.isfinite(back))
    np.testing.assert_allclose(back[[0, 1, 2], [1, 1, 1]], [1.0, -3.0, 0.5])


def test_all_nan_float() -> None:
    array = np.full((3, 3), np.nan)
    mapping = IntensityMapping.fit(array)
    assert mapping.is_constant and mapping.nan_count == 9
    assert np.all(mapping.inverse(mapping.forward(array)) == 0.0)


def test_extreme_float64_range_does_not_overflow() -> None:
    array = np.array([-1.7e308, 0.0, 1.7e308])
    mapping = IntensityMapping.fit(array)
    y = mapping.forward(array)
    np.testing.assert_allclose(y, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(mapping.inverse(y), array, rtol=1e-6)


def test_big_endian_input() -> None:
    array = np.arange(-100, 100, dtype=">i2").reshape(10, 20)
    mapping = IntensityMapping.fit(array)
    assert mapping.dtype == "int16"
    np.testing.assert_array_equal(mapping.inverse(mapping.forward(array)), array)


@pytest.mark.parametrize(
    "mapping",
    [
        IntensityMapping("int16", -1024, 3071),
        IntensityMapping("uint32", 0, 2**32 - 1),
        IntensityMapping("uint64", 2**64 - 10, 2**64 - 1),
        IntensityMapping("float32", -0.1, 2.5e6, nan_count=3, posinf_count=1),
        IntensityMapping("float64", 1e-300, 1e300),
    ],
)
def test_serialisation(mapping: IntensityMapping) -> None:
    assert IntensityMapping.from_dict(json.loads(json.dumps(mapping.to_dict()))) == mapping
    data = mapping.to_bytes()
    assert len(data) < 64
    assert IntensityMapping.from_bytes(data) == mapping


def test_bad_inputs() -> None:
    with pytest.raises(ValueError):
        IntensityMapping.from_bytes(b"\x09" + IntensityMapping("int8", 0, 1).to_bytes()[1:])
    with pytest.raises(ValueError):
        IntensityMapping("int8", 5, 1)
    with pytest.raises(TypeError):
        IntensityMapping.fit(np.zeros(3, dtype=np.complex64))
    with pytest.raises(ValueError):
        IntensityMapping.fit(np.zeros((0, 3)))

import numpy as np
import pytest

from medgpu.metrics import bd_psnr, bd_rate, bits_per_voxel, psnr, psnr_per_slice


def test_psnr_over_data_range():
    a = np.array([0, 100, 200, 400], dtype=np.int16)
    b = a + np.array([1, -1, 1, -1])
    assert np.isclose(psnr(a, b), 10 * np.log10(400**2 / 1.0))
    assert psnr(a, a) == float("inf")
    per = psnr_per_slice(np.stack([a, a]), np.stack([a, b]), axis=0)
    assert per[0] == float("inf") and np.isclose(per[1], psnr(a, b))


def test_bd_rate_of_a_uniformly_cheaper_codec():
    r = np.array([0.1, 0.2, 0.4, 0.8])
    p = np.array([30.0, 33.0, 36.0, 39.0])
    assert np.isclose(bd_rate(r, p, 0.9 * r, p), -10.0)
    assert np.isclose(bd_rate(r, p, r, p), 0.0)
    assert bd_psnr(r, p, r, p + 1.0) > 0.99


def test_bd_metrics_tolerate_lossless_and_repeated_points():
    r = [0.1, 0.2, 0.4, 0.8, 3.0]
    p = [30.0, 33.0, 36.0, 36.0, float("inf")]
    assert np.isfinite(bd_rate(r, p, [0.1, 0.2, 0.4], [31.0, 34.0, 37.0]))
    assert np.isfinite(bd_psnr(r, p, [0.1, 0.2, 0.4], [31.0, 34.0, 37.0]))
    assert np.isnan(bd_rate([1, 2], [30, 31], [3, 4], [40, 41]))  # no overlap


def test_bits_per_voxel():
    assert bits_per_voxel(100, 800) == 1.0


def test_non_finite_voxels_in_mse_and_range():
    a = np.array([0.0, 10.0, np.nan, np.inf, 4.0])
    from medgpu import metrics

    assert metrics.data_range(a) == 10.0
    same = np.array([1.0, 10.0, np.nan, np.inf, 4.0])
    assert metrics.mse(a, same) == pytest.approx(1.0 / 3)  # over the 3 finite voxels
    assert metrics.mse(a, np.array([0.0, 10.0, 0.0, np.inf, 4.0])) == np.inf  # a lost NaN
    assert metrics.psnr(a, a) == np.inf

"""Quality and rate-distortion metrics shared by the codec report, the evaluation
pipelines and ``medgpu bench``."""
from __future__ import annotations

import numpy as np


def data_range(volume: np.ndarray) -> float:
    """Peak-to-peak range of the original data's finite values (at least 1 for constant volumes)."""
    v = np.asarray(volume)
    if v.dtype.kind == "f":
        finite = np.isfinite(v)
        if not finite.all():
            v = v[finite]
    if v.size == 0:
        return 1.0
    r = float(np.max(v)) - float(np.min(v))
    return r if r > 0 else 1.0


def mse(original: np.ndarray, decoded: np.ndarray) -> float:
    """Mean squared error in float64 over the voxels where the original is finite; a voxel whose
    non-finite value (NaN, +inf, -inf) is not reproduced exactly makes it ``inf``."""
    a = np.asarray(original, dtype=np.float64)
    b = np.asarray(decoded, dtype=np.float64)
    if not a.size:
        return 0.0
    finite = np.isfinite(a)
    if not finite.all():
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        if not same[~finite].all():
            return float("inf")
        a, b = a[finite], b[finite]
        if not a.size:
            return 0.0
    return float(np.mean((a - b) ** 2))


def psnr(original: np.ndarray, decoded: np.ndarray, peak: float | None = None) -> float:
    """PSNR in dB over ``peak`` (default: the original's data range).

    Identical arrays give ``inf``.
    """
    peak = data_range(original) if peak is None else float(peak)
    err = mse(original, decoded)
    if err == 0.0:
        return float("inf")
    return float(10.0 * np.log10(peak * peak / err))


def psnr_per_slice(original: np.ndarray, decoded: np.ndarray, axis: int, peak: float | None = None) -> list[float]:
    """PSNR of each slice along ``axis`` over the whole volume's data range."""
    peak = data_range(original) if peak is None else float(peak)
    a = np.moveaxis(np.asarray(original), axis, 0)
    b = np.moveaxis(np.asarray(decoded), axis, 0)
    return [psnr(a[i], b[i], peak) for i in range(a.shape[0])]


def bits_per_voxel(num_bytes: int, num_voxels: int) -> float:
    """Bits per voxel from a real byte count."""
    return 8.0 * num_bytes / max(1, num_voxels)


def _pchip_integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """Integral over [lo, hi] of the PCHIP through (x, y); repeated x are averaged."""
    from scipy.interpolate import PchipInterpolator

    ux, inv = np.unique(x, return_inverse=True)
    uy = np.bincount(inv, weights=y) / np.bincount(inv)
    return float(PchipInterpolator(ux, uy).integrate(lo, hi))


def _finite_curve(rate, quality) -> tuple[np.ndarray, np.ndarray]:
    """(log-rate, quality) with non-finite points (lossless, zero rate) dropped."""
    r = np.log(np.asarray(rate, float).clip(min=1e-300))
    p = np.asarray(quality, float)
    ok = np.isfinite(r) & np.isfinite(p)
    return r[ok], p[ok]


def bd_rate(rate_ref, psnr_ref, rate_test, psnr_test) -> float:
    """Bjøntegaard delta rate in percent (negative: the test codec needs fewer bits).

    Piecewise cubic (PCHIP) interpolation of log-rate over PSNR, integrated over the
    overlapping PSNR interval, as in the common BD-rate tools. Returns ``nan`` when the
    curves do not overlap or have fewer than two points.
    """
    r1, p1 = _finite_curve(rate_ref, psnr_ref)
    r2, p2 = _finite_curve(rate_test, psnr_test)
    if len(np.unique(p1)) < 2 or len(np.unique(p2)) < 2 or len(p2) < 2:
        return float("nan")
    lo, hi = max(p1.min(), p2.min()), min(p1.max(), p2.max())
    if not hi > lo:
        return float("nan")
    a1 = _pchip_integral(p1, r1, lo, hi)
    a2 = _pchip_integral(p2, r2, lo, hi)
    return float((np.exp((a2 - a1) / (hi - lo)) - 1.0) * 100.0)


def bd_psnr(rate_ref, psnr_ref, rate_test, psnr_test) -> float:
    """Bjøntegaard delta PSNR in dB (positive: the test codec is better)."""
    r1, p1 = _finite_curve(rate_ref, psnr_ref)
    r2, p2 = _finite_curve(rate_test, psnr_test)
    if len(np.unique(r1)) < 2 or len(np.unique(r2)) < 2:
        return float("nan")
    lo, hi = max(r1.min(), r2.min()), min(r1.max(), r2.max())
    if not hi > lo:
        return float("nan")
    return (_pchip_integral(r2, p2, lo, hi) - _pchip_integral(r1, p1, lo, hi)) / (hi - lo)

"""Volume dataclass and the slice-axis rule."""
from __future__ import annotations

import numpy as np
import pytest

from medgpu.volume import Volume, default_slice_axis, normalize_slice_axis, spacing_from_affine


@pytest.mark.parametrize(
    ("spacing", "expected"),
    [
        ((0.5, 0.5, 3.0), 2),
        ((3.0, 1.0, 1.0), 0),
        ((1.0, 4.0, 1.0), 1),
        ((1.0, 1.0, 1.0), 2),  # three-way tie -> last
        ((2.0, 2.0, 1.0), 1),  # tie between 0 and 1 -> 1
        ((1.0, 1.0000001, 0.5), 1),  # float32 noise counts as a tie
        ((1.0, 1.0, 2.0, 40.0), 2),  # time step ignored
        ((-1.0, 1.0, 0.5), 1),  # sign of the step does not matter
    ],
)
def test_default_slice_axis(spacing: tuple[float, ...], expected: int) -> None:
    assert default_slice_axis(spacing) == expected


def test_default_slice_axis_single_slice_wins_over_spacing() -> None:
    assert default_slice_axis((3.0, 1.0, 1.0), shape=(64, 64, 1)) == 2
    assert default_slice_axis((1.0, 1.0, 3.0), shape=(1, 64, 64)) == 0
    # no singleton axis: spacing rule
    assert default_slice_axis((3.0, 1.0, 1.0), shape=(64, 64, 2)) == 0


def test_default_slice_axis_2d_is_virtual_axis() -> None:
    assert default_slice_axis((0.5, 0.7), spatial_ndim=2) == 2
    with pytest.raises(ValueError):
        default_slice_axis((1.0,), spatial_ndim=1)


def test_normalize_slice_axis() -> None:
    assert normalize_slice_axis(-1, 3) == 2
    assert normalize_slice_axis(0, 3) == 0
    with pytest.raises(ValueError):
        normalize_slice_axis(3, 3)
    with pytest.raises(ValueError):
        normalize_slice_axis(0, 2)


def test_volume_defaults_spacing_from_affine() -> None:
    affine = np.array([[0, 0, 2.0, 5], [0.5, 0, 0, 1], [0, 0.7, 0, 2], [0, 0, 0, 1]])
    vol = Volume(np.zeros((4, 5, 6, 3), np.int16), affine)
    assert vol.spacing == pytest.approx((0.5, 0.7, 2.0, 1.0))
    assert vol.affine.dtype == np.float64
    assert vol.slice_axis() == 2
    assert vol.slice_axis(override=0) == 0
    assert vol.spatial_ndim == 3
    assert spacing_from_affine(affine, 2) == pytest.approx((0.5, 0.7))


def test_volume_validates() -> None:
    with pytest.raises(ValueError):
        Volume(np.zeros(5))
    with pytest.raises(ValueError):
        Volume(np.zeros((2, 2, 2)), np.eye(3))
    with pytest.raises(ValueError):
        Volume(np.zeros((2, 2, 2)), spacing=(1.0, 1.0))


def test_value_scaling() -> None:
    vol = Volume(np.zeros((2, 2, 2), np.int16), header={"scl_slope": 2.5, "scl_inter": -10.0})
    assert vol.value_scaling == (2.5, -10.0)
    for slope in ("nan", 0.0, None):
        assert Volume(np.zeros((2, 2)), header={"scl_slope": slope}).value_scaling == (1.0, 0.0)

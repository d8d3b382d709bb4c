"""Videos, GoPs and partial reassembly."""
from __future__ import annotations

import json

import numpy as np
import pytest

from medgpu.framing import (
    DEFAULT_GOP,
    FramePlan,
    from_videos,
    gops_for_slices,
    merge_gops,
    merge_slices,
    plan_for_volume,
    plan_frames,
    split_gops,
    to_videos,
)
from medgpu.volume import Volume


def _arr(shape: tuple[int, ...], dtype: str = "int16") -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape).astype(dtype)


def test_3d_tiny_odd_volume() -> None:
    array = _arr((7, 5, 3))
    plan = plan_frames(array.shape, spacing=(1.0, 1.0, 2.0), gop=2)
    assert (plan.slice_axis, plan.mode, plan.frame_shape) == (2, "slices", (7, 5))
    assert [(g.video, g.start, g.stop) for g in plan.gops] == [(0, 0, 2), (0, 2, 3)]
    videos = to_videos(array, plan)
    assert len(videos) == 1 and videos[0].shape == (3, 7, 5)
    for s in range(3):
        np.testing.assert_array_equal(videos[0][s], array[:, :, s])
    gops = split_gops(array, plan)
    assert [g.shape for g in gops] == [(2, 7, 5), (1, 7, 5)]
    merged = merge_gops(gops, plan)
    assert merged.dtype == array.dtype
    np.testing.assert_array_equal(merged, array)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_every_slice_axis(axis: int) -> None:
    array = _arr((7, 5, 3), "float32")
    plan = plan_frames(array.shape, slice_axis=axis, gop=2)
    video = to_videos(array, plan)[0]
    assert video.shape[0] == array.shape[axis]
    for s in range(array.shape[axis]):
        np.testing.assert_array_equal(video[s], np.take(array, s, axis=axis))
    np.testing.assert_array_equal(merge_gops(split_gops(array, plan), plan), array)
    np.testing.assert_array_equal(from_videos(to_videos(array, plan), plan), array)


def test_default_gop_and_last_short_gop() -> None:
    array = _arr((6, 4, 65))
    plan = plan_frames(array.shape)
    assert plan.gop == DEFAULT_GOP == 30
    assert [g.length for g in plan.gops] == [30, 30, 5]
    gops = split_gops(array, plan)
    np.testing.assert_array_equal(gops[2], np.moveaxis(array[:, :, 60:], 2, 0))
    np.testing.assert_array_equal(merge_gops(gops, plan), array)


def test_4d_cine_one_video_per_slice_position() -> None:
    array = _arr((8, 6, 4, 12))
    plan = plan_frames(array.shape, spacing=(1, 1, 8, 0.03), gop=5)
    assert plan.mode == "cine" and plan.n_videos == 4 and plan.frames_per_video == 12
    assert [g.length for g in plan.gops] == [5, 5, 2] * 4
    videos = to_videos(array, plan)
    for s in range(4):
        for t in range(12):
            np.testing.assert_array_equal(videos[s][t], array[:, :, s, t])
    np.testing.assert_array_equal(merge_gops(split_gops(array, plan), plan), array)


def test_4d_short_time_one_video_per_time_point() -> None:
    array = _arr((8, 6, 4, 3))
    plan = plan_frames(array.shape, spacing=(1, 1, 8, 2.0), gop=3)
    assert plan.mode == "slices" and plan.n_videos == 3 and plan.frames_per_video == 4
    videos = to_videos(array, plan)
    for t in range(3):
        for s in range(4):
            np.testing.assert_array_equal(videos[t][s], array[:, :, s, t])
    np.testing.assert_array_equal(merge_gops(split_gops(array, plan), plan), array)


def test_cine_threshold_and_override() -> None:
    assert plan_frames((4, 4, 3, 9)).mode == "slices"
    assert plan_frames((4, 4, 3, 10)).mode == "cine"
    assert plan_frames((4, 4, 3, 10), mode="slices").mode == "slices"
    assert plan_frames((4, 4, 3, 2), mode="cine").mode == "cine"
    assert plan_frames((4, 4, 3, 5), cine_min_frames=5).mode == "cine"
    for mode in ("slices", "cine"):
        array = _arr((5, 3, 4, 11))
        plan = plan_frames(array.shape, mode=mode, slice_axis=0, gop=4)
        np.testing.assert_array_equal(merge_gops(split_gops(array, plan), plan), array)


def test_2d_array_is_one_slice() -> None:
    array = _arr((7, 5))
    plan = plan_frames(array.shape)
    assert (plan.slice_axis, plan.n_slices, plan.n_gops, plan.frame_shape) == (2, 1, 1, (7, 5))
    gops = split_gops(array, plan)
    assert gops[0].shape == (1, 7, 5)
    merged = merge_gops(gops, plan)
    assert merged.shape == (7, 5)
    np.testing.assert_array_equal(merged, array)


def test_single_slice_3d() -> None:
    array = _arr((7, 5, 1))
    plan = plan_frames(array.shape, spacing=(3.0, 1.0, 1.0))
    assert plan.slice_axis == 2 and plan.n_gops == 1
    np.testing.assert_array_equal(merge_gops(split_gops(array, plan), plan), array)


def test_5d_flattens_trailing_axes() -> None:
    array = _arr((4, 3, 2, 2, 3))
    for mode in ("slices", "cine"):
        plan = plan_frames(array.shape, mode=mode, gop=2)
        assert plan.n_times == 6
        np.testing.assert_array_equal(merge_gops(split_gops(array, plan), plan), array)


def test_fortran_ordered_input() -> None:
    array = np.asfortranarray(_arr((6, 5, 4, 3)))
    plan = plan_frames(array.shape, gop=3)
    np.testing.assert_array_equal(merge_gops(split_gops(array, plan), plan), array)


def test_partial_decoding_slices_mode() -> None:
    array = _arr((5, 4, 10, 2))
    plan = plan_frames(array.shape, gop=4)  # 2 videos x GoPs [0:4, 4:8, 8:10]
    assert gops_for_slices(plan, 0, 1) == [0, 3]
    assert gops_for_slices(plan, 3, 5) == [0, 1, 3, 4]
    assert gops_for_slices(plan, 9, 10) == [2, 5]
    gops = split_gops(array, plan)
    for start, stop in [(0, 1), (3, 5), (2, 10), (9, 10), (0, 10)]:
        needed = {i: gops[i] for i in gops_for_slices(plan, start, stop)}
        np.testing.assert_array_equal(merge_slices(needed, plan, start, stop), array[:, :, start:stop])
    with pytest.raises(KeyError):
        merge_slices({0: gops[0]}, plan, 0, 1)
    with pytest.raises(ValueError):
        gops_for_slices(plan, 4, 11)
    with pytest.raises(ValueError):
        gops_for_slices(plan, 3, 3)


def test_partial_decoding_cine_mode() -> None:
    array = _arr((5, 4, 3, 12))
    plan = plan_frames(array.shape, gop=5)  # 3 videos x 3 GoPs
    assert gops_for_slices(plan, 1, 2) == [3, 4, 5]
    gops = split_gops(array, plan)
    needed = {i: gops[i] for i in gops_for_slices(plan, 1, 3)}
    np.testing.assert_array_equal(merge_slices(needed, plan, 1, 3), array[:, :, 1:3])


def test_partial_decoding_other_axis() -> None:
    array = _arr((9, 4, 3))
    plan = plan_frames(array.shape, slice_axis=0, gop=4)
    gops = split_gops(array, plan)
    needed = {i: gops[i] for i in gops_for_slices(plan, 5, 7)}
    assert sorted(needed) == [1]
    np.testing.assert_array_equal(merge_slices(needed, plan, 5, 7), array[5:7])


def test_plan_serialisation() -> None:
    plan = plan_frames((8, 6, 4, 12), slice_axis=1, gop=7)
    values = json.loads(json.dumps(plan.to_dict()))
    assert FramePlan.from_dict(values) == plan
    assert values["n_gops"] == plan.n_gops == len(plan.gops)
    with pytest.raises(ValueError):
        FramePlan.from_dict({**values, "n_gops": 1})
    with pytest.raises(ValueError):
        FramePlan.from_dict({**values, "version": 99})


def test_plan_validation_and_shape_checks() -> None:
    with pytest.raises(ValueError):
        FramePlan((4, 0, 3), 2)
    with pytest.raises(ValueError):
        FramePlan((4, 4, 3), 2, mode="movie")
    with pytest.raises(ValueError):
        FramePlan((4, 4, 3), 2, gop=0)
    with pytest.raises(ValueError):
        FramePlan((4, 4), 0)
    plan = plan_frames((4, 4, 3), gop=2)
    with pytest.raises(ValueError):
        split_gops(np.zeros((4, 4, 4)), plan)
    gops = split_gops(np.zeros((4, 4, 3)), plan)
    with pytest.raises(ValueError):
        merge_gops(gops[:1], plan)
    with pytest.raises(ValueError):
        merge_gops([gops[0], np.zeros((2, 4, 4))], plan)


def test_plan_for_volume_and_float_gops() -> None:
    vol = Volume(_arr((6, 5, 4)), np.diag([3.0, 1.0, 1.0, 1.0]))
    plan = plan_for_volume(vol, gop=3)
    assert plan.slice_axis == 0
    gops = [g.astype(np.float32) / 7 for g in split_gops(vol.array, plan)]
    merged = merge_gops(gops, plan)
    assert merged.dtype == np.float32
    np.testing.assert_allclose(merged * 7, vol.array, rtol=1e-6)
    assert merge_gops(gops, plan, dtype=np.float64).dtype == np.float64

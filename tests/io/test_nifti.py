"""NIfTI reading through MONAI and writing back with every header field preserved."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.nifti1 import Nifti1Extension
from nibabel.openers import ImageOpener
from nibabel.testing import data_path

from medgpu.framing import merge_gops, plan_for_volume, split_gops
from medgpu.intensity import IntensityMapping
from medgpu.io import header_from_dict, header_to_dict, is_nifti_path, load_nifti, save_nifti
from medgpu.volume import Volume

DTYPES = ["int8", "uint8", "int16", "uint16", "int32", "uint32", "float32", "float64"]


def _ext_bytes(ext: Nifti1Extension) -> bytes:
    with io.BytesIO() as buffer:
        ext.write_to(buffer, "<")
        return buffer.getvalue()


def _raw(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj.get_unscaled())


def _stored_header(path: Path) -> nib.Nifti1Header:
    """The header as it is in the file (nib.load moves scl_slope/inter and vox_offset out)."""
    img = nib.load(str(path))
    with ImageOpener(str(path)) as fileobj:
        return type(img.header).from_fileobj(fileobj, check=False)


def _assert_same_file_content(original: Path, written: Path) -> None:
    a, b = _stored_header(original), _stored_header(written)
    assert type(a) is type(b)
    assert a.binaryblock == b.binaryblock
    assert [(e.get_code(), _ext_bytes(e)) for e in a.extensions] == [(e.get_code(), _ext_bytes(e)) for e in b.extensions]
    ra, rb = _raw(original), _raw(written)
    assert ra.dtype == rb.dtype
    np.testing.assert_array_equal(ra, rb)  # NaN == NaN here


def _rich_header(img: nib.Nifti1Image) -> None:
    hdr = img.header
    qform = np.array([[0, 0, 2.5, -30], [-0.8, 0, 0, 40], [0, 0.9, 0, -12], [0, 0, 0, 1.0]])
    sform = qform.copy()
    sform[0, 1] = 0.05  # shear: only the sform can hold it
    img.set_qform(qform, code=1)
    img.set_sform(sform, code=4)
    hdr["descrip"] = b"medgpu test \xe9"
    hdr["aux_file"] = b"aux.txt"
    hdr["intent_code"] = 1002
    hdr["intent_name"] = b"label"
    hdr["intent_p1"] = 0.25
    hdr["cal_min"], hdr["cal_max"] = -5.0, 300.0
    hdr.set_xyzt_units("mm", "msec")
    hdr.set_dim_info(freq=0, phase=1, slice=2)
    hdr["toffset"] = 1.5
    hdr["slice_duration"] = 0.07
    hdr["slice_code"] = 1
    hdr["slice_start"], hdr["slice_end"] = 0, 3
    if "db_name" in hdr:
        hdr["db_name"] = b"db"
    hdr.extensions.append(Nifti1Extension(6, b"a comment extension"))
    hdr.extensions.append(Nifti1Extension(40, b"\x00\x01binary\xff"))


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_round_trip_through_codec_path(dtype: str, suffix: str, tmp_path, make_array, write_nifti) -> None:
    array = make_array((7, 5, 4), dtype)
    src = write_nifti(array, f"in{suffix}", tweak=_rich_header)
    vol = load_nifti(src)
    assert vol.source_format == "nifti" and vol.path == str(src)
    assert vol.array.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(vol.array, array)

    # load -> intensity -> GoPs -> (no coding) -> merge -> inverse -> save
    mapping = IntensityMapping.from_dict(json.loads(json.dumps(IntensityMapping.fit(vol.array).to_dict())))
    plan = plan_for_volume(vol, gop=3)
    gops = split_gops(mapping.forward(vol.array), plan)
    restored = mapping.inverse(merge_gops(gops, plan))
    if np.dtype(dtype).kind == "f":
        np.testing.assert_allclose(restored, vol.array, atol=float(mapping.span) * 2.0**-23)
        restored = vol.array  # float coding is lossy by design; check the container path exactly
    else:
        np.testing.assert_array_equal(restored, vol.array)
    header = json.loads(json.dumps(vol.header, allow_nan=False))
    out = save_nifti(Volume(restored, vol.affine, vol.spacing, "nifti", header), tmp_path / f"out{suffix}")
    _assert_same_file_content(src, out)
    assert nib.load(str(out)).get_data_dtype() == np.dtype(dtype)


def test_header_fields_affine_and_codes(write_nifti) -> None:
    src = write_nifti(np.zeros((6, 5, 4), np.int16), tweak=_rich_header)
    vol = load_nifti(src)
    h = vol.header
    assert (h["qform_code"], h["sform_code"]) == (1, 4)
    assert h["descrip"] == "medgpu test \xe9" and h["aux_file"] == "aux.txt"
    assert h["intent_code"] == 1002 and h["intent_name"] == "label"
    assert h["xyzt_units"] == 2 | 16 and h["dim_info"] == 1 | (2 << 2) | (3 << 4)
    assert [e["code"] for e in h["extensions"]] == [6, 40]
    assert vol.affine[0, 1] == pytest.approx(0.05)  # the sform wins (code 4 > 0)
    np.testing.assert_allclose(vol.affine, nib.load(str(src)).affine)
    assert vol.spacing == pytest.approx((0.8, np.hypot(0.05, 0.9), 2.5), rel=1e-6)
    hdr = header_from_dict(h)
    assert hdr.binaryblock[:40] == nib.load(str(src)).header.binaryblock[:40]
    assert header_to_dict(hdr)["srow_x"] == h["srow_x"]


def test_scaled_data_keeps_raw_values_and_scaling(tmp_path) -> None:
    raw = np.arange(-60, 60, dtype=np.int16).reshape(5, 4, 6)
    src = tmp_path / "scaled.nii"
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_data_dtype(np.int16)
    img.header.set_slope_inter(2.5, -100.0)  # set after construction: nibabel writes raw values
    nib.save(img, str(src))
    assert float(_stored_header(src)["scl_slope"]) == 2.5
    vol = load_nifti(src)
    assert vol.array.dtype == np.int16
    np.testing.assert_array_equal(vol.array, raw)
    assert vol.value_scaling == (2.5, -100.0)
    assert (vol.header["scl_slope"], vol.header["scl_inter"]) == (2.5, -100.0)
    out = save_nifti(vol, tmp_path / "scaled_out.nii.gz")
    _assert_same_file_content(src, out)
    np.testing.assert_array_equal(_raw(out), raw)
    np.testing.assert_allclose(nib.load(str(out)).get_fdata(), raw * 2.5 - 100.0)


def test_big_endian_nifti2_and_4d(tmp_path, make_array, write_nifti) -> None:
    array = make_array((5, 4, 3, 11), "uint16")

    def tr(img: nib.Nifti1Image) -> None:
        img.header.set_zooms((0.8, 0.9, 2.5, 0.045))

    for version in (1, 2):
        src = write_nifti(array, f"v{version}.nii", version=version, endianness=">", tweak=tr)
        vol = load_nifti(src)
        assert vol.header["nifti_version"] == version and vol.header["endianness"] == ">"
        assert vol.array.dtype == np.dtype("uint16")  # native order in memory
        assert vol.spacing == pytest.approx((0.8, 0.9, 2.5, 0.045), rel=1e-6)  # time step untouched
        np.testing.assert_array_equal(vol.array, array)
        out = save_nifti(vol, tmp_path / f"v{version}_out.nii")
        _assert_same_file_content(src, out)
        assert nib.load(str(out)).header.endianness == ">"


@pytest.mark.parametrize(
    "name", ["anatomical.nii", "example4d.nii.gz", "example_nifti2.nii.gz", "reoriented_anat_moved.nii", "standard.nii.gz"]
)
def test_nibabel_sample_files(name: str, tmp_path) -> None:
    src = Path(data_path) / name
    vol = load_nifti(src)
    assert vol.array.dtype == nib.load(str(src)).get_data_dtype().newbyteorder("=")
    out = save_nifti(vol, tmp_path / name)
    _assert_same_file_content(src, out)


def test_int64_volume(tmp_path, write_nifti) -> None:
    array = np.arange(60, dtype=np.int64).reshape(3, 4, 5) - 30
    src = write_nifti(array, "i64.nii")
    vol = load_nifti(src)
    assert vol.array.dtype == np.int64
    _assert_same_file_content(src, save_nifti(vol, tmp_path / "o.nii"))


def test_2d_file(tmp_path, write_nifti) -> None:
    src = write_nifti(np.arange(35, dtype=np.uint8).reshape(7, 5), "flat.nii.gz")
    vol = load_nifti(src)
    assert vol.shape == (7, 5) and len(vol.spacing) == 2 and vol.slice_axis() == 2
    _assert_same_file_content(src, save_nifti(vol, tmp_path / "o.nii.gz"))


def test_changed_affine_goes_to_sform(tmp_path, write_nifti) -> None:
    vol = load_nifti(write_nifti(np.zeros((4, 4, 4), np.uint8), tweak=_rich_header))
    vol.affine = np.diag([1.5, 1.5, 3.0, 1.0])
    out = nib.load(str(save_nifti(vol, tmp_path / "moved.nii.gz")))
    np.testing.assert_allclose(out.affine, vol.affine)
    assert int(out.header["sform_code"]) == 4 and int(out.header["qform_code"]) == 1


def test_volume_without_nifti_header(tmp_path) -> None:
    array = np.arange(2 * 3 * 4 * 2, dtype=np.int32).reshape(2, 3, 4, 2)
    vol = Volume(array, np.diag([0.5, 0.6, 3.0, 1.0]), spacing=(0.5, 0.6, 3.0, 0.04))
    back = load_nifti(save_nifti(vol, tmp_path / "plain.nii"))
    np.testing.assert_array_equal(back.array, array)
    assert back.array.dtype == np.int32
    np.testing.assert_allclose(back.affine, vol.affine)
    assert back.spacing == pytest.approx(vol.spacing, rel=1e-6)


def test_atomic_write_overwrites_and_leaves_no_temp(tmp_path, write_nifti) -> None:
    vol = load_nifti(write_nifti(np.ones((3, 3, 3), np.int16)))
    target = tmp_path / "sub" / "x.nii.gz"
    target.parent.mkdir()
    target.write_bytes(b"old")
    save_nifti(vol, target)
    save_nifti(vol, target)
    assert os.listdir(target.parent) == ["x.nii.gz"]
    np.testing.assert_array_equal(load_nifti(target).array, vol.array)


def test_failed_write_keeps_old_file(tmp_path) -> None:
    target = tmp_path / "keep.nii"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        save_nifti(Volume(np.zeros((2, 2, 2), np.complex64)), target)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["keep.nii"]


def test_suffix_checks(tmp_path) -> None:
    assert is_nifti_path("a/b.NII.GZ") and is_nifti_path("x.nii") and not is_nifti_path("x.nrrd")
    with pytest.raises(ValueError):
        save_nifti(Volume(np.zeros((2, 2))), tmp_path / "x.mha")
    with pytest.raises(ValueError):
        load_nifti(tmp_path / "x.dcm")


def test_import_is_lazy() -> None:
    code = "import sys, medgpu.io, medgpu.framing, medgpu.intensity; print('monai' in sys.modules, 'nibabel' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=os.getcwd())
    assert result.stdout.split() == ["False", "False"]

"""DICOM in, DICOM out through the product's commands: ``medgpu compress DIR`` then
``medgpu decompress --to dicom`` gives a new, lossy-labelled series with the source's
patient, study, frame of reference, geometry and pixel format; ``--to nifti`` gives the
affine that :func:`medgpu.io.load_dicom` computes. Random codec weights (quality does not
matter here), swapped in for the codec the commands load."""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pydicom = pytest.importorskip("pydicom")
from dicom_support import write_enhanced_mr  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from medgpu import api  # noqa: E402
from medgpu.cli import app  # noqa: E402
from medgpu.codec import load_codec  # noqa: E402
from medgpu.io import load_dicom  # noqa: E402

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
KEPT = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
        "StudyTime", "StudyID", "AccessionNumber", "FrameOfReferenceUID", "Modality", "SOPClassUID")
GEOMETRY = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness")
PIXEL_FORMAT = ("BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
                "PhotometricInterpretation", "Rows", "Columns", "RescaleSlope", "RescaleIntercept")


def _sample(name: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = get_testdata_file(name, download=False)
    assert path is not None, f"pydicom's bundled test file {name} is missing"
    return str(path)


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def ok(result) -> None:
    assert result.exit_code == 0, (result.output, result.exception)


def one_line_error(result, *needles: str) -> None:
    assert result.exit_code != 0 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medgpu: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def _ct_series(folder: Path, n: int = 40) -> None:
    """``n`` oblique CT slices from CT_small.dcm, positions along the normal, shuffled file names."""
    base = pydicom.dcmread(_sample("CT_small.dcm"))
    a = np.deg2rad(15.0)
    row, col = np.array([1.0, 0, 0]), np.array([0, np.cos(a), np.sin(a)])
    normal = np.cross(row, col)
    origin, step = np.array([-158.1, -179.0, -75.7]), 2.5
    series = generate_uid()
    names = [f"x{k:03d}.dcm" for k in np.random.default_rng(3).permutation(n)]
    folder.mkdir()
    for k in range(n):
        ds = copy.deepcopy(base)
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row, *col)]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in origin + k * step * normal]
        ds.SliceLocation = f"{k * step:.2f}"
        ds.PixelData = (base.pixel_array + 5 * k).astype(np.int16).tobytes()
        ds.save_as(folder / names[k], enforce_file_format=True)


def _read_all(folder: Path) -> list:
    return [pydicom.dcmread(p) for p in sorted(folder.iterdir())]


def _sitk_series(folder: Path):
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def _floats(value) -> list[float]:
    from pydicom.multival import MultiValue

    return [float(v) for v in (value if isinstance(value, MultiValue) else [value])]


@pytest.fixture(scope="module")
def codec():
    return load_codec(pretrained=False)


@pytest.fixture(autouse=True)
def random_codec(monkeypatch, codec):
    """The commands load the codec a stream names; give them the random-weights one."""
    monkeypatch.setattr(api, "_load_codec", lambda name, device: codec)


@pytest.fixture(scope="module")
def ct(tmp_path_factory, codec):
    """The CT series folder and its stream, compressed by ``medgpu compress DIR``."""
    d = tmp_path_factory.mktemp("ct")
    _ct_series(d / "series")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(api, "_load_codec", lambda name, device: codec)
        ok(run("compress", d / "series", "-o", d / "ct.mgpu", "--gop", 20, "--device", "cpu", "--no-progress"))
    return d / "series", d / "ct.mgpu"


def test_ct_series_to_dicom_keeps_identity_and_geometry(ct, tmp_path):
    src_dir, stream = ct
    out = tmp_path / "restored"
    result = run("decompress", stream, "--to", "dicom", "-o", out, "--device", "cpu", "--no-progress")
    ok(result)
    assert "wrote 40 DICOM files" in result.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["restored"]  # no temporaries left
    src = sorted(_read_all(src_dir), key=lambda d: int(d.InstanceNumber))
    new = sorted(_read_all(out), key=lambda d: int(d.InstanceNumber))
    assert len(new) == 40

    series = {d.SeriesInstanceUID for d in new}
    assert len(series) == 1 and series.isdisjoint({d.SeriesInstanceUID for d in src})
    sops = {d.SOPInstanceUID for d in new}
    assert len(sops) == 40 and sops.isdisjoint({d.SOPInstanceUID for d in src})
    ratio = 128 * 128 * 40 * 2 / stream.stat().st_size  # original int16 voxel bytes / stream bytes
    for a, b in zip(src, new):
        assert b.file_meta.MediaStorageSOPInstanceUID == b.SOPInstanceUID
        for kw in KEPT + PIXEL_FORMAT:
            assert b.get(kw) == a.get(kw), kw
        for kw in GEOMETRY:
            assert _floats(b.get(kw)) == _floats(a.get(kw)), kw
        assert b.LossyImageCompression == "01"
        assert float(b.LossyImageCompressionRatio) == pytest.approx(ratio, rel=1e-5)
        assert b.LossyImageCompressionMethod == api.LOSSY_METHOD == "MEDGPU"
        assert b.ImageType[0] == "DERIVED" and list(b.ImageType[1:]) == list(a.ImageType[1:])
        assert "codec dcvc-s" in b.DerivationDescription and "quality" in b.DerivationDescription
        assert b.DerivationCodeSequence[-1].CodeValue == "113040"
        ref = b.SourceImageSequence[-1]
        assert (ref.ReferencedSOPInstanceUID, ref.ReferencedSOPClassUID) == (a.SOPInstanceUID, a.SOPClassUID)
        assert b.pixel_array.dtype == a.pixel_array.dtype and b.pixel_array.shape == a.pixel_array.shape

    original, restored = _sitk_series(src_dir), _sitk_series(out)
    assert restored.GetSize() == original.GetSize() == (128, 128, 40)
    np.testing.assert_allclose(restored.GetSpacing(), original.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(restored.GetOrigin(), original.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(restored.GetDirection(), original.GetDirection(), atol=1e-6)

    decoded = api.decompress(stream, device="cpu")  # the same voxels as the files
    back = load_dicom(out)
    assert np.array_equal(back.array, decoded.array)
    np.testing.assert_allclose(back.affine, load_dicom(src_dir).affine, atol=1e-6)


@pytest.mark.parametrize("to", [None, "nifti"])
def test_ct_series_to_nifti_has_the_dicom_affine(ct, tmp_path, to):
    import nibabel as nib

    src_dir, stream = ct
    out = tmp_path / "ct.nii.gz"
    ok(run("decompress", stream, "-o", out, *(["--to", to] if to else []), "--device", "cpu", "--no-progress"))
    img, ref = nib.load(str(out)), load_dicom(src_dir)
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-5)
    assert img.shape == ref.shape and img.get_data_dtype() == np.int16
    assert (img.dataobj.slope, img.dataobj.inter) == ref.value_scaling == (1.0, -1024.0)  # Rescale kept


def test_default_output_stays_nifti_for_dicom_sources(ct, tmp_path):
    import shutil

    stream = tmp_path / "ct.mgpu"
    shutil.copy(ct[1], stream)
    ok(run("decompress", stream, "--device", "cpu", "--no-progress"))
    assert (tmp_path / "ct.nii.gz").is_file()
    ok(run("decompress", stream, "--to", "DICOM", "--device", "cpu", "--no-progress"))  # default folder
    assert len(list((tmp_path / "ct_dicom").glob("*.dcm"))) == 40
    (tmp_path / "empty").mkdir()  # an existing folder as output means DICOM
    ok(run("decompress", stream, "-o", tmp_path / "empty", "--device", "cpu", "--no-progress"))
    assert len(list((tmp_path / "empty").glob("*.dcm"))) == 40


@pytest.mark.parametrize("source", ["enhanced", "rtdose.dcm"])
def test_multiframe_round_trip(tmp_path, codec, source):
    if source == "enhanced":
        path = tmp_path / "emr.dcm"
        write_enhanced_mr(path, _sample("MR_small.dcm"), frame_step=50, rescale=None)
    else:
        path = Path(_sample(source))
    stream, out = tmp_path / "mf.mgpu", tmp_path / "out"
    ok(run("compress", path, "-o", stream, "--gop", 4, "--device", "cpu", "--no-progress"))
    ok(run("decompress", stream, "--to", "dicom", "-o", out, "--device", "cpu", "--no-progress"))
    a = pydicom.dcmread(path)
    (b,) = _read_all(out)
    assert int(b.NumberOfFrames) == int(a.NumberOfFrames) > 1
    assert b.SeriesInstanceUID != a.SeriesInstanceUID and b.SOPInstanceUID != a.SOPInstanceUID
    for kw in KEPT + PIXEL_FORMAT:
        assert b.get(kw) == a.get(kw), kw
    assert b.LossyImageCompression == "01" and b.LossyImageCompressionMethod == "MEDGPU"
    assert b.pixel_array.shape == a.pixel_array.shape and b.pixel_array.dtype == a.pixel_array.dtype
    for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        assert (group in b) == (group in a)
        if group in a:
            assert b[group].to_json_dict(None, None) == a[group].to_json_dict(None, None)
    src, back = load_dicom(path), load_dicom(out)
    np.testing.assert_allclose(back.affine, src.affine, atol=1e-6)
    assert back.shape == src.shape and back.dtype == src.dtype

    import SimpleITK as sitk

    x, y = sitk.ReadImage(str(path)), sitk.ReadImage(str(next(out.iterdir())))
    assert x.GetSize() == y.GetSize()
    np.testing.assert_allclose(y.GetSpacing(), x.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(y.GetOrigin(), x.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(y.GetDirection(), x.GetDirection(), atol=1e-6)


def test_one_line_errors_and_force(ct, tmp_path):
    stream = ct[1]
    base = ("--device", "cpu", "--no-progress")
    one_line_error(run("decompress", stream, "--to", "png", "-o", tmp_path / "x", *base), "--to must be nifti or dicom")
    one_line_error(run("decompress", stream, "--to", "dicom", "-o", tmp_path / "x.nii.gz", *base), "folder")
    one_line_error(run("decompress", stream, "--to", "nifti", "-o", tmp_path / "x", *base), ".nii.gz")
    one_line_error(run("decompress", stream, "-o", tmp_path / "x", *base), "--to nifti|dicom")
    assert sorted(tmp_path.iterdir()) == []

    out = tmp_path / "series"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    one_line_error(run("decompress", stream, "--to", "dicom", "-o", out, *base), "not empty", "--force")
    one_line_error(run("decompress", stream, "--to", "dicom", "-o", out, "--force", *base), "refusing")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]

    (out / "notes.txt").unlink()
    ok(run("decompress", stream, "--to", "dicom", "-o", out, *base))
    first = {p.name: pydicom.dcmread(p).SeriesInstanceUID for p in out.iterdir()}
    one_line_error(run("decompress", stream, "--to", "dicom", "-o", out, *base), "not empty")
    ok(run("decompress", stream, "--to", "dicom", "-o", out, "--force", *base))  # a series written before: replaced
    second = {p.name: pydicom.dcmread(p).SeriesInstanceUID for p in out.iterdir()}
    assert second.keys() == first.keys() and set(second.values()).isdisjoint(first.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series"]


def test_api_decompress_to_dicom_needs_a_folder(ct, tmp_path, codec):
    from medgpu.errors import OptionError

    with pytest.raises(OptionError, match="needs an output folder"):
        api.decompress(ct[1], to="dicom", device="cpu", codec=codec)
    with pytest.raises(OptionError, match="--to must be"):
        api.decompress(ct[1], tmp_path / "x", to=3, device="cpu", codec=codec)  # type: ignore[arg-type]
    volume = api.decompress(ct[1], tmp_path / "d", to="dicom", device="cpu", codec=codec)
    assert volume.path == str(tmp_path / "d") and volume.shape == (128, 128, 40)


def test_failed_swap_keeps_the_old_series(ct, tmp_path, codec, monkeypatch):
    """--force replaces a series folder in two renames; when the second fails the old series
    is put back and no temporary folder is left."""
    import os

    from medgpu.errors import OutputError

    out = tmp_path / "series"
    api.decompress(ct[1], out, to="dicom", device="cpu", codec=codec)
    before = sorted(p.name for p in out.iterdir())
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(src).endswith(".new"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OutputError, match="No space left"):
        api.decompress(ct[1], out, to="dicom", device="cpu", codec=codec, overwrite=True)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series"]
    assert sorted(p.name for p in out.iterdir()) == before

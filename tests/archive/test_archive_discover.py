"""Discovery: NIfTI files, DICOM series grouped by UID across a tree, unreadable inputs, manifests."""
from __future__ import annotations

import os

import pytest
from archive_support import write_dicom_series, write_nifti

from medgpu.archive.discover import discover, read_manifest, safe_name
from medgpu.errors import InputError


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "src"
    write_nifti(root / "a" / "t1.nii.gz", 0)
    write_nifti(root / "b" / "t2.nii", 1)
    study, series, _ = write_dicom_series(root / "ct" / "part1", slices=3)
    write_dicom_series(root / "elsewhere" / "part2", slices=3, study_uid=study, series_uid=series, start=3)
    _, mr_series, _ = write_dicom_series(root / "mr", sample="MR_small.dcm", slices=4)
    (root / "bad.dcm").write_bytes(b"not dicom at all" * 20)
    good = sorted((root / "mr").iterdir())[0].read_bytes()
    pixels = good.rindex(b"\xe0\x7f\x10\x00")  # (7FE0,0010) Pixel Data
    (root / "damaged").write_bytes(good[: pixels + 200])  # a DICOM file cut in its pixel data
    (root / "cut-header").write_bytes(good[:pixels - 40])  # ... and one cut before
    (root / "notes.txt").write_text("ignored")
    (root / ".hidden.nii.gz").write_bytes(b"ignored")
    return root, series, mr_series


def test_tree(tree):
    root, series, mr_series = tree
    found = discover(root)
    kinds = {s.key: s for s in found.series}
    assert set(kinds) == {f"file:{root / 'a' / 't1.nii.gz'}", f"file:{root / 'b' / 't2.nii'}",
                          f"dicom:{series}", f"dicom:{mr_series}"}
    ct = kinds[f"dicom:{series}"]
    assert len(ct.source["paths"]) == 6 and ct.info["files"] == 6  # one series over two folders
    assert len(ct.info["folders"]) == 2
    assert ct.name.startswith("dicom/") and ct.name.endswith(f"/{series}.mgpu")
    assert kinds[f"file:{root / 'a' / 't1.nii.gz'}"].name == "nifti/a/t1.mgpu"
    assert kinds[f"file:{root / 'b' / 't2.nii'}"].name == "nifti/b/t2.mgpu"
    bad = {os.path.basename(u.path): u.reason for u in found.unreadable}
    assert set(bad) == {"bad.dcm", "damaged", "cut-header"}
    assert "no DICM preamble" in bad["bad.dcm"]
    assert "cut short" in bad["damaged"] and "cut short" in bad["cut-header"]
    assert found.ignored == 1  # notes.txt; hidden files are not even looked at
    assert [s.key for s in discover(root).series] == [s.key for s in found.series]  # deterministic


def test_archive_folder_inside_source_is_skipped(tree):
    root, _, _ = tree
    write_nifti(root / "archive" / "streams" / "x.nii.gz", 3)
    keys = [s.key for s in discover(root, skip=[root / "archive"]).series]
    assert not any("/archive/" in k for k in keys)


def test_manifest(tree, tmp_path):
    root, series, _ = tree
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,comment\nsrc/a/t1.nii.gz,first\n# a comment\nsrc/ct,folder\nsrc/missing.nii.gz,\n")
    assert read_manifest(manifest)[0] == tmp_path / "src" / "a" / "t1.nii.gz"
    found = discover(manifest)
    assert {s.key for s in found.series} == {f"file:{root / 'a' / 't1.nii.gz'}", f"dicom:{series}"}
    assert [os.path.basename(u.path) for u in found.unreadable] == ["missing.nii.gz"]
    headerless = tmp_path / "plain.csv"
    headerless.write_text(f"{root / 'b' / 't2.nii'}\n")
    assert [s.kind for s in discover(headerless).series] == ["nifti"]


def test_missing_source_and_safe_names(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        discover(tmp_path / "nope")
    assert safe_name("../a b/c") == "a_b_c"
    assert safe_name("..") == "unnamed"

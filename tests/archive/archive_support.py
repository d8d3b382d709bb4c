"""Test support for archive tests: small synthetic scans (NIfTI, and DICOM series made from
pydicom's own sample files) and the environment for child processes."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import medgpu

REPO = Path(medgpu.__file__).resolve().parents[1]
SHAPE = (16, 16, 6)


def subprocess_env() -> dict[str, str]:
    """Environment for child processes: medgpu importable, polite OpenMP, no debug output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.pop("MEDGPU_DEBUG", None)
    return env


def write_nifti(path: Path, seed: int, shape: Sequence[int] = SHAPE) -> Path:
    import nibabel as nib

    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    data = 900 * np.exp(-2 * (x**2 + y**2)) * (1 + 0.2 * z) + rng.normal(0, 20, shape) + 100 * seed
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.int16), np.diag([0.9, 0.9, 2.5, 1.0])), str(path))
    return path


def write_dicom_series(folder: Path, *, sample: str = "CT_small.dcm", slices: int = 6, size: int = 16,
                       study_uid: str | None = None, series_uid: str | None = None, patient_id: str = "P001",
                       seed: int = 0, start: int = 0, total: int | None = None) -> tuple[str, str, list[Path]]:
    """Instances ``start .. start+slices`` of a series made from a pydicom sample file,
    cut to ``size`` x ``size``. Returns (study UID, series UID, files)."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    template = pydicom.dcmread(get_testdata_file(sample))
    step = max(1, int(template.Rows) // size)
    base = template.pixel_array[::step, ::step][:size, :size].astype(np.int16)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    position = [float(v) for v in template.ImagePositionPatient]
    for k in range(start, start + slices):
        ds = template.copy()
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID = patient_id
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [position[0], position[1], position[2] + 2.5 * k]
        ds.SliceLocation = position[2] + 2.5 * k
        ds.Rows = ds.Columns = size
        ds.PixelSpacing = [float(v) * step for v in template.PixelSpacing]
        pixels = (base + rng.integers(-20, 20, base.shape) + 7 * k).astype(np.int16)
        ds.PixelData = pixels.tobytes()
        path = folder / f"IM{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return study_uid, series_uid, files


def make_tree(root: Path, *, nifti: int = 8, dicom: int = 4, broken: bool = True) -> dict[str, Any]:
    """``nifti`` NIfTI scans in nested folders, ``dicom`` DICOM series (the first one split
    over two folders), a broken NIfTI and a file that is ignored. Returns what was made."""
    made: dict[str, Any] = {"nifti": [], "dicom": [], "broken": None}
    for i in range(nifti):
        made["nifti"].append(write_nifti(root / f"subject{i // 3}" / f"scan{i}.nii.gz", i))
    for j in range(dicom):
        sample = "CT_small.dcm" if j % 2 == 0 else "MR_small.dcm"
        if j == 0:
            study, series, _ = write_dicom_series(root / "dicom" / f"s{j}a", sample=sample, slices=3, seed=j)
            write_dicom_series(root / "other" / f"s{j}b", sample=sample, slices=3, seed=j, study_uid=study,
                               series_uid=series, start=3)
        else:
            _, series, _ = write_dicom_series(root / "dicom" / f"s{j}", sample=sample, slices=6, seed=j)
        made["dicom"].append(series)
    if broken:
        made["broken"] = root / "subject0" / "broken.nii.gz"
        made["broken"].write_bytes(b"\x1f\x8b this is not a gzip stream" * 8)
    (root / "README.txt").write_text("not an image\n")
    return made


def count_done(dest: Path) -> int:
    """Done series in the ledger of ``dest`` (read-only; 0 while it does not exist yet)."""
    import sqlite3

    db = dest / "archive.sqlite"
    if not db.is_file():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return int(con.execute("SELECT COUNT(*) FROM series WHERE state='done'").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def leftovers(dest: Path) -> list[Path]:
    """Temporary files or folders left in an archive."""
    out = []
    for p in dest.rglob("*"):
        if p.name.endswith((".part", ".tmp", ".partial")) or p.name in (".work", ".incoming"):
            out.append(p)
    return out


def die_once(task: dict[str, Any]) -> dict[str, Any]:
    """Task function for process pools: the first attempt of each series kills its worker."""
    from medgpu.archive.worker import run_task

    import hashlib

    marker = Path(task["work_dir"]).parent / f"died-{hashlib.sha1(task['key'].encode()).hexdigest()[:12]}"
    if not marker.exists():
        marker.write_text("x")
        os._exit(13)
    return run_task(task)

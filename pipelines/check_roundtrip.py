#!/usr/bin/env python
"""Round trip of every val volume through the `medgpu` command line, checked from the files.

For each volume in ../shared/data/val: `medgpu compress` (default quality), `medgpu decompress`
(NIfTI for NIfTI sources, DICOM for DICOM sources), then, reading the two files with nibabel or
pydicom directly (not medgpu), check that shape, affine (NIfTI) or geometry attributes (DICOM) and
dtype are kept, and compute the PSNR over the original data range with numpy; compare it with the
PSNR that `medgpu info --json` reports. Writes docs/roundtrip.md.

    python pipelines/check_roundtrip.py [--data-dir DIR] [--quality Q]
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DICOM_GEOMETRY = ("Rows", "Columns", "NumberOfFrames", "PixelSpacing", "ImagePositionPatient",
                  "ImageOrientationPatient", "SliceThickness", "BitsAllocated", "PixelRepresentation",
                  "PhotometricInterpretation", "SamplesPerPixel")


def medgpu(*args: str) -> str:
    """Run the `medgpu` command line; returns stdout, raises with its stderr on failure."""
    done = subprocess.run([sys.executable, "-m", "medgpu", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"medgpu {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def psnr(original: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR over the original data range (max - min), in float64. Written out here on purpose rather
    than calling ``medgpu.metrics.psnr``, which computes the reported figure: this is the independent
    computation the check compares it with."""
    a, b = original.astype(np.float64), decoded.astype(np.float64)
    mse = float(np.mean((a - b) ** 2))
    peak = float(a.max() - a.min())
    if mse == 0:
        return math.inf
    return 10 * math.log10((peak if peak > 0 else 1.0) ** 2 / mse)


def read_nifti(path: Path) -> dict:
    import nibabel as nib

    img = nib.load(str(path))
    return {"array": np.asanyarray(img.dataobj), "affine": img.affine, "dtype": img.get_data_dtype()}


def read_dicom(path: Path) -> dict:
    """Pixels and geometry attributes of a multi-frame DICOM file; a PALETTE COLOR source is turned
    into the grey image medgpu documents that it codes (BT.601 luma of the palette lookup, rounded,
    uint8), with pydicom's own lookup."""
    import pydicom

    files = sorted(path.glob("*.dcm")) if path.is_dir() else [path]
    if len(files) != 1:
        raise RuntimeError(f"{path}: expected one multi-frame DICOM file, found {len(files)}")
    ds = pydicom.dcmread(str(files[0]))
    geometry = {k: str(ds.get(k)) for k in DICOM_GEOMETRY if k in ds}
    array = ds.pixel_array
    if geometry.get("PhotometricInterpretation") == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = np.asarray(apply_color_lut(array, ds), dtype=np.float64)
        if rgb.max() > 255:  # 16-bit palette entries
            rgb /= 256.0
        luma = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
        array = np.clip(np.rint(luma), 0, 255).astype(np.uint8)
        geometry["PhotometricInterpretation"] = "MONOCHROME2"  # the documented conversion
    return {"array": array, "geometry": geometry, "dtype": array.dtype}


def check(src: Path, work: Path, quality: int | None) -> dict:
    dicom = src.suffix.lower() == ".dcm"
    stream = work / (src.name.split(".")[0] + ".mgpu")
    out = work / (src.name.split(".")[0] + ("_dec" if dicom else "_dec.nii.gz"))
    opts = ["--quality", str(quality)] if quality is not None else []
    t0 = time.perf_counter()
    medgpu("compress", str(src), "-o", str(stream), *opts)
    medgpu("decompress", str(stream), "-o", str(out), *(["--to", "dicom"] if dicom else []))
    seconds = time.perf_counter() - t0
    reported = json.loads(medgpu("info", str(stream), "--json"))["report"]["psnr"]
    a, b = (read_dicom(src), read_dicom(out)) if dicom else (read_nifti(src), read_nifti(out))
    row = {
        "volume": src.name, "shape": list(a["array"].shape), "dtype": str(a["dtype"]),
        "shape_kept": a["array"].shape == b["array"].shape, "dtype_kept": a["dtype"] == b["dtype"],
        "psnr_reported": reported, "seconds": round(seconds, 1),
        "bits_per_voxel": 8 * stream.stat().st_size / a["array"].size,
    }
    if dicom:
        row["geometry_kept"] = a["geometry"] == b["geometry"]
        row["geometry_diff"] = {k: (a["geometry"].get(k), b["geometry"].get(k))
                                for k in set(a["geometry"]) | set(b["geometry"])
                                if a["geometry"].get(k) != b["geometry"].get(k)}
    else:
        row["geometry_kept"] = bool(np.array_equal(a["affine"], b["affine"]))
    row["psnr_independent"] = psnr(a["array"], b["array"]) if row["shape_kept"] else None
    row["psnr_equal"] = (row["psnr_independent"] is not None
                         and abs(row["psnr_independent"] - reported) < 1e-6 * max(1.0, abs(reported)))
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=ROOT / ".." / "shared" / "data" / "val")
    ap.add_argument("--quality", type=int, default=None, help="default: medgpu's default quality")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "roundtrip.md")
    args = ap.parse_args()
    sources = sorted(p for p in args.data_dir.iterdir() if p.name.endswith((".nii", ".nii.gz", ".dcm")))
    rows = []
    with tempfile.TemporaryDirectory(prefix="medgpu-roundtrip-") as tmp:
        for src in sources:
            row = check(src, Path(tmp), args.quality)
            rows.append(row)
            print(json.dumps(row), flush=True)
    ok = all(r["shape_kept"] and r["dtype_kept"] and r["geometry_kept"] and r["psnr_equal"] for r in rows)
    yes = {True: "yes", False: "**no**"}
    lines = [
        "# Round trip of the val volumes (generated)", "",
        f"Generated {time.strftime('%Y-%m-%dT%H:%M:%S')} by `python pipelines/check_roundtrip.py` on "
        f"{platform.machine()} {platform.python_version()}, quality "
        f"{args.quality if args.quality is not None else 'default'}, shipped weights.", "",
        "Each volume goes through `medgpu compress` and `medgpu decompress` (NIfTI back for NIfTI sources, "
        "multi-frame DICOM back for DICOM sources). The two files are then read with nibabel or pydicom "
        "directly; the affine is compared exactly for NIfTI, and for DICOM the geometry attributes "
        f"({', '.join(DICOM_GEOMETRY)}). The independent PSNR is numpy's, over the original data range; "
        "`reported` is the PSNR in `medgpu info --json`. medgpu codes colour DICOM as grey (BT.601 luma, "
        "`medgpu/io/dicom.py`) and writes it back as MONOCHROME2, so a PALETTE COLOR source is compared "
        "through pydicom's palette lookup and the same luma formula.", "",
        "| volume | shape | dtype | shape kept | dtype kept | affine / geometry kept | PSNR reported | PSNR independent | equal | bits/voxel | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ind = r["psnr_independent"]
        lines.append(
            f"| {r['volume']} | {'x'.join(map(str, r['shape']))} | {r['dtype']} | {yes[r['shape_kept']]} | "
            f"{yes[r['dtype_kept']]} | {yes[r['geometry_kept']]} | {r['psnr_reported']:.6f} | "
            f"{'-' if ind is None else f'{ind:.6f}'} | {yes[r['psnr_equal']]} | {r['bits_per_voxel']:.3f} | {r['seconds']} |")
    lines += ["", f"All kept and equal: {yes[ok]}.", ""]
    args.doc.write_text("\n".join(lines))
    print(f"wrote {args.doc}; all kept and equal: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""The ``medgpu`` command line: a real round trip with the shipped weights, and every error
case is one line on stderr, a non-zero exit and no output file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import nibabel.testing
import numpy as np
import pytest
from typer.testing import CliRunner

from medgpu import api
from medgpu.cli import app
from medgpu.codec import load_codec
from medgpu.volume import Volume

EXAMPLE = Path(nibabel.testing.data_path) / "anatomical.nii"  # real MR, 33x41x25 int16, big-endian


def run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *needles: str) -> None:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("medgpu: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def stream(tmp_path_factory) -> Path:
    """A small valid stream (random weights: the error cases never reach the model)."""
    d = tmp_path_factory.mktemp("stream")
    vol = Volume(np.arange(12 * 10 * 4, dtype=np.int16).reshape(12, 10, 4), np.diag([1.0, 1.0, 2.0, 1.0]))
    api.compress(vol, d / "s.mgpu", gop=2, device="cpu", codec=load_codec(pretrained=False))
    return d / "s.mgpu"


def test_import_is_light_and_help_works():
    code = "import sys, medgpu.cli; print([m for m in ('torch', 'monai', 'nibabel', 'numpy') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    result = run("--help")
    assert result.exit_code == 0
    for command in ("compress", "decompress", "info"):
        assert command in result.output


def test_round_trip_with_shipped_weights(tmp_path):
    out = tmp_path / "anat.mgpu"
    result = run("compress", EXAMPLE, "-o", out)
    assert result.exit_code == 0, result.output
    assert "bits/voxel" in result.stdout and out.is_file() and Path(f"{out}.json").is_file()

    result = run("info", out, "--json")
    assert result.exit_code == 0, result.output
    meta = json.loads(result.stdout)
    assert meta["shape"] == [33, 41, 25] and meta["quality"] == api.DEFAULT_QUALITY

    nii = tmp_path / "anat.nii.gz"
    result = run("decompress", out, "-o", nii)
    assert result.exit_code == 0, result.output
    a, b = nib.load(str(EXAMPLE)), nib.load(str(nii))
    assert a.shape == b.shape and a.get_data_dtype() == b.get_data_dtype()
    np.testing.assert_array_equal(a.affine, b.affine)
    for key in ("sform_code", "qform_code", "pixdim", "xyzt_units", "descrip"):
        np.testing.assert_array_equal(a.header[key], b.header[key], err_msg=key)
    x = np.asarray(a.dataobj, dtype=np.float64)
    y = np.asarray(b.dataobj, dtype=np.float64)
    independent = 10 * np.log10((x.max() - x.min()) ** 2 / np.mean((x - y) ** 2))
    assert meta["psnr"] == pytest.approx(independent, rel=1e-12)
    assert independent > 25  # real weights, default quality: far from noise

    text = run("info", out)
    assert text.exit_code == 0 and "PSNR" in text.stdout and "bits/voxel" in text.stdout


def damaged(stream: Path, tmp_path: Path, kind: str) -> Path:
    data = bytearray(stream.read_bytes())
    if kind == "truncated":
        data = data[: len(data) // 2]
    elif kind == "header-flip":
        data[40] ^= 0x04
    elif kind == "payload-flip":
        data[-60] ^= 0x80
    elif kind == "random":
        data = bytearray(np.random.default_rng(0).bytes(len(data)))
    path = tmp_path / f"{kind}.mgpu"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("kind", "needle"),
    [("truncated", "truncated"), ("header-flip", "corrupt"), ("payload-flip", "corrupt"), ("random", "not a medgpu stream")],
)
@pytest.mark.parametrize("command", ["decompress", "info"])
def test_damaged_streams(stream, tmp_path, kind, needle, command):
    bad = damaged(stream, tmp_path, kind)
    before = sorted(tmp_path.iterdir())
    args = [command, bad] + (["-o", tmp_path / "out.nii.gz"] if command == "decompress" else [])
    result = run(*args)  # info checks every packet's CRC too (without decoding)
    assert_one_line_error(result, needle)
    assert sorted(tmp_path.iterdir()) == before


def non_image(tmp_path: Path) -> Path:
    path = tmp_path / "notes.nii.gz"
    path.write_text("these are not voxels\n")
    return path


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (lambda t, s: ["compress", t / "missing.nii.gz"], "no such file"),
        (lambda t, s: ["compress", non_image(t), "-o", t / "x.mgpu"], "notes.nii.gz"),
        (lambda t, s: ["compress", s, "-o", t / "x.mgpu"], "not a NIfTI or DICOM file"),
        (lambda t, s: ["compress", EXAMPLE, "-o", t / "x.mgpu", "--quality", "99"], "--quality"),
        (lambda t, s: ["compress", EXAMPLE, "-o", t / "x.mgpu", "--gop", "0"], "--gop"),
        (lambda t, s: ["compress", EXAMPLE, "-o", t / "x.mgpu", "--slice-axis", "7"], "--slice-axis"),
        (lambda t, s: ["compress", EXAMPLE, "-o", t / "x.mgpu", "--device", "tpu"], "--device"),
        (lambda t, s: ["compress", EXAMPLE, "-o", t / "x.mgpu", "--quality", "abc"], "--quality"),
        (lambda t, s: ["compress", EXAMPLE, "-o", t / "nodir" / "x.mgpu"], "folder does not exist"),
        (lambda t, s: ["decompress", t / "missing.mgpu", "-o", t / "o.nii.gz"], "no such file"),
        (lambda t, s: ["decompress", s, "-o", t / "o.txt"], ".nii"),
        (lambda t, s: ["decompress", s, "-o", t / "o.nii.gz", "--device", "tpu"], "--device"),
        (lambda t, s: ["info", t / "missing.mgpu"], "no such file"),
        (lambda t, s: ["compress"], "Missing argument"),
        (lambda t, s: ["compress", EXAMPLE, "-o", t / "x.mgpu", "--adapt", "--adapt-steps", "-1"], "--adapt-steps"),
        (lambda t, s: ["compress", EXAMPLE, "-o", t / "x.mgpu", "--adapt", "--adapt-patch", "4"], "--adapt-patch"),
        (lambda t, s: ["compress", EXAMPLE, "-o", t / "x.mgpu", "--adapt", "--adapt-frames", "0"], "--adapt-frames"),
        (lambda t, s: ["compress", EXAMPLE, "-o", t / "x.mgpu", "--adapt", "--adapt-scope", "all"], "--adapt-scope"),
        (lambda t, s: ["compress", EXAMPLE, "-o", t / "x.mgpu", "--adapt-steps", "-1"], "--adapt-steps"),
        (lambda t, s: ["compress", EXAMPLE, "-o", t / "x.nii.gz"], ".mgpu"),
    ],
    ids=["missing", "non-image", "not-nifti", "quality", "gop", "slice-axis", "device", "quality-type",
         "out-folder", "d-missing", "d-suffix", "d-device", "info-missing", "no-args",
         "adapt-steps", "adapt-patch", "adapt-frames", "adapt-scope", "adapt-steps-without-adapt", "c-suffix"],
)
def test_bad_input_and_options(stream, tmp_path, args, needle):
    argv = args(tmp_path, stream)
    before = sorted(tmp_path.iterdir())
    assert_one_line_error(run(*argv), needle)
    assert sorted(tmp_path.iterdir()) == before


def test_existing_output_needs_force(stream, tmp_path):
    target = tmp_path / "o.nii.gz"
    target.write_bytes(b"old")
    assert_one_line_error(run("decompress", stream, "-o", target), "exists")
    assert target.read_bytes() == b"old"


def test_errors_in_a_real_process(stream, tmp_path):
    """Outside the test runner too: one line on stderr, non-zero exit, no traceback."""
    bad = damaged(stream, tmp_path, "truncated")
    text = non_image(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "MEDGPU_DEBUG"}
    for argv in (["decompress", bad], ["compress", text]):
        proc = subprocess.run([sys.executable, "-m", "medgpu", *map(str, argv)], capture_output=True, text=True,
                              timeout=300, env=env)
        assert proc.returncode != 0
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith("medgpu: error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.nii.gz", "truncated.mgpu"]


def test_non_finite_voxels_are_kept_exactly(tmp_path):
    """NaN/+inf/-inf positions travel losslessly beside the lossy values (a mask in the header)."""
    data = np.linspace(0, 100, 16 * 12 * 35, dtype=np.float32).reshape(16, 12, 35)
    data[1, 2, 0] = data[3, 4, 31] = np.nan  # in the first and the second GoP
    data[5, 5, 2] = np.inf
    data[6, 6, 33] = -np.inf
    src = tmp_path / "f.nii.gz"
    nibabel.save(nibabel.Nifti1Image(data, np.eye(4)), str(src))
    result = run("compress", src, "-o", tmp_path / "f.mgpu", "--device", "cpu", "--no-progress", "--quality", "5")
    assert result.exit_code == 0, result.output
    assert "kept exactly: 2 nan, 1 posinf, 1 neginf voxels" in result.stdout
    report = json.loads((tmp_path / "f.mgpu.json").read_text())["report"]
    assert report["nonfinite_voxels"] == {"nan": 2, "posinf": 1, "neginf": 1} and np.isfinite(report["psnr"])
    assert run("decompress", tmp_path / "f.mgpu", "-o", tmp_path / "d.nii.gz", "--device", "cpu").exit_code == 0
    back = np.asarray(nibabel.load(str(tmp_path / "d.nii.gz")).dataobj)
    np.testing.assert_array_equal(np.isnan(back), np.isnan(data))
    assert back[5, 5, 2] == np.inf and back[6, 6, 33] == -np.inf and np.isfinite(back).sum() == data.size - 4
    part = api.decode_slices(tmp_path / "f.mgpu", 30, 35, codec=None, device="cpu")
    assert np.isnan(part[3, 4, 1]) and part[6, 6, 3] == -np.inf


@pytest.mark.parametrize(("sig", "code", "message"), [("SIGTERM", 143, "terminated"), ("SIGINT", 130, "interrupted")])
def test_a_stopped_compress_leaves_no_partial_output(tmp_path, sig, code, message):
    """A terminated (batch schedulers send SIGTERM) or interrupted (Ctrl-C) compress says so in
    one line and removes its temporary files."""
    import signal
    import time

    big = tmp_path / "big.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.random.default_rng(0).integers(0, 4000, (256, 256, 60), dtype=np.int16),
                                     np.eye(4)), str(big))
    proc = subprocess.Popen([sys.executable, "-m", "medgpu", "compress", str(big), "-o", str(tmp_path / "big.mgpu"),
                             "--no-progress", "--device", "cpu"], stderr=subprocess.PIPE, text=True,
                            # a test run started in the background inherits an ignored SIGINT
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while not any(p.name.endswith(".part") for p in tmp_path.iterdir()) and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code and err.strip() == f"medgpu: error: {message}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.nii.gz"]

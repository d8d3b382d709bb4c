"""``medgpu bench`` and :mod:`medgpu.bench`: the classical numbers are those of a direct codec
call, the CLI prints the tables and writes CSV/JSON/PNG. medgpu runs with random weights."""
from __future__ import annotations

import csv
import json
import math
import os

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from medgpu import baselines, bench
from medgpu.cli import app
from medgpu.errors import InputError, OptionError
from medgpu.metrics import bits_per_voxel, psnr

SHAPE = (32, 28, 6)


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    """(path, stored array): a small int16 NIfTI whose slice axis is 2 (largest spacing)."""
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in SHAPE), indexing="ij")
    rng = np.random.default_rng(3)
    data = (1800 * np.exp(-3 * (x**2 + y**2)) * (1 + 0.2 * z) + rng.normal(0, 15, SHAPE) + 100).astype(np.int16)
    path = tmp_path_factory.mktemp("bench") / "phantom.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.8, 3.0, 1.0])), str(path))
    return path, data


def direct(codec: str, array: np.ndarray, param: float) -> tuple[int, float]:
    decoded, nbytes = baselines.run_classical(codec, array, 2, param)
    return nbytes, psnr(array, decoded)


def test_classical_points_match_a_direct_codec_call(tmp_path, volume):
    path, data = volume
    params = {"jpeg2000": [40.0, 60.0], "jpegls": [0.01], "x265": [30.0]}
    result = bench.run_bench([path], tmp_path, codecs=list(params), params=params, device="cpu")
    assert result.codecs == ["jpeg2000", "jpegls", "x265"] and not result.skipped
    lossy = result.lossy()
    assert [(r["codec"], r["param"]) for r in lossy] == [(c, p) for c, ps in params.items() for p in ps]
    for r in lossy:
        nbytes, p = direct(r["codec"], data, r["param"])
        assert r["bytes"] == nbytes and r["psnr"] == p, r
        assert r["bits_per_voxel"] == bits_per_voxel(nbytes, data.size) and r["volume"] == "phantom"
    # lossless reference: codecs that have a lossless mode (x265 in the registry has none)
    lossless = {r["codec"]: r for r in result.lossless()}
    assert sorted(lossless) == ["jpeg2000", "jpegls"]
    for c, r in lossless.items():
        assert r["psnr"] == math.inf and r["bytes"] == direct(c, data, baselines.CLASSICAL_CODECS[c].lossless_param)[0]
    # every point in the CSV and JSON, the plot written
    with open(result.csv_path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(result.rows) == 6 and rows[0]["codec"] == "jpeg2000"
    assert int(rows[0]["bytes"]) == lossy[0]["bytes"]
    doc = json.loads(result.json_path.read_text())
    assert len(doc["rows"]) == 6 and doc["meta"]["codecs"] == result.codecs and doc["bd"]
    assert result.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_prints_the_table_and_writes_plot_and_csv(tmp_path, volume):
    path, data = volume
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["bench", str(path), "--out", str(out), "--codecs", "medgpu,jpegls",
                                   "--qualities", "3,50", "--random-weights", "--device", "cpu", "--no-progress"])
    assert res.exit_code == 0, res.output
    for text in ("Rate-distortion points", "BD-rate", "Lossless", "medgpu", "jpegls", "results.csv", "rd_curves.png"):
        assert text in res.stdout, text
    assert (out / "rd_curves.png").is_file() and (out / "results.json").is_file()
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    expected = ["medgpu"] * 2 + ["jpegls"] * len(baselines.sweep("jpegls"))
    assert [r["codec"] for r in rows if r["mode"] == "lossy"] == expected
    for r in rows:
        if r["codec"] == "jpegls" and r["mode"] == "lossy":
            nbytes, p = direct("jpegls", data, float(r["param"]))
            assert int(r["bytes"]) == nbytes and float(r["psnr"]) == pytest.approx(p, rel=1e-12)
        if r["codec"] == "medgpu":
            assert int(r["bytes"]) > 0 and r["notes"] == ""  # report and measurement agree


@pytest.mark.parametrize("args, needle", [
    (["--codecs", "jpeg2000,gif"], "unknown codec"),
    (["--qualities", "high"], "--qualities"),
    (["--max-slices", "0"], "max_slices"),
])  # fmt: skip
def test_cli_errors_are_one_line(tmp_path, volume, args, needle):
    res = CliRunner().invoke(app, ["bench", str(volume[0]), "--out", str(tmp_path), "--no-progress", *args])
    assert res.exit_code == 2 and "Traceback" not in res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medgpu: error: ") and needle in lines[0], res.stderr


def test_missing_weights(tmp_path, volume, monkeypatch):
    import medgpu.codec

    def no_weights(*args, **kwargs):
        raise FileNotFoundError(2, "No such file", "medgpu/weights/dcvc-s.pt")

    monkeypatch.setattr(medgpu.codec, "load_codec", no_weights)
    with pytest.raises(InputError, match="weights"):
        bench.run_bench([volume[0]], tmp_path, codecs=["medgpu"], device="cpu")
    small = {c: baselines.sweep(c)[:1] for c in baselines.CLASSICAL_CODECS}
    result = bench.run_bench([volume[0]], tmp_path, params=small, lossless=False, plot=False, device="cpu",
                             max_slices=2)
    assert "medgpu" in result.skipped and "medgpu" not in result.codecs
    assert result.rows[0]["shape"] == "32x28x2" and result.plot_path is None


def test_rd_points_and_bd_table():
    rows = [
        {"volume": "v", "codec": "a", "mode": "lossy", "bits_per_voxel": r, "psnr": p}
        for r, p in ((0.5, 30.0), (1.0, 36.0), (2.0, 41.0), (3.0, 40.0), (4.0, 45.0))
    ] + [{"volume": "v", "codec": "a", "mode": "lossless", "bits_per_voxel": 8.0, "psnr": 50.0},
         {"volume": "v", "codec": "a", "mode": "lossy", "bits_per_voxel": "", "psnr": ""}]
    rates, psnrs = bench.rd_points(rows, "v", "a")
    assert rates == [0.5, 1.0, 2.0, 4.0] and psnrs == [30.0, 36.0, 41.0, 45.0]  # dominated and lossless dropped
    half = [dict(r, codec="b", bits_per_voxel=r["bits_per_voxel"] / 2) for r in rows if r["bits_per_voxel"] != ""]
    table = bench.bd_table(rows + half, [("b", "a"), ("a", "a")])
    assert table[0]["bd_rate"] == pytest.approx(-50.0) and table[2]["bd_rate"] == pytest.approx(0.0, abs=1e-9)
    assert table[1]["volume"] == "**average**"
    assert bench.default_pairs(["medgpu", "x", "y"]) == [("medgpu", "x"), ("medgpu", "y")]
    assert bench.default_pairs(["x", "y", "z"]) == [("y", "x"), ("z", "x")]


def test_float_volumes_are_mapped_to_codes():
    a = np.linspace(-1.0, 1.0, 32 * 32 * 3, dtype=np.float32).reshape(32, 32, 3)
    (row,) = bench.run_baseline("jpegls", "f", a, 2, [0.0])
    assert "uint16" in row["notes"] and math.isfinite(row["psnr"]) and row["psnr"] > 90


def test_no_volumes_is_an_option_error():
    with pytest.raises(OptionError):
        bench.run_bench([], "x")


def test_medgpu_with_shipped_weights_gains_quality_with_rate(tmp_path, volume):
    result = bench.run_bench([volume[0]], tmp_path, codecs=["medgpu"], qualities=[16, 48], device="cpu")
    low, high = result.rows
    assert low["notes"] == high["notes"] == ""
    assert high["bits_per_voxel"] > low["bits_per_voxel"] and high["psnr"] > low["psnr"] > 20


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="VmHWM is Linux-only")
def test_peak_rss_counts_this_process_only():
    """A child started by a process that once held a lot of memory reports its own peak."""
    import subprocess
    import sys

    child = "from medgpu.bench import peak_rss_mib; import numpy as np; a = np.ones({n}); print(peak_rss_mib())"
    parent = ("import subprocess, sys, numpy as np; big = np.ones(60_000_000); "  # ~460 MiB held while forking
              "print(subprocess.run([sys.executable, '-c', sys.argv[1]], capture_output=True, text=True).stdout)")
    small = float(subprocess.run([sys.executable, "-c", parent, child.format(n=1)], capture_output=True,
                                 text=True, check=True).stdout)
    large = float(subprocess.run([sys.executable, "-c", child.format(n=40_000_000)], capture_output=True,
                                 text=True, check=True).stdout)
    assert small < 300 and large - small > 250  # 40e6 float64 = 305 MiB

"""Execute every notebook in notebooks/ with nbclient; a cell that raises fails the test.

The notebooks use only data shipped in dependencies (nibabel's and pydicom's test files). Without the
shipped weights (medgpu/weights/dcvc-s.pt) they run with seeded random weights
(``MEDGPU_RANDOM_WEIGHTS=1``): the plumbing is checked, the numbers mean nothing.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300


def _shipped_weights_present() -> bool:
    from medgpu.codec.registry import weights_path

    return weights_path().is_file()


def test_notebooks_are_there():
    assert len(NOTEBOOKS) >= 3, NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not _shipped_weights_present():
        monkeypatch.setenv("MEDGPU_RANDOM_WEIGHTS", "1")
    # the kernel imports this checkout's medgpu even when it is not installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the cell and its traceback
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_shows_its_outputs_and_plots(path: Path) -> None:
    """The notebooks are committed executed (notebooks/run_all.sh): every code cell has run, in
    order, without error, and the plots are there as images."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.get("execution_count") for c in code]
    assert all(isinstance(n, int) for n in counts) and counts == sorted(counts), counts
    outputs = [o for c in code for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name} has no plot in its outputs"
    assert "random weights" not in "".join(o.get("text", "") for o in outputs)  # run with the shipped weights

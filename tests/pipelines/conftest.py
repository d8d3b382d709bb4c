"""Fixtures that load scripts of ``pipelines/`` as modules (they are not part of the package)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


def load_pipeline(stem: str) -> ModuleType:
    """Import ``pipelines/<stem>.py`` (with ``pipelines/`` on the path for its own imports)."""
    spec = importlib.util.spec_from_file_location(f"medgpu_pipelines_{stem}", PIPELINES / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(PIPELINES))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(PIPELINES))
    return module


@pytest.fixture(scope="module")
def train() -> ModuleType:
    return load_pipeline("train")


@pytest.fixture(scope="module")
def probe() -> ModuleType:
    return load_pipeline("probe_full_update_parts")


@pytest.fixture(scope="module")
def threads_script() -> ModuleType:
    return load_pipeline("time_update_threads")


@pytest.fixture(scope="module")
def first_steps() -> ModuleType:
    return load_pipeline("probe_first_steps")

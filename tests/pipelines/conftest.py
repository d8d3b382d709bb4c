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


def _script(stem: str):
    """A module-scoped fixture returning ``pipelines/<stem>.py`` as a module."""
    return pytest.fixture(scope="module")(lambda: load_pipeline(stem))


train = _script("train")
probe = _script("probe_full_update_parts")
threads_script = _script("time_update_threads")
first_steps = _script("probe_first_steps")
carry_script = _script("compare_carry_over")


@pytest.fixture(scope="module")
def codec():
    """The shipped codec, loaded once per test module."""
    from medgpu.codec import load_codec

    return load_codec()

"""Fixtures for archive tests: a seeded random-weights codec and the same weights as a file."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def codec():
    """Seeded random weights: plumbing, not quality."""
    from medgpu.codec import load_codec

    return load_codec(pretrained=False)


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory) -> Path:
    """The random weights as a file, for the CLI's --weights (same hash as pretrained=False)."""
    import torch

    from medgpu.codec.registry import build_networks, export_state

    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    intra, inter = build_networks()
    torch.random.set_rng_state(state)
    path = tmp_path_factory.mktemp("weights") / "random.pt"
    torch.save(export_state(intra, inter), path)
    return path

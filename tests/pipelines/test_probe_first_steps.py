"""The first-steps probe: fixed-length gradient steps, and a curve per step count."""
from __future__ import annotations

import pytest
import torch


def test_normalised_step_moves_the_given_length_against_the_gradient(first_steps):
    a, b = torch.zeros(3, requires_grad=True), torch.ones(2, requires_grad=True)
    a.grad, b.grad = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([0.0, 4.0])
    frozen = torch.ones(1, requires_grad=True)  # no gradient: left alone
    first_steps.normalised_step([a, b, frozen], 0.5)
    assert torch.allclose(a.detach(), torch.tensor([-0.3, 0.0, 0.0]))
    assert torch.allclose(b.detach(), torch.tensor([1.0, 0.6]))
    assert float(frozen) == 1.0


@pytest.mark.parametrize("variant", ["adam", "ngd1e-3"])
def test_run_reports_the_rd_change_after_each_requested_step(first_steps, codec, variant):
    x = torch.rand(3, 1, 64, 64) * 0.2 + 0.4
    curve = first_steps.run(codec, x, 42, variant, [1, 2])
    assert sorted(curve) == [1, 2] and all(abs(v) < 100 for v in curve.values())

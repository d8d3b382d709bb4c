import torch

from medgpu.codec.intnet import ParamHead
from medgpu.codec.quant import bounded


def test_bounded_clamps_and_lets_inward_gradients_through():
    x = torch.tensor([-2.0, 0.5, 5.0, -3.0, 7.0], requires_grad=True)
    y = bounded(x, 0.0, 4.0)
    assert torch.equal(y.detach(), torch.tensor([0.0, 0.5, 4.0, 0.0, 4.0]))
    # a loss that wants every output larger: below-range values get a gradient (they may come
    # back), above-range ones do not (a step would push them further out)
    (-y).sum().backward()
    assert torch.equal(x.grad, torch.tensor([-1.0, -1.0, 0.0, -1.0, 0.0]))
    x.grad = None
    bounded(x, 0.0, 4.0).sum().backward()  # wants them smaller
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0]))


def test_a_scale_index_below_zero_can_recover_in_training():
    """The failure that froze the P-frame codec's contextual latent: with a plain clamp, a
    scale head whose output fell below index 0 got no gradient at all."""
    torch.manual_seed(0)
    head = ParamHead(4, 8, 2, num_scales=64)
    with torch.no_grad():
        head.net.layers[-1].bias[2:] = -20.0  # scale outputs at index -20, far below 0
    feats = torch.rand(1, 4, 3, 3)
    _, idx = head(feats)
    assert float(idx.max()) == 0.0
    (-idx.sum()).backward()  # the rate term asks for a larger scale
    assert float(head.net.layers[-1].bias.grad[2:].abs().sum()) > 0

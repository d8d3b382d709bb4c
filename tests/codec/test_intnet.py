import numpy as np
import torch

from medgpu.codec.intnet import ExactConv2d, ParamHead


def _int_conv_reference(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Plain int64 'same' convolution, batch 1."""
    cout, cin, k, _ = w.shape
    p = k // 2
    xp = np.pad(x[0], ((0, 0), (p, p), (p, p)))
    h, wd = x.shape[2:]
    out = np.zeros((cout, h, wd), dtype=np.int64)
    for i in range(h):
        for j in range(wd):
            patch = xp[:, i : i + k, j : j + k]
            out[:, i, j] = (w * patch[None]).reshape(cout, -1).sum(1)
    return out + b[:, None, None]


def test_exact_conv_matches_integer_arithmetic():
    torch.manual_seed(1)
    conv = ExactConv2d(5, 4, 3)
    with torch.no_grad():
        conv.weight.mul_(30)  # large weights: exercise big integers
        conv.bias.uniform_(-3, 3)
    x = torch.randint(-(2**18), 2**18, (1, 5, 6, 7)).double()
    got = conv(x, exact=True).numpy().astype(np.int64)
    w = np.round(conv.weight.detach().double().numpy() * 64).clip(-4096, 4096).astype(np.int64)
    b = np.round(conv.bias.detach().double().numpy() * 1024).astype(np.int64)
    acc = _int_conv_reference(x.numpy().astype(np.int64), w, b)
    np.testing.assert_array_equal(got[0], np.floor_divide(acc, 64))


def test_exact_conv_independent_of_threads_and_order():
    torch.manual_seed(2)
    conv = ExactConv2d(32, 16, 5)
    x = torch.randint(0, 2**20, (1, 32, 12, 12)).double()
    ref = conv(x, exact=True)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = conv(x, exact=True)
    finally:
        torch.set_num_threads(n)
    assert torch.equal(ref, one)
    # channel order changes the summation order; the exact result must not change
    perm = torch.randperm(32)
    conv2 = ExactConv2d(32, 16, 5)
    with torch.no_grad():
        conv2.weight.copy_(conv.weight[:, perm])
        conv2.bias.copy_(conv.bias)
    assert torch.equal(ref, conv2(x[:, perm], exact=True))


def test_param_head_outputs_quarter_means_and_integer_indices():
    torch.manual_seed(3)
    head = ParamHead(8, 16, 4, 64)
    feats = torch.randint(0, 2000, (1, 8, 5, 5)).double()
    mean, idx = head(feats, exact=True)
    assert torch.equal(mean * 4, torch.round(mean * 4))
    assert torch.equal(idx, torch.round(idx))
    assert idx.min() >= 0 and idx.max() <= 63
    # training arithmetic agrees with the exact arithmetic on small inputs
    tmean, tidx = head(feats.float(), exact=False)
    assert torch.allclose(tmean.double(), mean, atol=0.25 + 1e-6)

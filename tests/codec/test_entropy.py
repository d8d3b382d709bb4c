import numpy as np
import torch

from medgpu.codec.entropy import MAX_SUPPORT, TABLE_PRECISION, GaussianConditional, SymbolCoder


def test_tables_are_valid_distributions():
    g = GaussianConditional()
    sums = g.freqs.sum(1)
    assert torch.all(sums == 2**TABLE_PRECISION)
    for s in range(g.num_scales):
        hw = int(g.half_width[s])
        row = g.freqs[s, MAX_SUPPORT - hw : MAX_SUPPORT + hw + 1]
        assert torch.all(row >= 1)
        assert int(row.argmax()) == hw  # zero-mean: the mode is the centre bin
    assert torch.all(g.half_width[1:] >= g.half_width[:-1])


def test_symbol_coder_roundtrip_and_size_tracks_entropy():
    g = GaussianConditional()
    rng = np.random.default_rng(0)
    idx = torch.from_numpy(rng.integers(0, 64, size=(1, 8, 16, 16)))
    sigma = g.scales[idx]
    y = torch.from_numpy(rng.normal(size=idx.shape)) * sigma.double()
    mean = torch.zeros_like(y)
    sym = g.symbols(y, mean, idx)
    models = g.models()
    enc = SymbolCoder(models, g.half_width.numpy())
    mask = torch.from_numpy(rng.random(idx.shape) < 0.5)
    enc.encode(sym, idx, mask)
    enc.encode(sym, idx, ~mask)
    data = enc.to_bytes()
    dec = SymbolCoder(models, g.half_width.numpy(), data)
    a = dec.decode(idx, mask)
    b = dec.decode(idx, ~mask)
    assert torch.equal(a + b, sym * mask + sym * ~mask)
    # the real size is close to the model's information content
    lik = g.likelihood(sym, mean, idx.double(), noise=False)
    ideal_bits = float((-torch.log2(lik)).sum())
    assert abs(8 * len(data) - ideal_bits) < 0.05 * ideal_bits + 64


def test_symbols_are_clipped_to_the_table_support():
    g = GaussianConditional()
    idx = torch.zeros(1, 1, 1, 3, dtype=torch.long)
    y = torch.tensor([[[[1e6, -1e6, 0.2]]]], dtype=torch.float64)
    sym = g.symbols(y, torch.zeros_like(y), idx)
    hw = float(g.half_width[0])
    assert sym.flatten().tolist() == [hw, -hw, 0.0]


def test_rounded_likelihood_prices_the_coded_symbol_and_passes_a_gradient():
    """``noise=False``: the probability of round(y - mean), the symbol the coder writes, with a
    straight-through gradient to ``y`` (what the encoder-side update minimises)."""
    g = GaussianConditional()
    y = torch.tensor([0.3, 1.7, -2.4, 0.0], requires_grad=True)
    mean = torch.zeros(4)
    idx = torch.full((4,), 20.0)
    lik = g.likelihood(y, mean, idx, noise=False)
    sym = torch.round(y.detach())
    assert torch.equal(lik.detach(), g.likelihood(sym, mean, idx, noise=False).detach())
    assert torch.equal(lik, g.likelihood(y, mean, idx, noise=False))  # deterministic
    (-torch.log2(lik)).sum().backward()
    assert y.grad is not None and bool((y.grad[1:3] != 0).all())

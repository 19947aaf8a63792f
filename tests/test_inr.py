"""Tests for nngraph/inr/: SIREN conventions, batched fitting, checkpoints."""

import pytest
import torch
from sklearn.datasets import load_digits

from nngraph import forward, from_checkpoint, to_weights
from nngraph.data.build import inr_seed
from nngraph.inr import (PRESETS, Siren, SirenConfig, fit, grid, grid_axes, init_params, inr_seeds,
                         parse_convention, psnr, save_checkpoint, stacked_forward)


def digits(n, dtype=torch.float32):
    d = load_digits()
    return torch.tensor(d.images[:n], dtype=dtype).reshape(n, 64) / 16.0


def test_grid_is_row_major_in_unit_square():
    g = grid(3, 4)
    assert g.shape == (12, 2)
    assert torch.equal(g[0], torch.tensor([-1.0, -1.0]))
    assert torch.equal(g[3], torch.tensor([-1.0, 1.0]))      # end of the first row: x moves
    assert torch.equal(g[4], torch.tensor([0.0, -1.0]))      # second row: y moves
    assert torch.equal(g[-1], torch.tensor([1.0, 1.0]))


def test_fit_reaches_target_psnr_within_budget():
    torch.manual_seed(0)
    res = fit(digits(6), grid(8), views=1, steps=300, lr=1e-3, target_psnr=35.0, progress=False)
    assert bool((res.psnr >= 35.0).all()), res.psnr
    assert bool((res.steps < 300).all())                     # stopped early, every one
    # The reported PSNR is that of the returned weights.
    for k in range(len(res)):
        g = res.graph(k)
        out = forward(g, grid(8)).squeeze(-1)
        assert float(psnr(out[None], digits(6)[k:k + 1])) == pytest.approx(float(res.psnr[k]), abs=1e-3)


def test_batched_fit_equals_fitting_each_alone(monkeypatch):
    # Gradients in blocks of 4 INRs (of the 6 in the batch, fewer as they stop early).
    monkeypatch.setattr('nngraph.inr.fitting._BLOCK_FLOATS', 4 * 64 * 32)
    x = digits(3, torch.float64)
    seeds = torch.tensor([[5, 6], [7, 8], [9, 10]])
    batched = fit(x, grid(8, dtype=torch.float64), views=2, steps=25, seeds=seeds, progress=False,
                  target_psnr=30.0)
    for n in range(3):
        alone = fit(x[n:n + 1], grid(8, dtype=torch.float64), views=2, steps=25, seeds=seeds[n:n + 1],
                    progress=False, target_psnr=30.0)
        for wb, wa in zip(batched.weights + batched.biases, alone.weights + alone.biases):
            torch.testing.assert_close(wb[2 * n:2 * n + 2], wa, rtol=1e-9, atol=1e-10)
        assert torch.equal(batched.steps[2 * n:2 * n + 2], alone.steps)


def test_fit_is_adam_on_the_reference_siren():
    """One INR fitted by fit() equals the Siren module trained by torch.optim.Adam."""
    x = digits(1, torch.float64)
    coords = grid(8, dtype=torch.float64)
    config = SirenConfig((2, 16, 16, 1), w0=30.0, first_w0=20.0, init='dwsnets', output_offset=0.5)
    ref = Siren(config, seed=11).double()
    opt = torch.optim.Adam(ref.parameters(), lr=2e-3)
    for _ in range(20):
        opt.zero_grad()
        loss = (ref(coords).squeeze(-1) - x[0]).pow(2).mean()
        loss.backward()
        opt.step()
    res = fit(x, coords, hidden=(16, 16), w0=30.0, first_w0=20.0, init='dwsnets', output_offset=0.5,
              steps=20, lr=2e-3, seeds=torch.tensor([[11]]), progress=False)
    for l, lin in enumerate(ref.layers):
        torch.testing.assert_close(res.weights[l][0], lin.weight.detach(), rtol=1e-8, atol=1e-10)
        offset = 0.5 if l == len(ref.layers) - 1 else 0.0
        torch.testing.assert_close(res.biases[l][0], lin.bias.detach() + offset, rtol=1e-8, atol=1e-10)


def test_graph_records_conventions_and_computes_the_whole_inr():
    x = digits(2)
    res = fit(x, grid(8), views=1, hidden=(8, 8), first_w0=10.0, output_offset=0.5, init='zero_bias',
              steps=5, progress=False)
    g = res.graph(1)
    assert g.activation == ('sine:10.0', 'sine:30.0', 'identity')   # the first layer's own w0
    assert parse_convention(g.convention) == {'w0': 30.0, 'first_w0': 10.0, 'init': 'zero_bias',
                                              'output_offset': 0.5}
    W, b = to_weights(g)
    W_raw, b_raw = [w[1:2] for w in res.weights], [bb[1:2] for bb in res.biases]
    b_raw[-1] = b_raw[-1] - 0.5                                   # the network as trained
    expect = stacked_forward(W_raw, b_raw, grid(8), res.config)[0]
    torch.testing.assert_close(forward(g, grid(8)), expect, rtol=1e-5, atol=1e-5)


def test_every_inr_starts_from_its_own_network_by_default():
    res = fit(digits(2), grid(8), views=2, steps=0, seed=4, progress=False)
    W0 = res.weights[0]                                       # steps=0: the initial networks
    assert not torch.equal(W0[0], W0[2])                      # view 0 of signals 0 and 1 differ
    assert not torch.equal(W0[0], W0[1])                      # views of one signal differ
    assert res.seeds.unique().numel() == 4
    assert torch.equal(res.seeds, inr_seeds(4, 2, 2).reshape(-1))
    assert torch.equal(W0[3], init_params(res.config, torch.Generator().manual_seed(int(res.seeds[3])))[0][0])
    # The same seeds as a build's inr_seed (signal index as object id).
    assert torch.equal(inr_seeds(4, 2, 2), inr_seed(4, torch.tensor([[0], [1]]), torch.tensor([0, 1])))
    # A signal's start does not depend on the others in the call.
    alone = fit(digits(2)[1:], grid(8), views=2, steps=0, seeds=res.seeds.view(2, 2)[1:], progress=False)
    assert torch.equal(alone.weights[0], W0[2:])


def test_shared_per_view_init_is_the_old_behaviour():
    res = fit(digits(2), grid(8), views=3, steps=0, seed=4, init_sharing='shared_per_view', progress=False)
    W0 = res.weights[0]                                       # steps=0: the initial networks
    assert torch.equal(W0[0], W0[3])                          # view 0 of signals 0 and 1
    assert not torch.equal(W0[0], W0[1])                      # views of one signal differ
    assert torch.equal(res.seeds, torch.tensor([4, 5, 6, 4, 5, 6]))
    assert torch.equal(res.view_index, torch.tensor([0, 1, 2, 0, 1, 2]))
    assert torch.equal(W0[1], init_params(res.config, torch.Generator().manual_seed(5))[0][0])


def test_siren_module_equals_stacked_forward_and_its_graph():
    config = SirenConfig((2, 8, 8, 3), w0=25.0, first_w0=15.0, output_offset=0.25)
    m = Siren(config, seed=3)
    coords = grid(5)
    W = [l.weight.detach()[None] for l in m.layers]
    b = [l.bias.detach()[None] for l in m.layers]
    torch.testing.assert_close(stacked_forward(W, b, coords, config)[0], m(coords))
    torch.testing.assert_close(forward(m.to_graph(), coords), m(coords).detach(), rtol=1e-5, atol=1e-6)


def test_save_checkpoint_reads_back_with_no_arguments(tmp_path):
    res = fit(digits(1), grid(8), steps=3, output_offset=0.5, progress=False)
    path = tmp_path / 'inr.pt'
    save_checkpoint(path, [w[0] for w in res.weights], [b[0] for b in res.biases], res.activation,
                    psnr=float(res.psnr[0]), convention=res.config.convention)
    g = from_checkpoint(path)
    assert g.activation == 'sine:30.0'
    torch.testing.assert_close(forward(g, grid(8)), forward(res.graph(0), grid(8)))
    assert not list(tmp_path.glob('.*tmp'))                   # no temp file left behind
    obj = torch.load(path, weights_only=True)
    assert obj['activation'] == 'sine:30.0' and 'layers.0.weight' in obj['state_dict']


def test_save_checkpoint_rejects_bad_metadata(tmp_path):
    with pytest.raises(TypeError, match="metadata 'bad'"):
        save_checkpoint(tmp_path / 'x.pt', [torch.zeros(2, 2)], [torch.zeros(2)], 'relu', bad=[1])
    assert not (tmp_path / 'x.pt').exists()


@pytest.mark.parametrize('kwargs, message', [
    (dict(signals=torch.zeros(0, 64)), 'no signals'),
    (dict(signals=torch.zeros(2, 64), coords=grid(7)), 'coords must be'),
    (dict(signals=torch.full((2, 64), float('nan'))), 'NaN'),
    (dict(views=0), 'views must be at least 1'),
    (dict(seeds=torch.zeros(2, 2, dtype=torch.long)), 'seeds must have shape'),
    (dict(init='xavier'), 'unknown SIREN init'),
    (dict(preset='kaiming'), 'unknown SIREN preset'),
    (dict(preset='dwsnets', w0=20.0), "preset='dwsnets' fixes w0"),
    (dict(init_sharing='shared'), 'unknown init_sharing'),
    (dict(seed=1 << 22), 'independent seeds need 0 <= seed < 2\\*\\*22'),
    (dict(w0=0.0), 'w0 must be finite and non-zero'),
    (dict(signals=torch.zeros(2, 64, dtype=torch.long)), 'floating point'),
])
def test_fit_rejects_bad_input(kwargs, message):
    args = dict(signals=torch.zeros(2, 64), coords=grid(8), views=1, steps=1, progress=False)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        fit(args.pop('signals'), args.pop('coords'), **args)


def test_fit_runs_on_gpu_like_on_cpu():
    if not torch.cuda.is_available():
        pytest.skip('no CUDA device')
    x = digits(4, torch.float64)
    cpu = fit(x, grid(8, dtype=torch.float64), steps=10, progress=False)
    gpu = fit(x.cuda(), grid(8, dtype=torch.float64).cuda(), steps=10, progress=False)
    assert gpu.weights[0].is_cuda
    torch.testing.assert_close(gpu.weights[1].cpu(), cpu.weights[1], rtol=1e-6, atol=1e-8)


def test_save_checkpoint_per_layer_activation(tmp_path):
    """A first-layer w0 of its own is stored as a list of per-layer strings."""
    res = fit(digits(1), grid(8), steps=3, first_w0=15.0, progress=False)
    path = tmp_path / 'inr.pt'
    save_checkpoint(path, [w[0] for w in res.weights], [b[0] for b in res.biases], res.activation)
    obj = torch.load(path, weights_only=True)
    assert obj['activation'] == ['sine:15.0', 'sine:30.0', 'identity']
    g = from_checkpoint(path)  # the per-layer list is read from the checkpoint itself
    assert g.activation == ('sine:15.0', 'sine:30.0', 'identity')
    torch.testing.assert_close(forward(g, grid(8)), forward(res.graph(0), grid(8)))


def test_fit_restores_the_thread_count():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fit(digits(2), grid(8), steps=2, threads=1, progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match='threads must be a positive'):
        fit(digits(2), grid(8), steps=2, threads=0, progress=False)


@pytest.mark.parametrize('hidden, channels, height, width, first_w0, offset', [
    ((16, 16), 1, 8, 8, 20.0, 0.5),      # the usual INR, its own first-layer w0 and offset
    ((8,), 1, 6, 7, None, 0.0),          # one hidden layer, rectangular grid
    ((8, 8, 8), 3, 5, 4, None, 0.25),    # three hidden layers, three channels
])
def test_grid_path_equals_generic_path(hidden, channels, height, width, first_w0, offset, monkeypatch):
    """The factorised first layer on a grid gives the INRs of the generic path."""
    monkeypatch.setattr('nngraph.inr.fitting._BLOCK_FLOATS', 2 * height * width * max(hidden))   # blocks of 2 INRs
    torch.manual_seed(0)
    x = torch.rand(3, height * width, channels, dtype=torch.float64)
    coords = grid(height, width, dtype=torch.float64)
    kw = dict(hidden=hidden, first_w0=first_w0, output_offset=offset, steps=30, lr=2e-3,
              progress=False, seeds=torch.tensor([[1], [2], [3]]))
    fast = fit(x, coords, separable=True, **kw)
    ref = fit(x, coords, separable=False, **kw)
    for a, b in zip(fast.weights + fast.biases, ref.weights + ref.biases):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(fast.psnr, ref.psnr, rtol=1e-10, atol=1e-10)
    start = fit(x, coords, separable=False, **dict(kw, steps=0))
    assert float((ref.weights[0] - start.weights[0]).abs().max()) > 1e-3   # they did move


def test_grid_axes_and_the_generic_fallback():
    ys, xs = grid_axes(grid(3, 4))
    assert torch.equal(ys, torch.linspace(-1, 1, 3)) and torch.equal(xs, torch.linspace(-1, 1, 4))
    shuffled = grid(4)[torch.randperm(16, generator=torch.Generator().manual_seed(0))]
    assert grid_axes(shuffled) is None
    assert grid_axes(torch.rand(16, 3)) is None
    # Off-grid coordinates take the generic path: same INRs as the grid path on the same pixels.
    x = digits(2, torch.float64)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(1))
    on_grid = fit(x, grid(8, dtype=torch.float64), steps=10, progress=False)
    off_grid = fit(x[:, perm], grid(8, dtype=torch.float64)[perm], steps=10, progress=False)
    for a, b in zip(on_grid.weights, off_grid.weights):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    with pytest.raises(ValueError, match='separable=True needs coords on a product grid'):
        fit(x, grid(8, dtype=torch.float64)[perm], steps=1, separable=True, progress=False)


def _uniform_bound_ok(t, bound):
    """max |t| is below ``bound`` and, over enough draws, close to it."""
    m = float(t.abs().max())
    return m <= bound and m > bound * (1 - 20 / t.numel())


@pytest.mark.parametrize('name', ['siren', 'nfn', 'dwsnets', 'neural-graphs'])
def test_preset_initial_weights_follow_the_published_formulas(name):
    sizes = (2, 512, 512, 64)          # wide, so max |w| lands close to the bound
    config = SirenConfig.preset(name, layer_sizes=sizes)
    assert config.w0 == config.first == 30.0
    W, b = init_params(config, torch.Generator().manual_seed(0), dtype=torch.float64)
    linear = [1 / d ** 0.5 for d in sizes[:-1]]                      # nn.Linear's default bound
    if name in ('siren', 'nfn'):
        assert _uniform_bound_ok(W[0], 1 / 2)                         # U(+-1/d_in)
        assert _uniform_bound_ok(W[1], (6 / 512) ** 0.5 / 30)
        assert _uniform_bound_ok(W[2], (6 / 512) ** 0.5 / 30)         # the last layer too
        for l in range(3):
            assert _uniform_bound_ok(b[l], linear[l])
        assert config.output_offset == 0.0
    else:
        assert _uniform_bound_ok(W[0], (6 / 2) ** 0.5 / 30)           # is_first never set: +-0.058
        assert float(W[0].abs().max()) < 0.058
        assert _uniform_bound_ok(W[1], (6 / 512) ** 0.5 / 30)
        assert not b[0].any() and not b[1].any()                      # zero sine biases
        assert _uniform_bound_ok(W[2], linear[2])                     # plain nn.Linear last layer
        assert _uniform_bound_ok(b[2], linear[2])
        assert config.output_offset == 0.5


def test_fit_with_a_preset_records_it_and_folds_the_offset():
    x = digits(2)
    res = fit(x, grid(8), preset='dwsnets', steps=0, seed=3, progress=False)
    assert res.config == SirenConfig.preset('dwsnets', layer_sizes=(2, 32, 32, 1))
    g = res.graph(1)
    assert g.activation == 'sine:30.0'
    assert parse_convention(g.convention) == {'w0': 30.0, 'first_w0': 30.0, 'init': 'dwsnets',
                                              'output_offset': 0.5}
    W, b = init_params(res.config, torch.Generator().manual_seed(int(res.seeds[1])))
    _, gb = to_weights(g)
    torch.testing.assert_close(gb[-1], b[-1] + 0.5)                  # offset folded into the last bias
    assert not gb[0].any()                                            # first biases still zero
    torch.testing.assert_close(forward(g, grid(8)), Siren(res.config, seed=int(res.seeds[1]))(grid(8)),
                               rtol=1e-5, atol=1e-6)
    assert set(PRESETS) == {'siren', 'nfn', 'dwsnets', 'neural-graphs'}


def test_old_convention_strings_still_parse():
    old = 'siren:w0=15.0,first_w0=15.0,init=siren,output_offset=0.0'
    assert parse_convention(old) == {'w0': 15.0, 'first_w0': 15.0, 'init': 'siren', 'output_offset': 0.0}
    legacy = SirenConfig((2, 8, 1), init='zero_bias')
    assert parse_convention(legacy.convention)['init'] == 'zero_bias'
    _, b = init_params(legacy, torch.Generator().manual_seed(0))
    W_siren, _ = init_params(SirenConfig((2, 8, 1)), torch.Generator().manual_seed(0))
    assert not b[0].any() and torch.equal(init_params(legacy, torch.Generator().manual_seed(0))[0][0], W_siren[0])


@pytest.mark.parametrize('kw, message', [
    (dict(lr=float('nan')), 'lr must be a finite number > 0, got nan'),
    (dict(lr=0.0), 'lr must be a finite number > 0, got 0.0'),
    (dict(lr=-1e-3), 'lr must be a finite number > 0'),
    (dict(lr=float('inf')), 'lr must be a finite number > 0, got inf'),
    (dict(lr=1e38), r'lr=1e\+38 is too large'),
    (dict(eps=0.0), 'eps must be a finite number > 0'),
    (dict(betas=(0.9, 1.0)), r'betas must be two numbers in \[0, 1\)'),
])
def test_fit_refuses_adam_settings_that_cannot_fit(kw, message):
    """Issue 19 row 7: a NaN lr fitted NaN networks without a word; 1e38 overflowed deep in torch."""
    with pytest.raises(ValueError, match=message):
        fit(digits(1), grid(8), steps=2, progress=False, **kw)

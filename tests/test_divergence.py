"""Divergence: fit never leaves NaN or infinite weights behind, it keeps the last finite ones
(nbcnn.guard), and a grid cell reports its own fit's divergence, not its warm-up's."""

from __future__ import annotations

import os
import textwrap

import numpy as np
import pytest

import nbcnn
from nbcnn import harness, optim

ARCH = "conv(2,3)-relu-flatten-dense(3)"


def data(n=40):
    rng = np.random.default_rng(0)
    # strictly positive pixels: a -inf weight of the first filter gives -inf before the ReLU
    return rng.random((n, 1, 6, 6), dtype=np.float32) * 0.9 + 0.1, rng.integers(0, 3, n)


class Breaks(optim.SGD):
    """SGD whose update number ``at`` (1-based) writes ``value`` into the first conv weight, as an
    overflowing update would; ``after[k]`` holds the weights after update k + 1."""

    def __init__(self, at, value):
        super().__init__(lr=0.01)
        self.at, self.value, self.after = at, value, []

    def step(self, backend, params_and_grads):
        super().step(backend, params_and_grads)
        self.after.append([backend.to_numpy(p).copy() for p, _ in params_and_grads])
        if self.steps == self.at:
            w = params_and_grads[0][0]
            host = backend.to_numpy(w).copy()
            host.reshape(-1)[0] = self.value
            backend.copy_into(w, backend.from_numpy(host))


def model():
    m = nbcnn.build(ARCH, input_shape=(1, 6, 6), backend="numpy", seed=0)
    m.snapshot_every = 4
    return m


def params(m):
    return [m.backend.to_numpy(layer.params[name]).copy() for layer, name in m.parameters()]


def test_an_update_to_nan_keeps_the_weights_from_before_the_update():
    m, x, y = model(), *data()
    opt = Breaks(at=3, value=np.nan)              # the loss of the next batch is NaN
    with pytest.raises(nbcnn.TrainingDiverged, match=r"loss became nan at epoch 1, batch 4 "
                                                     r"of 10; an update since epoch 1, batch 1 "
                                                     r"made the weights NaN or infinite"):
        m.fit((x, y), epochs=1, batch_size=4, optimizer=opt, verbose=False)
    got = params(m)
    assert all(np.isfinite(p).all() for p in got)
    # the snapshot before batch 1 (every 4 batches): the weights of no batch later than that
    fresh = params(model())
    for g, f in zip(got, fresh):
        np.testing.assert_array_equal(g, f)


def test_an_update_to_inf_that_the_loss_does_not_show_is_caught():
    m, x, y = model(), *data()
    opt = Breaks(at=6, value=-np.inf)             # ReLU turns the -inf channel into 0
    with pytest.raises(nbcnn.TrainingDiverged, match=r"an update since epoch 1, batch 5 made the "
                                                     r"weights NaN or infinite \(found before "
                                                     r"epoch 1, batch 9\); the model keeps its "
                                                     r"last finite weights, from before epoch 1, "
                                                     r"batch 5"):
        m.fit((x, y), epochs=1, batch_size=4, optimizer=opt, verbose=False)
    for g, want in zip(params(m), opt.after[3]):   # before batch 5 = after update 4
        np.testing.assert_array_equal(g, want)


def test_an_overflow_in_the_last_batches_is_caught_at_the_end_of_the_epoch():
    m, x, y = model(), *data()
    opt = Breaks(at=10, value=-np.inf)            # the epoch's last update
    with pytest.raises(nbcnn.TrainingDiverged, match=r"found at the end of epoch 1 \(10 batches\)"):
        m.fit((x, y), epochs=2, batch_size=4, optimizer=opt, verbose=False)
    for g, want in zip(params(m), opt.after[7]):   # before batch 9 = after update 8
        np.testing.assert_array_equal(g, want)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_a_nan_loss_without_a_broken_update_keeps_the_weights_of_that_moment():
    m, x, y = model(), *data()
    m.fit((x, y), epochs=1, batch_size=4, verbose=False)
    before = params(m)
    bad = x.copy()
    bad[:] = 3e38                                  # finite, but the logits overflow
    with pytest.warns(UserWarning, match="expected in"), \
            pytest.raises(nbcnn.TrainingDiverged, match=r"batch 1 of 10; the model keeps its "
                                                        r"last finite weights, from before that"):
        m.fit((bad, y), epochs=1, batch_size=4, verbose=False)
    for g, b in zip(params(m), before):
        np.testing.assert_array_equal(g, b)


def test_weights_that_are_not_finite_before_training_are_refused():
    m, x, y = model(), *data()
    w = m.layers[0].params["weight"]
    w[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite values before training"):
        m.fit((x, y), epochs=1, batch_size=4, verbose=False)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_a_cell_that_diverges_reports_its_own_fit_not_the_warm_up(tmp_path):
    path = tmp_path / "d.toml"
    path.write_text(textwrap.dedent("""
        name = "d"
        save_models = false
        [fixed]
        dataset = "shapes"
        data = { n = 160, size = 12 }
        arch = "conv(4,3)-relu-maxpool(2)-flatten-dense(4)"
        batch_size = 32
        lr = 1e30
        """))
    runs = harness.run_grid(str(path), str(tmp_path / "res"), verbose=False, log=lambda m: None)
    error = runs["error"].iloc[0]
    assert runs["status"].iloc[0] == "failed" and "TrainingDiverged" in error
    assert "of 5" in error, error                  # 144 training images: 5 batches, not the 1 of
    assert os.path.isdir(tmp_path / "res" / "d")   # the warm-up's single batch

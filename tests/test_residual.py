"""Residual blocks: every backend against numpy_ref, the fused sum, shape errors, nesting, and a
model's treatment of the layers inside blocks (weight keys, init, training mode, gradients,
save/load, training)."""

from __future__ import annotations

import numpy as np
import pytest

import nbcnn
from conftest import assert_close, backend_or_skip
from nbcnn import data, layers as L, optim
from nbcnn.backends.numpy_ref import NumpyBackend


def basic_block(c, stride=1, c_in=None):
    """A ResNet basic block; a projection shortcut when the shape changes."""
    body = [L.Conv2D(c, 3, stride=stride, padding=1, bias=False), L.BatchNorm2D(), L.ReLU(),
            L.Conv2D(c, 3, padding=1, bias=False), L.BatchNorm2D()]
    shortcut = None
    if stride != 1 or (c_in is not None and c_in != c):
        shortcut = [L.Conv2D(c, 1, stride=stride, bias=False), L.BatchNorm2D()]
    return L.Residual(body, shortcut)


# (block maker, input shape (N, C, H, W)): odd sizes, batch 1, non-square, stride 2, C > 1
BLOCK_CASES = {
    "identity": (lambda: basic_block(3), (2, 3, 7, 5)),
    "projection-stride2": (lambda: basic_block(4, stride=2, c_in=3), (3, 3, 9, 6)),
    "projection-batch1": (lambda: basic_block(5, c_in=2), (1, 2, 5, 8)),
    "nested": (lambda: L.Residual([L.Conv2D(3, 3, padding="same"), L.Residual([L.Tanh()]),
                                   L.Residual([L.Conv2D(3, 1)], [L.Conv2D(3, 1, bias=False)])]),
               (2, 3, 6, 7)),
    "activation-last": (lambda: L.Residual([L.Conv2D(3, 3, stride=2, padding=1), L.Sigmoid()],
                                           [L.AvgPool2D(1, 2)]), (2, 3, 7, 7)),
}


def _run_block(make, x, dy, backend):
    """Output, input gradient, every gradient and buffer of a block built from seed 0."""
    block = make()
    block.build(x.shape[1:], backend, np.random.default_rng(0))
    y = block._forward(backend.from_numpy(x), True)
    y = backend.to_numpy(y).copy()
    dx = backend.to_numpy(block._backward(backend.from_numpy(dy)))
    return y, dx, block.get_grads(), block.get_weights()


@pytest.mark.parametrize("case", sorted(BLOCK_CASES))
@pytest.mark.parametrize("name", ["numba", "opencl"])
def test_block_matches_the_reference(case, name, rng):
    backend = backend_or_skip(name)
    make, shape = BLOCK_CASES[case]
    x = rng.standard_normal(shape).astype(np.float32)
    out_shape = make().output_shape(shape[1:])
    dy = rng.standard_normal((shape[0], *out_shape)).astype(np.float32)
    want = _run_block(make, x, dy, NumpyBackend(np.float32))
    got = _run_block(make, x, dy, backend)
    assert_close(got[0], want[0], rtol=2e-4, what="forward")
    assert_close(got[1], want[1], rtol=5e-4, atol=5e-5, what="dx")
    for kind, g, w in (("grad", got[2], want[2]), ("weights", got[3], want[3])):
        assert sorted(g) == sorted(w)
        for key in w:
            assert_close(g[key], w[key], rtol=5e-4, atol=5e-5, what=f"{kind} {key}")


class RecordingBackend(NumpyBackend):
    """numpy_ref that records, for every add, which operand (if any) took the sum in place."""

    def __init__(self):
        super().__init__(np.float64)
        self.targets = []

    def add(self, a, b, out=None):
        self.targets.append("a" if out is a and out is not None else
                            "b" if out is b and out is not None else None)
        return super().add(a, b, out=out)


@pytest.mark.parametrize("body,shortcut,x_shape,forward,backward", [
    # conv output and conv input gradient are new arrays nobody keeps: summed in place
    (lambda: [L.Conv2D(2, 3, padding=1)], lambda: None, (2, 2, 4, 4), "a", "a"),
    # a body ending in an activation keeps its output; the identity is the block's own input
    (lambda: [L.Conv2D(2, 3, padding=1), L.ReLU()], lambda: None, (2, 2, 4, 4), None, "a"),
    # ... but a projection's output is free
    (lambda: [L.Conv2D(2, 3, padding=1), L.ReLU()], lambda: [L.Conv2D(2, 1)], (2, 2, 4, 4),
     "b", "a"),
    # dropout (the identity at evaluation) and flatten hand on their input: never written to
    (lambda: [L.Dropout(0.5)], lambda: [L.Dense(4)], (2, 4), "b", "b"),
    (lambda: [L.Flatten()], lambda: [L.Flatten()], (2, 3, 2, 2), None, None),
])
def test_the_sum_accumulates_in_place_only_into_arrays_nobody_keeps(body, shortcut, x_shape,
                                                                    forward, backward):
    backend = RecordingBackend()
    block = L.Residual(body(), shortcut(), backend=backend)
    x = np.random.default_rng(0).standard_normal(x_shape)
    x_before = x.copy()
    y = block.forward(x, training=False)
    dy = np.random.default_rng(1).standard_normal(y.shape)
    dy_before = dy.copy()
    dx = block.backward(dy)
    assert backend.targets == [forward, backward]
    np.testing.assert_array_equal(x, x_before)      # the caller's arrays are never written to
    np.testing.assert_array_equal(dy, dy_before)
    assert dx.shape == x.shape


def test_shape_mismatch_is_an_error_naming_both_shapes():
    with pytest.raises(ValueError, match=r"Residual: the body gives \(N, 8, 4, 4\) but the identity "
                                         r"shortcut passes on \(N, 3, 8, 8\)"):
        nbcnn.build("residual(conv(8,3,1,stride=2))-flatten-dense(2)", input_shape=(3, 8, 8))
    with pytest.raises(ValueError, match=r"body gives \(N, 8, 4, 4\) but the shortcut gives "
                                         r"\(N, 8, 8, 8\)"):
        nbcnn.Sequential(L.Residual([L.Conv2D(8, 3, stride=2, padding=1)], [L.Conv2D(8, 1)]),
                         L.Flatten(), L.Dense(2), input_shape=(3, 8, 8))


def test_paths_as_a_layer_a_list_or_a_sequential():
    block = L.Residual(nbcnn.Sequential(L.Conv2D(2, 3, padding=1), L.ReLU()), L.Conv2D(2, 1))
    assert [type(layer) for layer in block.body] == [L.Conv2D, L.ReLU]
    assert [type(layer) for layer in block.shortcut] == [L.Conv2D]
    assert block.spec() == "residual(conv(2,3,1)-relu,conv(2,1))"
    assert L.Residual((L.ReLU(),), []).shortcut == []          # an empty shortcut: the identity


def test_bad_blocks():
    with pytest.raises(ValueError, match="body needs at least one layer"):
        L.Residual([])
    with pytest.raises(TypeError, match="shortcut item 1 is str"):
        L.Residual([L.ReLU()], [L.ReLU(), "relu"])
    with pytest.raises(TypeError, match="body must be a layer"):
        L.Residual(3)


NESTED = ("conv(4,3,same)-relu-residual(conv(4,3,same)-residual(relu-conv(4,3,same,bias=false))"
          "-batchnorm,conv(4,1))-relu-flatten-dense(3)")


@pytest.fixture
def nested():
    return nbcnn.build(NESTED, input_shape=(2, 6, 5), backend="numpy", seed=0)


def test_weights_are_keyed_as_a_nested_state_dict(nested):
    keys = list(nested.get_weights())
    assert keys == ["0.weight", "0.bias", "2.body.0.weight", "2.body.0.bias",
                    "2.body.1.body.1.weight", "2.body.2.weight", "2.body.2.bias",
                    "2.body.2.running_mean", "2.body.2.running_var", "2.shortcut.0.weight",
                    "2.shortcut.0.bias", "5.weight", "5.bias"]
    assert [k for k, _ in nested.named_layers()] == [
        "0", "1", "2.body.0", "2.body.1.body.0", "2.body.1.body.1", "2.body.2", "2.shortcut.0",
        "3", "4", "5"]
    assert len(nested.parameters()) == 11
    assert nested.count_params() == (2 * 9 * 4 + 4) + (4 * 9 * 4 + 4) + 4 * 9 * 4 + 8 + \
        (4 * 4 + 4) + (120 * 3 + 3)


def test_set_weights_through_blocks(nested):
    other = nbcnn.build(NESTED, input_shape=(2, 6, 5), backend="numpy", seed=1)
    x = np.random.default_rng(0).random((3, 2, 6, 5), dtype=np.float32)
    assert not np.allclose(other.predict(x), nested.predict(x))
    other.set_weights(nested.get_weights())
    np.testing.assert_array_equal(other.predict(x), nested.predict(x))
    with pytest.raises(ValueError, match=r"layer 2: Residual: unknown weight name 'body.7.weight'"):
        other.set_weights({"2.body.7.weight": np.zeros(3)})
    with pytest.raises(ValueError, match=r"layer 2: Conv2D\(4, 1x1\): weight 'weight' must have "
                                         r"shape \(4, 4, 1, 1\)"):
        other.set_weights({"2.shortcut.0.weight": np.zeros((4, 4, 3, 3))})
    with pytest.raises(ValueError, match=r"unknown weight name 'x.weight'"):
        other.set_weights({"x.weight": np.zeros(3)})


def test_summary_shows_the_nesting(nested):
    text = nested.summary()
    assert "\nResidual " in text
    assert "\n  body.0: Conv2D(4, 3x3) " in text
    assert "\n  body.1: Residual " in text
    assert "\n    body.0: ReLU " in text and "\n    shortcut: identity" in text
    assert "\n  shortcut.0: Conv2D(4, 1x1) " in text
    assert f"{nested.count_params():,} trainable parameters" in text


def test_activations_are_the_top_level_layers_outputs(nested):
    x = np.random.default_rng(0).random((2, 2, 6, 5), dtype=np.float32)
    outs = nested.activations(x)
    assert [o.shape for o in outs] == [(2, 4, 6, 5)] * 4 + [(2, 120), (2, 3)]
    np.testing.assert_allclose(outs[-1], nested.predict(x), rtol=1e-6)


def test_layers_inside_blocks_get_the_model_treatment():
    model = nbcnn.build("conv(8,3,same)-residual(conv(8,3,same)-batchnorm-relu-conv(8,3,same)-"
                        "batchnorm,conv(8,1)-batchnorm)-relu-residual(conv(8,3,same)-"
                        "dropout(0.5))-sigmoid-flatten-dense(2)", input_shape=(3, 6, 6),
                        backend="numpy")
    first, block, _, last = model.layers[:4]
    # 'auto' init: He before a ReLU, also when that ReLU follows the block (the body's last
    # conv, the shortcut's conv) or is inside it (the conv before the block meets body.0 first)
    assert first.resolved_init == "glorot"        # the body's first layer is a conv, not a ReLU
    assert [block.body[0].resolved_init, block.body[3].resolved_init,
            block.shortcut[0].resolved_init] == ["he"] * 3
    assert last.body[0].resolved_init == "glorot"  # a sigmoid follows that block
    assert first.init == block.body[0].init == "auto"     # the configs keep what was written
    # the first layer needs no input gradient; inner first layers of later blocks do
    assert first.need_input_grad is False and block.body[0].need_input_grad is True
    # training mode reaches the inner layers
    model._set_training(False)
    assert last.body[1].training is False and block.shortcut[1].training is False
    model._set_training(True)
    assert last.body[1].training is True


def test_a_block_as_the_first_layer_needs_no_input_gradient():
    model = nbcnn.build("residual(conv(2,3,same),conv(2,1))-flatten-dense(2)", input_shape=(1, 4, 4),
                        backend="numpy")
    block = model.layers[0]
    assert block.need_input_grad is False
    assert block.body[0].need_input_grad is False and block.shortcut[0].need_input_grad is False


def test_training_updates_inner_parameters_and_batchnorm_buffers_deterministically():
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 3, 8, 8), dtype=np.float32), rng.integers(0, 2, 16)

    def train(seed):
        model = nbcnn.build("conv(4,3,same)-relu-residual(conv(4,3,same)-batchnorm-relu-"
                            "dropout(0.3)-conv(4,3,same)-batchnorm)-relu-globalavgpool-dense(2)",
                            input_shape=(3, 8, 8), backend="numba", seed=seed)
        before = model.get_weights()
        model.fit((x, y), epochs=2, batch_size=8, optimizer=optim.SGD(lr=0.1, momentum=0.9),
                  verbose=False)
        return before, model.get_weights()

    before, after = train(0)
    for key in ("2.body.0.weight", "2.body.5.weight", "2.body.5.bias"):
        assert not np.allclose(before[key], after[key]), key
    assert not np.allclose(after["2.body.1.running_mean"], 0)
    _, again = train(0)
    for key, value in after.items():
        np.testing.assert_array_equal(again[key], value, err_msg=key)


@pytest.mark.parametrize("name", ["numba", "opencl"])
def test_training_a_residual_model_matches_the_reference(name):
    backend_or_skip(name)
    rng = np.random.default_rng(1)
    x, y = rng.random((24, 3, 8, 8), dtype=np.float32), rng.integers(0, 2, 24)
    spec = ("conv(4,3,same)-residual(conv(4,3,same)-batchnorm-relu-conv(4,3,same)-batchnorm,"
            "conv(4,1)-batchnorm)-relu-residual(conv(4,3,same))-globalavgpool-dense(2)")

    def history(backend):
        model = nbcnn.build(spec, input_shape=(3, 8, 8), backend=backend, seed=2)
        return model.fit((x, y), epochs=2, batch_size=8, verbose=False,
                         optimizer=optim.SGD(lr=0.05, momentum=0.9))["train_loss"]
    np.testing.assert_allclose(history(name), history("numpy"), rtol=1e-3)


def test_save_and_load_a_residual_model(tmp_path):
    model = nbcnn.build(NESTED, input_shape=(2, 6, 5), backend="numba", seed=3)
    rng = np.random.default_rng(0)
    x, y = rng.random((12, 2, 6, 5), dtype=np.float32), rng.integers(0, 3, 12)
    model.fit((x, y), epochs=1, batch_size=4, verbose=False)
    path = tmp_path / "res.npz"
    model.save(path)
    loaded = nbcnn.Sequential.load(path, backend="numpy")
    assert loaded.spec() == model.spec() == NESTED
    np.testing.assert_allclose(loaded.predict(x), model.predict(x), rtol=1e-5, atol=1e-6)
    for key, value in model.get_weights().items():
        np.testing.assert_array_equal(loaded.get_weights()[key], value, err_msg=key)


def test_cifar_resnet8_trains_on_numba():
    kw = dict(n=96, size=16, channels=3, classes=["cross", "circle"], seed=0)
    train = data.load("shapes", split="train", **kw)
    model = nbcnn.build("cifar-resnet8", input_shape=train.input_shape, backend="numba", seed=0)
    history = model.fit(train, epochs=3, batch_size=16, verbose=False,
                        optimizer=optim.SGD(lr=0.05, momentum=0.9, weight_decay=1e-4))
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert np.isfinite(history["train_loss"]).all()

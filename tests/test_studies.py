"""What the long studies of issue 14 need: the Fashion-MNIST benchmark presets, batch norm after
a dense layer, the MultiStep schedule and the study grid files."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest

import nbcnn
from nbcnn import arch, layers, optim

from conftest import backend_or_skip
from test_gradcheck import REF64, check_layer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- presets -------------------------------------------------------------------------------
def test_fmnist_2conv_is_the_tensorflow_benchmark_net():
    model = nbcnn.build("fmnist-2conv", input_shape=(1, 28, 28), backend="numpy")
    conv1, _, pool1, conv2, _, pool2, _, dense1, _, drop, dense2 = model.layers
    assert (conv1.filters, conv1.kernel_size, conv2.filters, conv2.kernel_size) == \
        (32, (5, 5), 64, (5, 5))
    assert pool2.output_shape(conv2.output_shape(pool1.output_shape((32, 28, 28)))) == (64, 7, 7)
    assert (dense1.units, drop.p, dense2.units) == (1024, 0.4, 10)
    # conv 5*5*32+32, conv 5*5*32*64+64, dense 3136*1024+1024, dense 1024*10+10
    assert model.count_params() == 832 + 51_264 + 3_212_288 + 10_250 == 3_274_634


def test_fmnist_2conv_bn_is_the_submitted_keras_net():
    model = nbcnn.build("fmnist-2conv-bn", input_shape=(1, 28, 28), backend="numpy")
    convs = [lay for lay in model.layers if isinstance(lay, layers.Conv2D)]
    assert [(c.filters, c.kernel_size[0]) for c in convs] == [(32, 5), (32, 5), (64, 3), (64, 3)]
    bn = next(lay for lay in model.layers if isinstance(lay, layers.BatchNorm2D))
    assert bn.input_shape == (512,) and (bn.momentum, bn.eps) == (0.01, 0.001)
    assert [d.p for d in model.layers if isinstance(d, layers.Dropout)] == [0.25, 0.25, 0.5]
    # the Keras summary of the submission: 1,694,186 trainable parameters (its other 1,024 are
    # the running statistics, buffers here)
    assert model.count_params() == 832 + 25_632 + 18_496 + 36_928 + 1_606_144 + 1_024 + 5_130 \
        == 1_694_186
    assert sum(b.size for lay in model.layers for b in lay.buffers.values()) == 1_024


@pytest.mark.parametrize("name", ["fmnist-2conv", "fmnist-2conv-bn"])
def test_fmnist_presets_round_trip_and_train_a_step(name, tmp_path):
    model = nbcnn.build(name, input_shape=(1, 28, 28), backend="numpy", seed=0)
    assert model.output_shape == (10,)
    assert nbcnn.build(model.spec(), input_shape=(1, 28, 28), backend="numpy").spec() == \
        model.spec() == arch.PRESETS[name]
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 8)
    history = model.fit((x, y), epochs=1, batch_size=8, optimizer=optim.RMSprop(lr=1e-3, alpha=0.9),
                        verbose=False)
    assert np.isfinite(history["train_loss"]).all()
    model.save(tmp_path / "m.npz")
    np.testing.assert_allclose(nbcnn.Sequential.load(tmp_path / "m.npz").predict(x),
                               model.predict(x), rtol=1e-5, atol=1e-6)


# ---- batch norm on vectors (after a dense layer) --------------------------------------------
def test_batchnorm_on_vectors_gradients():
    check_layer(layers.BatchNorm2D(backend=REF64), (5, 3))
    check_layer(layers.BatchNorm2D(momentum=0.01, eps=1e-3, backend=REF64), (2, 4), seed=3)


def test_batchnorm_on_vectors_refuses_other_ranks():
    with pytest.raises(ValueError, match=r"BatchNorm2D: expected input of shape \(N, C, H, W\) "
                                         r"or \(N, C\), got per-example shape \(3, 4\)"):
        layers.BatchNorm2D().output_shape((3, 4))


@pytest.mark.parametrize("backend", ["numpy", "numba", "opencl"])
def test_batchnorm_on_vectors_is_torch_batchnorm1d(backend):
    torch = pytest.importorskip("torch")
    be = backend_or_skip(backend)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 5)).astype(np.float32) * 3 + 1
    dy = rng.standard_normal((7, 5)).astype(np.float32)
    layer = layers.BatchNorm2D(momentum=0.01, eps=1e-3)
    layer.build((5,), be, np.random.default_rng(0))
    ref = torch.nn.BatchNorm1d(5, momentum=0.01, eps=1e-3)
    xt = torch.tensor(x, requires_grad=True)
    yt = ref(xt)
    yt.backward(torch.tensor(dy))
    b = layer.backend
    y = b.to_numpy(layer.forward(b.from_numpy(x), training=True))
    dx = b.to_numpy(layer.backward(b.from_numpy(dy)))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b.to_numpy(layer.grads["weight"]), ref.weight.grad.numpy(),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b.to_numpy(layer.grads["bias"]), ref.bias.grad.numpy(),
                               rtol=1e-4, atol=1e-5)
    for name in ("running_mean", "running_var"):
        np.testing.assert_allclose(b.to_numpy(layer.buffers[name]),
                                   getattr(ref, name).numpy(), rtol=1e-4, atol=1e-6)
    ref.eval()
    np.testing.assert_allclose(b.to_numpy(layer.forward(b.from_numpy(x), training=False)),
                               ref(torch.tensor(x)).detach().numpy(), rtol=1e-4, atol=1e-5)


# ---- MultiStep ------------------------------------------------------------------------------
@pytest.mark.parametrize("milestones,gamma", [((82, 123), 0.1), ((15, 25, 35), 0.5), ((1,), 0.3),
                                              ((2, 3, 9), 2.0)])
def test_multistep_is_torch_multisteplr(milestones, gamma):
    torch = pytest.importorskip("torch")
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.1)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(milestones), gamma=gamma)
    ours = optim.SGD(lr=0.1, schedule=optim.MultiStep(milestones, gamma))
    for epoch in range(max(milestones) + 5):
        ours.start_epoch(epoch)
        assert ours.current_lr == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12), epoch
        opt.step()
        sched.step()


def test_multistep_string():
    s = optim.parse_schedule("multistep:82:123", epochs=164)
    assert isinstance(s, optim.MultiStep) and s.milestones == (82, 123) and s.gamma == 0.1
    assert [s.factor(e) for e in (0, 81, 82, 122, 123, 163)] == \
        pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    half = optim.parse_schedule("MultiStep:15:25:35:gamma=0.5", epochs=40)
    assert half.milestones == (15, 25, 35) and half.gamma == 0.5
    both = optim.parse_schedule("warmup:2*multistep:5", epochs=10)
    assert both.factor(0) == pytest.approx(1 / 3) and both.factor(5) == pytest.approx(0.1)


@pytest.mark.parametrize("text,match", [
    ("multistep", "needs at least one milestone"),
    ("multistep:gamma=0.5", "needs at least one milestone"),
    ("multistep:10:5", "strictly increasing"),
    ("multistep:5:5", "strictly increasing"),
    ("multistep:0:5", r"whole epochs >= 1, got 0"),
    ("multistep:2.5", r"whole epochs >= 1 \(and gamma=G comes last\), got '2.5'"),
    ("multistep:gamma=0.5:10", r"got 'gamma=0.5'"),
    ("multistep:10:gamma=x", "gamma must be a number"),
    ("multistep:10:gamma=0", r"gamma must be > 0"),
])
def test_multistep_bad_strings(text, match):
    with pytest.raises(ValueError, match=match):
        optim.parse_schedule(text, epochs=20)


def test_multistep_in_fit_history_and_grid_setting():
    from nbcnn.harness.spec import check_value
    assert check_value("schedule", "multistep:2:3:gamma=0.5") == "multistep:2:3:gamma=0.5"
    rng = np.random.default_rng(0)
    x, y = rng.random((12, 1, 6, 6), dtype=np.float32), rng.integers(0, 3, 12)
    model = nbcnn.build("flatten-dense(3)", input_shape=(1, 6, 6), backend="numpy", seed=0)
    history = model.fit((x, y), epochs=5, batch_size=6, verbose=False,
                        optimizer=optim.SGD(lr=0.2, schedule=optim.parse_schedule(
                            "multistep:2:3:gamma=0.5", epochs=5)))
    assert list(history["learning_rate"]) == pytest.approx([0.2, 0.2, 0.1, 0.05, 0.05])


# ---- the study grid files -------------------------------------------------------------------
def _grid(name):
    from nbcnn.harness.spec import load_grid
    return load_grid(os.path.join(ROOT, "experiments", f"{name}.toml"))


def test_mnist_seeds_grid_is_the_published_setting():
    grid = _grid("mnist_seeds")
    assert len(grid.cells) == 18
    assert {c["arch"] for c in grid.cells} == {"mnist-simple", "mnist-complex", "lenet5",
                                              "lenet5-tanh", "mnist-tiny", "mnist-strided"}
    for c in grid.cells:
        assert (c["batch_size"], c["lr"], c["optimizer"], c["momentum"], c["epochs"]) == \
            (10, 0.05, "sgd", 0.0, 30)
        assert round(c["val_fraction"] * 60000) == 5000 and c["seed"] in (0, 1, 2)


def test_fashion_benchmark_grid():
    grid = _grid("fashion_mnist_benchmark")
    assert len(grid.cells) == 12
    assert {(c["arch"], c.get("augment", "none")) for c in grid.cells} == \
        {(a, g) for a in ("fmnist-2conv", "fmnist-2conv-bn") for g in ("none", "crop:2,flip")}
    c = grid.cells[0]
    assert (c["optimizer"], c["lr"], c["alpha"], c["batch_size"], c["epochs"]) == \
        ("rmsprop", 0.001, 0.9, 512, 40)
    s = optim.parse_schedule(c["schedule"], c["epochs"])
    assert [s.factor(e) for e in (14, 15, 25, 35)] == [1, 0.5, 0.25, 0.125]
    assert round(c["val_fraction"] * 60000) == 5000


def test_cifar_grids():
    he = _grid("cifar10_resnet20")
    assert [c["seed"] for c in he.cells] == [0, 1]
    c = he.cells[0]
    assert (c["arch"], c["lr"], c["momentum"], c["weight_decay"], c["batch_size"], c["epochs"],
            c["augment"], c["val_fraction"]) == \
        ("cifar-resnet20", 0.1, 0.9, 1e-4, 128, 164, "crop:4,flip", 0.0)
    s = optim.parse_schedule(c["schedule"], c["epochs"])
    assert [s.factor(e) for e in (81, 82, 122, 123)] == pytest.approx([1, 0.1, 0.1, 0.01])
    fast = _grid("cifar10_onecycle")
    assert [c["seed"] for c in fast.cells] == [0, 1]
    c = fast.cells[0]
    assert c["nesterov"] and c["schedule"] == "onecycle" and c["epochs"] < he.cells[0]["epochs"]
    assert c["val_fraction"] > 0


def test_kajda_search_grid():
    grid = _grid("mnist_strided_kajda")
    assert len(grid.cells) == 76 and {c["arch"] for c in grid.cells} == {"mnist-strided"}
    settings = {(c["optimizer"], c["lr"], c.get("momentum"), c["batch_size"], c["schedule"])
                for c in grid.cells}
    assert len(settings) == 38
    assert all(c["epochs"] == 20 and c["val_fraction"] > 0 for c in grid.cells)

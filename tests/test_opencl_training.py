"""Training on OpenCL against the same training on Numba: one step, then a short fit.

Skipped as a whole where no OpenCL device (or no Numba) is available.
"""

from __future__ import annotations

import numpy as np
import pytest

try:
    from nbcnn.backends import get_backend
    get_backend("opencl")
    get_backend("numba")
except Exception as exc:                                   # noqa: BLE001 - any reason to skip
    pytest.skip(f"OpenCL or Numba backend unavailable here ({str(exc).splitlines()[0]}); "
                "install an OpenCL driver, e.g. `apt-get install pocl-opencl-icd`",
                allow_module_level=True)

import nbcnn
from nbcnn import Sequential, layers, optim


def _model(backend):
    return Sequential(
        layers.Conv2D(6, kernel_size=3, padding="same", bias=False),   # BN follows: a bias gets only noise
        layers.BatchNorm2D(),
        layers.ReLU(),
        layers.MaxPool2D(2),
        layers.Conv2D(8, kernel_size=3, stride=2, padding=1),
        layers.Tanh(),
        layers.AvgPool2D(2, stride=1),
        layers.Flatten(),
        layers.Dropout(0.25),
        layers.Dense(16),
        layers.LeakyReLU(0.1),
        layers.Dense(4),
        input_shape=(3, 12, 10), backend=backend, seed=0,
    )


@pytest.mark.parametrize("opt", [lambda: optim.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
                                 lambda: optim.Adam(lr=1e-2, weight_decay=1e-2, decoupled=True),
                                 lambda: optim.RMSprop(lr=1e-3, momentum=0.5)],
                         ids=["sgd", "adamw", "rmsprop"])
def test_one_training_step_matches_numba(opt):
    rng = np.random.default_rng(0)
    x = rng.random((5, 3, 12, 10), dtype=np.float32)
    y = rng.integers(0, 4, size=5)
    results = {}
    for name in ("numba", "opencl"):
        model = _model(name)
        model._set_training(True)
        be = model.backend
        o = opt()
        steps = [model.train_step(be.from_numpy(x), be.labels_from_numpy(y), o) for _ in range(2)]
        results[name] = (steps, model.get_weights())
    (s_nb, w_nb), (s_cl, w_cl) = results["numba"], results["opencl"]
    for (l_nb, c_nb), (l_cl, c_cl) in zip(s_nb, s_cl):
        assert l_cl == pytest.approx(l_nb, rel=1e-4)
        assert c_cl == c_nb
    assert w_nb.keys() == w_cl.keys()
    for k in w_nb:
        np.testing.assert_allclose(w_cl[k], w_nb[k], rtol=1e-3, atol=1e-4, err_msg=k)


def test_fit_on_opencl_reaches_numba_accuracy():
    data = nbcnn.data
    train = data.load("shapes", split="train", seed=0, n=600, size=16)
    test = data.load("shapes", split="test", seed=0, n=200, size=16)
    scores = {}
    for name in ("numba", "opencl"):
        model = Sequential(
            layers.Conv2D(8, kernel_size=3, padding="same"), layers.ReLU(), layers.MaxPool2D(2),
            layers.Conv2D(16, kernel_size=3, padding="same"), layers.ReLU(), layers.MaxPool2D(2),
            layers.Flatten(), layers.Dense(32), layers.ReLU(), layers.Dense(len(train.classes)),
            input_shape=train.x.shape[1:], backend=name, seed=0)
        hist = model.fit(train, epochs=6, batch_size=32, optimizer=optim.Adam(lr=3e-3),
                         verbose=False)
        scores[name] = (hist, model.evaluate(test))
    (h_nb, e_nb), (h_cl, e_cl) = scores["numba"], scores["opencl"]
    # same data, same seed, same maths: the runs track each other (float32 rounding differs
    # between the backends' summation orders, so they drift apart slowly)
    np.testing.assert_allclose(h_cl["train_loss"], h_nb["train_loss"], rtol=3e-2)
    assert abs(e_cl["accuracy"] - e_nb["accuracy"]) <= 0.05
    assert e_cl["accuracy"] > 0.55           # well above chance (4 classes)


def test_grouped_dilated_depthwise_steps_match_numba():
    """Two Adam steps of a net with grouped, dilated and depthwise convolutions (a
    mobilenet-small block among them) give the same losses and weights on both backends."""
    spec = ("conv(8,3,same,bias=false)-batchnorm-relu-conv(8,3,same,stride=2,groups=8,bias=false)-"
            "batchnorm-relu-conv(16,1,bias=false)-batchnorm-relu-"
            "conv(16,3,(2:1:2:0),dilation=(2:1),groups=4)-relu-conv(8,3,same,dilation=2)-"
            "flatten-dense(4)")
    rng = np.random.default_rng(1)
    x = rng.random((6, 3, 13, 11), dtype=np.float32)
    y = rng.integers(0, 4, size=6)
    results = {}
    for name in ("numba", "opencl"):
        model = nbcnn.build(spec, input_shape=x.shape[1:], backend=name, seed=0)
        be, o = model.backend, optim.Adam(lr=1e-2)
        steps = [model.train_step(be.from_numpy(x), be.labels_from_numpy(y), o) for _ in range(2)]
        results[name] = (steps, model.get_weights())
    (s_nb, w_nb), (s_cl, w_cl) = results["numba"], results["opencl"]
    for (l_nb, c_nb), (l_cl, c_cl) in zip(s_nb, s_cl):
        assert l_cl == pytest.approx(l_nb, rel=1e-4)
        assert c_cl == c_nb
    for k in w_nb:
        np.testing.assert_allclose(w_cl[k], w_nb[k], rtol=1e-3, atol=1e-4, err_msg=k)

"""Optimizers, label smoothing, gradient clipping and OneCycle against PyTorch, on every backend;
the optimizers' checks of their settings; the same features through fit, grids and the CLI."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import nbcnn
from conftest import assert_close, backend_or_skip
from nbcnn import data, losses, optim
from nbcnn.harness import GridError, cell_key, parse_grid

torch = pytest.importorskip("torch", reason="PyTorch is an optional oracle: pip install torch")
F = torch.nn.functional

BACKENDS = ["numpy", "numba", "opencl"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return backend_or_skip(request.param)


# ---- optimizers ----------------------------------------------------------------------------
#: name -> (ours, torch's given the parameters, max_norm clipped before each step or None)
OPTIMIZER_CASES = {
    "sgd": (lambda: optim.SGD(lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1), None),
    "sgd-momentum-wd": (lambda: optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.01),
                        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
                        None),
    "sgd-nesterov-wd": (
        lambda: optim.SGD(lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-3),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-3),
        None),
    "sgd-momentum-clipped": (lambda: optim.SGD(lr=0.1, momentum=0.9, clip_grad_norm=1.0),
                             lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), 1.0),
    "adam": (lambda: optim.Adam(lr=0.01), lambda p: torch.optim.Adam(p, lr=0.01), None),
    "adam-l2": (lambda: optim.Adam(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.01),
                lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.99), eps=1e-6,
                                           weight_decay=0.01), None),
    "adamw": (lambda: optim.Adam(lr=0.01, weight_decay=0.1, decoupled=True),
              lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1), None),
    "rmsprop": (lambda: optim.RMSprop(lr=0.01), lambda p: torch.optim.RMSprop(p, lr=0.01), None),
    "rmsprop-momentum-wd": (
        lambda: optim.RMSprop(lr=0.01, alpha=0.9, eps=1e-6, momentum=0.5, weight_decay=0.01),
        lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-6, momentum=0.5,
                                      weight_decay=0.01), None),
    "adagrad": (lambda: optim.Adagrad(), lambda p: torch.optim.Adagrad(p), None),
    "adagrad-decay-wd-init": (
        lambda: optim.Adagrad(lr=0.1, lr_decay=0.05, weight_decay=0.01,
                              initial_accumulator_value=0.1, eps=1e-8),
        lambda p: torch.optim.Adagrad(p, lr=0.1, lr_decay=0.05, weight_decay=0.01,
                                      initial_accumulator_value=0.1, eps=1e-8), None),
    "adagrad-clipped": (lambda: optim.Adagrad(lr=0.05, clip_grad_norm=0.5),
                        lambda p: torch.optim.Adagrad(p, lr=0.05), 0.5),
    "adadelta": (lambda: optim.Adadelta(), lambda p: torch.optim.Adadelta(p), None),
    "adadelta-wd": (lambda: optim.Adadelta(lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.01),
                    lambda p: torch.optim.Adadelta(p, lr=0.5, rho=0.8, eps=1e-5,
                                                   weight_decay=0.01), None),
}


@pytest.mark.parametrize("case", list(OPTIMIZER_CASES))
def test_optimizer_matches_torch(backend, case):
    """Six steps on two parameters of odd shapes update them (and the torch-visible state) as
    torch.optim does."""
    ours_factory, theirs_factory, max_norm = OPTIMIZER_CASES[case]
    rng = np.random.default_rng(5)
    shapes = [(4, 3, 2, 3), (7,)]
    p0 = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(6)]
    pt = [torch.nn.Parameter(torch.tensor(p)) for p in p0]
    ours, theirs = ours_factory(), theirs_factory(pt)
    ps = [backend.from_numpy(p) for p in p0]
    for g in grads:
        ours.step(backend, [(p, backend.from_numpy(gi)) for p, gi in zip(ps, g)])
        for t, gi in zip(pt, g):
            t.grad = torch.tensor(gi)
        if max_norm is not None:
            torch.nn.utils.clip_grad_norm_(pt, max_norm)
        theirs.step()
    for p, t in zip(ps, pt):
        assert_close(backend.to_numpy(p), t.detach().numpy(), rtol=1e-5, atol=1e-6, what=case)
    assert ours.steps == 6


# ---- label smoothing -----------------------------------------------------------------------
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.35, 1.0])
@pytest.mark.parametrize("n,k", [(1, 3), (9, 10), (64, 17)])
def test_label_smoothing_matches_torch(backend, eps, n, k):
    rng = np.random.default_rng(6)
    logits = (rng.standard_normal((n, k)) * 4).astype(np.float32)
    logits[0, 0] = 80.0                              # would overflow a naive exp in float32
    labels = rng.integers(0, k, n)
    lt = torch.tensor(logits, requires_grad=True)
    loss_t = F.cross_entropy(lt, torch.tensor(labels), label_smoothing=eps)
    loss_t.backward()
    loss, d, correct = backend.softmax_cross_entropy(backend.from_numpy(logits),
                                                     backend.labels_from_numpy(labels), eps)
    assert loss == pytest.approx(loss_t.item(), rel=1e-5, abs=1e-5)
    assert_close(backend.to_numpy(d), lt.grad.numpy(), rtol=1e-5, atol=1e-6)
    assert correct == int((logits.argmax(axis=1) == labels).sum())   # accuracy: unchanged
    loss2, d2 = losses.softmax_cross_entropy(logits, labels, backend=backend, label_smoothing=eps)
    assert loss2 == pytest.approx(loss, rel=1e-6)
    assert_close(backend.to_numpy(d2), backend.to_numpy(d))


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), float("inf")])
def test_label_smoothing_out_of_range_is_refused(bad):
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\]"):
        losses.softmax_cross_entropy(np.zeros((2, 3), np.float32), [0, 1], backend="numpy",
                                     label_smoothing=bad)
    with pytest.raises(TypeError, match="label_smoothing"):
        losses.check_label_smoothing("0.1")


# ---- gradient clipping ---------------------------------------------------------------------
@pytest.mark.parametrize("max_norm", [0.5, 7.0, 1e3])
def test_clip_grad_norm_matches_torch(backend, max_norm):
    rng = np.random.default_rng(7)
    shapes = [(3, 4, 2, 2), (7,), (1,), (5, 300)]
    gs = [(rng.standard_normal(s) * 0.2).astype(np.float32) for s in shapes]
    pt = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    for t, g in zip(pt, gs):
        t.grad = torch.tensor(g)
    norm_t = torch.nn.utils.clip_grad_norm_(pt, max_norm)
    ours = [backend.from_numpy(g) for g in gs]
    norm = optim.clip_grad_norm(backend, ours, max_norm)
    assert norm == pytest.approx(float(norm_t), rel=1e-5)
    for got, t in zip(ours, pt):
        assert_close(backend.to_numpy(got), t.grad.numpy(), rtol=1e-5, atol=1e-7)
    clipped = max_norm / (norm + 1e-6) < 1
    assert clipped == (max_norm < 10)                # the total norm here is about 7.9


# ---- OneCycle ------------------------------------------------------------------------------
@pytest.mark.parametrize("epochs,steps,pct,div,final", [
    (3, 7, 0.3, 25.0, 1e4), (1, 10, 0.25, 10.0, 100.0), (5, 1, 0.3, 25.0, 1e4),
    (2, 13, 0.5, 4.0, 10.0), (2, 3, 0.05, 25.0, 1e4), (4, 5, 1.0, 25.0, 1e4)])
def test_onecycle_matches_torch(epochs, steps, pct, div, final):
    lr = 0.4
    pt = torch.nn.Parameter(torch.zeros(1))
    opt_t = torch.optim.SGD([pt], lr=lr)
    sched_t = torch.optim.lr_scheduler.OneCycleLR(
        opt_t, max_lr=lr, epochs=epochs, steps_per_epoch=steps, pct_start=pct, div_factor=div,
        final_div_factor=final, cycle_momentum=False)
    ours = optim.SGD(lr=lr, schedule=optim.OneCycle(epochs, pct, div, final))
    for e in range(epochs):
        for s in range(steps):
            ours.start_step(e, s, steps)
            assert ours.current_lr == pytest.approx(opt_t.param_groups[0]["lr"], rel=1e-12), (e, s)
            opt_t.step()
            if (e, s) != (epochs - 1, steps - 1):    # (torch fails stepping past the end)
                sched_t.step()
    # after the run the factor stays at its end
    last = optim.OneCycle(epochs, pct, div, final)
    assert last.step_factor(epochs + 2, 0, steps) == pytest.approx(
        last.step_factor(epochs - 1, steps - 1, steps), rel=1e-12)


def test_onecycle_defaults_strings_and_errors():
    s = optim.OneCycle(10)
    assert (s.pct_start, s.div_factor, s.final_div_factor) == (0.3, 25.0, 1e4)
    assert s.per_step and s.step_factor(0, 0, 100) == pytest.approx(1 / 25)
    assert s.step_factor(9, 99, 100) == pytest.approx(1 / 25 / 1e4)
    assert s.factor(0) == s.step_factor(0, 0, 1)              # alone: one step per epoch
    parsed = optim.parse_schedule("onecycle", epochs=10)
    assert repr(parsed) == repr(s)
    assert repr(optim.parse_schedule("onecycle:0.25:10:100", epochs=4)) == \
        repr(optim.OneCycle(4, pct_start=0.25, div_factor=10, final_div_factor=100))
    with pytest.raises(ValueError, match=r"onecycle:2.*pct_start must be in \[0, 1\], got 2"):
        optim.parse_schedule("onecycle:2", epochs=3)
    with pytest.raises(ValueError, match="onecycle takes 0 to 3 arguments"):
        optim.parse_schedule("onecycle:0.3:1:2:3", epochs=3)
    with pytest.raises(ValueError, match="OneCycle: epochs"):
        optim.OneCycle(0)
    with pytest.raises(ValueError, match="OneCycle: div_factor must be > 0"):
        optim.OneCycle(3, div_factor=0)


def test_per_epoch_schedules_do_not_move_within_an_epoch():
    s = optim.Warmup(2) * optim.CosineDecay(5)
    assert not s.per_step
    for e in range(7):
        assert all(s.step_factor(e, b, 9) == s.factor(e) for b in range(9))
    mixed = optim.Warmup(1) * optim.OneCycle(3)
    assert mixed.per_step
    assert mixed.step_factor(1, 4, 10) == optim.Warmup(1).factor(1) * \
        optim.OneCycle(3).step_factor(1, 4, 10)


def test_fit_steps_onecycle_per_batch_and_reports_the_epoch_mean():
    train = data.load("shapes", split="train", n=50, size=8, seed=0)
    lr, epochs, batch = 0.2, 3, 10                            # 5 batches per epoch
    model = nbcnn.build("flatten-dense(4)", input_shape=train.input_shape, backend="numpy")
    opt = optim.SGD(lr=lr, schedule=optim.OneCycle(epochs))
    seen, real_step = [], opt.step

    def spy(backend, pairs):
        seen.append(opt.current_lr)
        real_step(backend, pairs)
    opt.step = spy
    h = model.fit(train, epochs=epochs, batch_size=batch, optimizer=opt, verbose=False)
    pt = torch.nn.Parameter(torch.zeros(1))
    opt_t = torch.optim.SGD([pt], lr=lr)
    sched_t = torch.optim.lr_scheduler.OneCycleLR(opt_t, max_lr=lr, epochs=epochs,
                                                  steps_per_epoch=5, cycle_momentum=False)
    want = []
    for _ in range(epochs * 5):
        want.append(opt_t.param_groups[0]["lr"])
        opt_t.step()
        sched_t.step()
    np.testing.assert_allclose(seen, want, rtol=1e-12)
    np.testing.assert_allclose(h["learning_rate"], np.reshape(want, (epochs, 5)).mean(axis=1),
                               rtol=1e-12)


# ---- settings are checked ------------------------------------------------------------------
BAD_SETTINGS = [
    (optim.RMSprop, {"momentum": 5}, "RMSprop: momentum must be in [0, 1), got 5"),
    (optim.Adam, {"eps": -1}, "Adam: eps must be > 0, got -1"),
    (optim.SGD, {"lr": math.inf}, "SGD: lr must be finite, got inf"),
    (optim.SGD, {"weight_decay": math.nan}, "SGD: weight_decay must be finite, got nan"),
    (optim.SGD, {"lr": 0}, "SGD: lr must be > 0, got 0"),
    (optim.SGD, {"momentum": 1.0}, "SGD: momentum must be in [0, 1), got 1.0"),
    (optim.SGD, {"weight_decay": -1e-4}, "SGD: weight_decay must be >= 0, got -0.0001"),
    (optim.Adam, {"beta1": 1}, "Adam: beta1 must be in [0, 1), got 1"),
    (optim.Adam, {"beta2": -0.5}, "Adam: beta2 must be in [0, 1), got -0.5"),
    (optim.Adam, {"eps": math.inf}, "Adam: eps must be finite, got inf"),
    (optim.RMSprop, {"alpha": 1.5}, "RMSprop: alpha must be in [0, 1], got 1.5"),
    (optim.RMSprop, {"eps": 0}, "RMSprop: eps must be > 0, got 0"),
    (optim.RMSprop, {"momentum": np.float32(-0.5)}, "RMSprop: momentum must be in [0, 1), got "),
    (optim.Adagrad, {"lr_decay": -1}, "Adagrad: lr_decay must be >= 0, got -1"),
    (optim.Adagrad, {"initial_accumulator_value": -0.1},
     "Adagrad: initial_accumulator_value must be >= 0, got -0.1"),
    (optim.Adagrad, {"eps": 0.0}, "Adagrad: eps must be > 0, got 0.0"),
    (optim.Adadelta, {"rho": 1.1}, "Adadelta: rho must be in [0, 1], got 1.1"),
    (optim.Adadelta, {"lr": -1}, "Adadelta: lr must be > 0, got -1"),
    (optim.Adadelta, {"eps": math.nan}, "Adadelta: eps must be finite, got nan"),
    (optim.SGD, {"clip_grad_norm": 0}, "SGD: clip_grad_norm must be > 0, got 0"),
    (optim.Adam, {"clip_grad_norm": math.inf}, "Adam: clip_grad_norm must be finite, got inf"),
]


@pytest.mark.parametrize("cls,kwargs,message", BAD_SETTINGS,
                         ids=[f"{c.__name__}-{next(iter(k))}" for c, k, _ in BAD_SETTINGS])
def test_bad_optimizer_settings_are_refused(cls, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        cls(**kwargs)
    with pytest.raises(ValueError, match=re.escape(message)):
        optim.make(cls.__name__, **kwargs)


@pytest.mark.parametrize("cls,kwargs,message", [
    (optim.SGD, {"lr": "0.1"}, "SGD: lr must be a number, got str '0.1'"),
    (optim.SGD, {"lr": True}, "SGD: lr must be a number, got bool True"),
    (optim.Adam, {"eps": None}, "Adam: eps must be a number, got NoneType None"),
    (optim.SGD, {"momentum": 0.9, "nesterov": "yes"}, "SGD: nesterov must be True or False"),
    (optim.SGD, {"schedule": "cosine"}, "SGD: schedule must be an optim.Schedule"),
])
def test_settings_of_the_wrong_type_are_refused(cls, kwargs, message):
    with pytest.raises(TypeError, match=re.escape(message)):
        cls(**kwargs)


def test_numpy_scalars_and_edge_values_are_accepted():
    sgd = optim.SGD(lr=np.float32(0.1), momentum=np.float64(0.9), nesterov=np.bool_(True),
                    weight_decay=np.int64(0), clip_grad_norm=np.float32(2))
    assert sgd.lr == pytest.approx(0.1) and type(sgd.lr) is float and sgd.nesterov is True
    assert type(sgd.clip_grad_norm) is float
    adam = optim.Adam(lr=np.float32(1e-3), beta1=np.float32(0.9), beta2=0, eps=np.float64(1e-8))
    assert type(adam.beta1) is float and adam.beta2 == 0.0
    assert optim.RMSprop(alpha=1, momentum=np.float32(0.5)).alpha == 1.0
    assert optim.Adadelta(lr=np.int64(2), rho=0).lr == 2.0          # Adadelta: lr > 1 is usual
    assert optim.Adagrad(lr_decay=np.float32(0.5)).lr_decay == 0.5
    assert isinstance(optim.make("ADAGRAD", lr=0.1), optim.Adagrad)
    assert isinstance(optim.make("adadelta"), optim.Adadelta)
    assert optim.make("adadelta").config() == {
        "name": "adadelta", "lr": 1.0, "weight_decay": 0.0, "schedule": "Constant()",
        "clip_grad_norm": None, "rho": 0.9, "eps": 1e-6}


# ---- the features through fit, grids and the command line ----------------------------------
def _fit_with_everything(backend_name):
    train = data.load("shapes", split="train", n=120, size=12, seed=0)
    model = nbcnn.build("conv(4,3)-relu-maxpool(2)-flatten-dense(4)",
                        input_shape=train.input_shape, backend=backend_name, seed=2)
    opt = optim.Adagrad(lr=0.05, weight_decay=1e-3, clip_grad_norm=0.5,
                        schedule=optim.OneCycle(2))
    h = model.fit(train, epochs=2, batch_size=16, optimizer=opt, label_smoothing=0.1,
                  verbose=False)
    return h, model


@pytest.mark.parametrize("name", ["numba", "opencl"])
def test_fit_with_smoothing_clipping_and_onecycle_matches_the_reference(name):
    backend_or_skip(name)
    h_ref, m_ref = _fit_with_everything("numpy")
    h, m = _fit_with_everything(name)
    np.testing.assert_allclose(h["train_loss"], h_ref["train_loss"], rtol=1e-4)
    np.testing.assert_allclose(h["learning_rate"], h_ref["learning_rate"], rtol=1e-12)
    for k, v in m_ref.get_weights().items():
        assert_close(m.get_weights()[k], v, rtol=1e-3, atol=1e-4, what=k)


def test_fit_refuses_bad_label_smoothing():
    model = nbcnn.build("flatten-dense(2)", input_shape=(1, 2, 2), backend="numpy")
    x, y = np.zeros((4, 1, 2, 2), np.float32), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        model.fit((x, y), label_smoothing=2, verbose=False)


GRID = """
[fixed]
dataset = "shapes"
arch = "mnist-tiny"
[grid]
optimizer = ["sgd", "adam", "rmsprop"]
lr = [0.1, 0.01]
"""


def test_grid_keys_of_earlier_studies_are_unchanged():
    """Keys computed by the code before label_smoothing and clip_grad_norm existed."""
    cells = parse_grid(GRID).cells
    assert [c.key for c in cells] == ["b142e9987929", "868e7c09d98d", "ebac257a2d15",
                                      "8e1e88fd7ccd", "146c5d8cce10", "b9a4e5393dc4"]
    assert all(c["label_smoothing"] == 0.0 and c["clip_grad_norm"] is None for c in cells)
    smoothed = parse_grid(GRID + 'label_smoothing = [0.0, 0.1]\nclip_grad_norm = ["none", 1]\n')
    assert len({c.key for c in smoothed.cells}) == 24
    assert {c.key for c in cells} <= {c.key for c in smoothed.cells}


def test_grid_adagrad_and_adadelta_cells():
    grid = parse_grid("""
        [fixed]
        arch = "mnist-tiny"
        schedule = "onecycle:0.25"
        label_smoothing = 0.1
        clip_grad_norm = 2.0
        [grid]
        optimizer = ["adagrad", "adadelta"]
        """.replace("\n        ", "\n"))
    ada, delta = grid.cells
    assert (ada["lr"], ada["eps"], ada["lr_decay"], ada["initial_accumulator_value"]) == \
        (0.01, 1e-10, 0.0, 0.0)
    assert (delta["lr"], delta["eps"], delta["rho"]) == (1.0, 1e-6, 0.9)
    assert "rho" not in ada.settings and "lr_decay" not in delta.settings
    assert "momentum" not in ada.settings
    from nbcnn.harness.spec import make_optimizer
    opt = make_optimizer(delta.settings)
    assert isinstance(opt, optim.Adadelta) and opt.clip_grad_norm == 2.0
    assert isinstance(opt.schedule, optim.OneCycle) and opt.schedule.pct_start == 0.25
    assert cell_key(ada.settings) == ada.key


@pytest.mark.parametrize("entry,what", [
    ("label_smoothing = 1.5", "label_smoothing"), ("clip_grad_norm = 0", "clip_grad_norm"),
    ("clip_grad_norm = 'off'", "clip_grad_norm"), ("rho = 2", "rho"),
    ("lr_decay = -1", "lr_decay"), ("schedule = 'onecycle:0.3:0'", "schedule"),
])
def test_grid_refuses_bad_new_settings(entry, what):
    with pytest.raises(GridError, match=what):
        parse_grid(f"[fixed]\narch = 'mnist-tiny'\noptimizer = 'adadelta'\n{entry}\n")


def test_cli_train_with_the_new_options(tmp_path, capsys):
    from nbcnn.cli import main
    hist = tmp_path / "h.csv"
    code = main(["train", "--arch", "flatten-dense(10)", "--dataset", "shapes", "--limit", "60",
                 "--epochs", "2", "--batch-size", "20", "--backend", "numpy", "--quiet",
                 "--optimizer", "adadelta", "--lr", "1.0", "--schedule", "onecycle",
                 "--label-smoothing", "0.1", "--clip-grad-norm", "1", "--history", str(hist)])
    assert code == 0
    import pandas as pd
    h = pd.read_csv(hist)
    schedule = optim.OneCycle(2)                       # 54 training images: 3 batches an epoch
    want = [np.mean([schedule.step_factor(e, b, 3) for b in range(3)]) for e in range(2)]
    np.testing.assert_allclose(h["learning_rate"], want, rtol=1e-12)
    assert main(["train", "--optimizer", "adagrad", "--label-smoothing", "3", "--limit", "20",
                 "--epochs", "1", "--backend", "numpy", "--quiet", "--arch",
                 "flatten-dense(10)"]) != 0
    assert "label_smoothing must be in [0, 1], got 3" in capsys.readouterr().err

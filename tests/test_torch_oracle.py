"""Forward and every gradient against torch.nn.functional (skipped where torch is absent)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_close, backend_or_skip

torch = pytest.importorskip("torch", reason="PyTorch is an optional oracle: pip install torch")
F = torch.nn.functional

BACKENDS = ["numpy", "numba", "opencl"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return backend_or_skip(request.param)


def t(a):
    return torch.tensor(np.asarray(a), requires_grad=True)


@pytest.mark.parametrize("n,c,h,w,o,k,stride,pad", [(1, 1, 9, 7, 4, 3, 1, 1), (5, 3, 8, 11, 6, 3, 2, 1),
                                                    (2, 3, 7, 7, 2, 5, 1, 2), (2, 2, 6, 9, 3, 1, 2, 0)])
def test_conv2d(backend, n, c, h, w, o, k, stride, pad):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    wt = rng.standard_normal((o, c, k, k), dtype=np.float32)
    b = rng.standard_normal(o, dtype=np.float32)
    xt, wtt, bt = t(x), t(wt), t(b)
    yt = F.conv2d(xt, wtt, bt, stride=stride, padding=pad)
    dy = rng.standard_normal(tuple(yt.shape), dtype=np.float32)
    yt.backward(torch.tensor(dy))
    s, p = (stride, stride), (pad, pad, pad, pad)
    y = backend.conv2d_forward(backend.from_numpy(x), backend.from_numpy(wt), backend.from_numpy(b), s, p)
    assert_close(backend.to_numpy(y), yt.detach().numpy())
    dx, dw, db = backend.conv2d_backward(backend.from_numpy(x), backend.from_numpy(wt),
                                         backend.from_numpy(dy), s, p, True, True)
    assert_close(backend.to_numpy(dx), xt.grad.numpy())
    assert_close(backend.to_numpy(dw), wtt.grad.numpy())
    assert_close(backend.to_numpy(db), bt.grad.numpy())


@pytest.mark.parametrize("n,c,h,w,o,k,stride,pad,dilation,groups", [
    (2, 3, 11, 9, 4, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1),        # dilation 2
    (3, 4, 10, 13, 6, (3, 3), (2, 1), (1, 2, 0, 1), (2, 1), 2),       # (2, 1), groups 2, asymmetric
    (1, 8, 9, 10, 8, (3, 5), (2, 2), (1, 2, 2, 1), (1, 1), 4),        # groups 4, stride 2, batch 1
    (2, 6, 9, 8, 6, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 6),         # depthwise, stride 2
    (2, 3, 10, 9, 6, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 3),        # depthwise x2, dilated
])
def test_conv2d_dilation_groups(backend, n, c, h, w, o, k, stride, pad, dilation, groups):
    """torch pads symmetrically: the asymmetric padding is applied to its input with F.pad, so
    its input gradient is that of the padded input, cut back to the image."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    wt = rng.standard_normal((o, c // groups) + k, dtype=np.float32)
    b = rng.standard_normal(o, dtype=np.float32)
    xt, wtt, bt = t(x), t(wt), t(b)
    top, bottom, left, right = pad
    yt = F.conv2d(F.pad(xt, (left, right, top, bottom)), wtt, bt, stride=stride,
                  dilation=dilation, groups=groups)
    dy = rng.standard_normal(tuple(yt.shape), dtype=np.float32)
    yt.backward(torch.tensor(dy))
    opts = dict(dilation=dilation, groups=groups)
    y = backend.conv2d_forward(backend.from_numpy(x), backend.from_numpy(wt), backend.from_numpy(b),
                               stride, pad, **opts)
    assert_close(backend.to_numpy(y), yt.detach().numpy())
    dx, dw, db = backend.conv2d_backward(backend.from_numpy(x), backend.from_numpy(wt),
                                         backend.from_numpy(dy), stride, pad, True, True, **opts)
    assert_close(backend.to_numpy(dx), xt.grad.numpy())
    assert_close(backend.to_numpy(dw), wtt.grad.numpy())
    assert_close(backend.to_numpy(db), bt.grad.numpy())


@pytest.mark.filterwarnings("ignore:Using padding='same'")    # torch: an odd total padding
def test_conv2d_layer_same_padding_matches_torch():
    """Conv2D(padding="same") with a dilation, as a layer, equals torch's padding="same" (stride 1),
    weights copied."""
    import nbcnn
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 9, 8), dtype=np.float32)
    layer = nbcnn.layers.Conv2D(6, (3, 4), padding="same", dilation=(2, 3), groups=2,
                                backend="numpy", seed=0)
    y = layer.forward(x)
    ref = torch.nn.Conv2d(4, 6, (3, 4), padding="same", dilation=(2, 3), groups=2)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(layer.get_weights()["weight"]))
        ref.bias.copy_(torch.tensor(layer.get_weights()["bias"]))
    assert_close(y, ref(torch.tensor(x)).detach().numpy())


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("k,s", [(2, 2), (3, 2), ((2, 3), (1, 2))])
def test_pooling(backend, kind, k, s):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, 7, 9), dtype=np.float32)
    k2 = k if isinstance(k, tuple) else (k, k)
    s2 = s if isinstance(s, tuple) else (s, s)
    xt = t(x)
    yt = (F.max_pool2d if kind == "max" else F.avg_pool2d)(xt, k2, s2)
    dy = rng.standard_normal(tuple(yt.shape), dtype=np.float32)
    yt.backward(torch.tensor(dy))
    if kind == "max":
        y, state = backend.maxpool2d_forward(backend.from_numpy(x), k2, s2)
        dx = backend.maxpool2d_backward(backend.from_numpy(dy), state)
    else:
        y = backend.avgpool2d_forward(backend.from_numpy(x), k2, s2)
        dx = backend.avgpool2d_backward(backend.from_numpy(dy), x.shape, k2, s2)
    assert_close(backend.to_numpy(y), yt.detach().numpy())
    assert_close(backend.to_numpy(dx), xt.grad.numpy())


@pytest.mark.parametrize("kind", ["max", "avg", "avg_exclude_pad"])
@pytest.mark.parametrize("x_shape,k,s,p,ceil", [
    ((2, 3, 7, 5), 3, 2, 1, False), ((1, 3, 7, 5), 3, 2, 1, True), ((3, 2, 7, 9), 2, 2, 0, True),
    ((2, 2, 5, 5), 2, 2, 1, True), ((2, 3, 7, 6), (3, 2), (2, 1), 1, True),
    ((1, 2, 6, 8), (3, 2), (1, 2), (1, 0), False), ((1, 1, 3, 3), 4, 2, 0, True)])
def test_pooling_padding_and_ceil_mode(backend, kind, x_shape, k, s, p, ceil):
    """The layers, as a user builds them, against F.max_pool2d / F.avg_pool2d: output size,
    values and input gradient."""
    from nbcnn import layers
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape, dtype=np.float32)
    xt = t(x)
    if kind == "max":
        yt = F.max_pool2d(xt, k, s, p, ceil_mode=ceil)
        layer = layers.MaxPool2D(k, s, padding=p, ceil_mode=ceil, backend=backend)
    else:
        include = kind == "avg"
        yt = F.avg_pool2d(xt, k, s, p, ceil_mode=ceil, count_include_pad=include)
        layer = layers.AvgPool2D(k, s, padding=p, ceil_mode=ceil, count_include_pad=include,
                                 backend=backend)
    dy = rng.standard_normal(tuple(yt.shape), dtype=np.float32)
    yt.backward(torch.tensor(dy))
    assert_close(backend.to_numpy(layer.forward(x)), yt.detach().numpy())
    assert_close(backend.to_numpy(layer.backward(dy)), xt.grad.numpy())


@pytest.mark.parametrize("shape", [(1, 3, 7, 5), (4, 6, 8, 8)])
def test_global_avgpool2d(backend, shape):
    rng = np.random.default_rng(6)
    x = rng.standard_normal(shape, dtype=np.float32)
    xt = t(x)
    yt = xt.mean((2, 3))
    dy = rng.standard_normal(tuple(yt.shape), dtype=np.float32)
    yt.backward(torch.tensor(dy))
    y = backend.global_avgpool2d_forward(backend.from_numpy(x))
    assert_close(backend.to_numpy(y), yt.detach().numpy())
    dx = backend.global_avgpool2d_backward(backend.from_numpy(dy), x.shape)
    assert_close(backend.to_numpy(dx), xt.grad.numpy())


def test_dense(backend):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 40), dtype=np.float32)
    w = rng.standard_normal((10, 40), dtype=np.float32)
    b = rng.standard_normal(10, dtype=np.float32)
    xt, wt, bt = t(x), t(w), t(b)
    yt = F.linear(xt, wt, bt)
    dy = rng.standard_normal((6, 10), dtype=np.float32)
    yt.backward(torch.tensor(dy))
    y = backend.dense_forward(backend.from_numpy(x), backend.from_numpy(w), backend.from_numpy(b))
    assert_close(backend.to_numpy(y), yt.detach().numpy())
    dx, dw, db = backend.dense_backward(backend.from_numpy(x), backend.from_numpy(w),
                                        backend.from_numpy(dy), True, True)
    for got, want in ((dx, xt.grad), (dw, wt.grad), (db, bt.grad)):
        assert_close(backend.to_numpy(got), want.numpy())


def test_batchnorm2d(backend):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 3, 5, 6), dtype=np.float32) * 2 + 0.5
    gamma = rng.standard_normal(3, dtype=np.float32)
    beta = rng.standard_normal(3, dtype=np.float32)
    rm_t, rv_t = torch.zeros(3), torch.ones(3)
    xt, gt, bt = t(x), t(gamma), t(beta)
    yt = F.batch_norm(xt, rm_t, rv_t, gt, bt, training=True, momentum=0.1, eps=1e-5)
    dy = rng.standard_normal(x.shape, dtype=np.float32)
    yt.backward(torch.tensor(dy))
    rm, rv = backend.from_numpy(np.zeros(3)), backend.from_numpy(np.ones(3))
    y, state = backend.batchnorm2d_forward_train(backend.from_numpy(x), backend.from_numpy(gamma),
                                                 backend.from_numpy(beta), rm, rv, 0.1, 1e-5)
    assert_close(backend.to_numpy(y), yt.detach().numpy(), rtol=2e-4)
    assert_close(backend.to_numpy(rm), rm_t.numpy())
    assert_close(backend.to_numpy(rv), rv_t.numpy())
    dx, dg, db = backend.batchnorm2d_backward(backend.from_numpy(dy), state, backend.from_numpy(gamma))
    assert_close(backend.to_numpy(dx), xt.grad.numpy(), rtol=5e-4, atol=5e-5)
    assert_close(backend.to_numpy(dg), gt.grad.numpy(), rtol=5e-4)
    assert_close(backend.to_numpy(db), bt.grad.numpy(), rtol=5e-4)
    y_eval = backend.batchnorm2d_forward_eval(backend.from_numpy(x), backend.from_numpy(gamma),
                                              backend.from_numpy(beta), rm, rv, 1e-5)
    want = F.batch_norm(torch.tensor(x), rm_t, rv_t, torch.tensor(gamma), torch.tensor(beta),
                        training=False, eps=1e-5)
    assert_close(backend.to_numpy(y_eval), want.numpy(), rtol=2e-4)


def test_softmax_cross_entropy(backend):
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((9, 10), dtype=np.float32) * 5
    labels = rng.integers(0, 10, 9)
    lt = t(logits)
    loss_t = F.cross_entropy(lt, torch.tensor(labels))
    loss_t.backward()
    loss, d, _ = backend.softmax_cross_entropy(backend.from_numpy(logits), backend.labels_from_numpy(labels))
    assert loss == pytest.approx(loss_t.item(), rel=1e-5)
    assert_close(backend.to_numpy(d), lt.grad.numpy())


@pytest.mark.parametrize("opt", ["sgd", "nesterov", "adam", "adamw", "rmsprop"])
def test_optimizers_match_torch(backend, opt):
    """Five steps of each optimizer update a parameter exactly as torch.optim does."""
    from nbcnn import optim
    rng = np.random.default_rng(5)
    p0 = rng.standard_normal((4, 5), dtype=np.float32)
    grads = [rng.standard_normal((4, 5), dtype=np.float32) for _ in range(5)]
    pt = torch.nn.Parameter(torch.tensor(p0))
    ours, theirs = {
        "sgd": (optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.01),
                torch.optim.SGD([pt], lr=0.1, momentum=0.9, weight_decay=0.01)),
        "nesterov": (optim.SGD(lr=0.1, momentum=0.9, nesterov=True),
                     torch.optim.SGD([pt], lr=0.1, momentum=0.9, nesterov=True)),
        "adam": (optim.Adam(lr=0.01, weight_decay=0.01), torch.optim.Adam([pt], lr=0.01, weight_decay=0.01)),
        "adamw": (optim.Adam(lr=0.01, weight_decay=0.1, decoupled=True),
                  torch.optim.AdamW([pt], lr=0.01, weight_decay=0.1)),
        "rmsprop": (optim.RMSprop(lr=0.01, momentum=0.5, weight_decay=0.01),
                    torch.optim.RMSprop([pt], lr=0.01, momentum=0.5, weight_decay=0.01)),
    }[opt]
    p = backend.from_numpy(p0)
    for g in grads:
        ours.step(backend, [(p, backend.from_numpy(g))])
        pt.grad = torch.tensor(g)
        theirs.step()
    assert_close(backend.to_numpy(p), pt.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("projection", [False, True], ids=["identity", "projection"])
def test_residual_block_matches_the_same_block_in_torch(backend, projection):
    """A ResNet basic block (stride 2 and 3 -> 6 channels through a 1x1 conv + BN projection, or
    the identity), written again with torch.nn.functional and the same weights: the output,
    the input gradient, every parameter gradient and the running statistics agree."""
    from nbcnn import layers as L
    rng = np.random.default_rng(7)
    c_in, c, stride = (3, 6, 2) if projection else (4, 4, 1)
    x = rng.standard_normal((2, c_in, 9, 7), dtype=np.float32)
    shortcut = [L.Conv2D(c, 1, stride=stride, bias=False), L.BatchNorm2D()] if projection else None
    block = L.Residual([L.Conv2D(c, 3, stride=stride, padding=1, bias=False), L.BatchNorm2D(),
                        L.ReLU(), L.Conv2D(c, 3, padding=1), L.BatchNorm2D()], shortcut,
                       backend=backend, seed=3)
    y = block.forward(x, training=True)
    dy = rng.standard_normal(tuple(y.shape), dtype=np.float32)
    dx = block.backward(dy)

    w = {k: (torch.tensor(v) if "running" in k else t(v)) for k, v in block.get_weights().items()}
    for k in w:                                       # the running statistics before the step
        if "running_mean" in k:
            w[k].zero_()
        elif "running_var" in k:
            w[k].fill_(1)

    def bn(h, p):
        return F.batch_norm(h, w[f"{p}.running_mean"], w[f"{p}.running_var"], w[f"{p}.weight"],
                            w[f"{p}.bias"], training=True, momentum=0.1, eps=1e-5)
    xt = t(x)
    h = F.relu(bn(F.conv2d(xt, w["body.0.weight"], stride=stride, padding=1), "body.1"))
    h = bn(F.conv2d(h, w["body.3.weight"], w["body.3.bias"], padding=1), "body.4")
    s = bn(F.conv2d(xt, w["shortcut.0.weight"], stride=stride), "shortcut.1") if projection else xt
    yt = h + s
    yt.backward(torch.tensor(dy))

    assert_close(backend.to_numpy(y), yt.detach().numpy(), rtol=2e-4)
    assert_close(backend.to_numpy(dx), xt.grad.numpy(), rtol=5e-4, atol=5e-5)
    grads = block.get_grads()
    assert sorted(grads) == sorted(k for k in w if "running" not in k)
    for k, g in grads.items():
        assert_close(g, w[k].grad.numpy(), rtol=5e-4, atol=5e-5, what=k)
    for k, v in block.get_weights().items():
        if "running" in k:
            assert_close(v, w[k].numpy(), what=k)

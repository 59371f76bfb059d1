"""The Numba backend compiles a training step's kernels up front, in worker processes, from a dry
run of the step (nbcnn/backends/numba/precompile.py): the dry run must record the kernels
without running them or touching the model, and the workers' compiled code must be what the
training process then loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import nbcnn
from nbcnn import threads
from nbcnn.backends.numba import _jit, precompile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = "conv(4,3,same)-relu-maxpool(2)-conv(5,3)-relu-flatten-dropout(0.3)-dense(3)"


def batch(n=6, shape=(2, 8, 8)):
    rng = np.random.default_rng(0)
    return rng.random((n,) + shape, dtype=np.float32), rng.integers(0, 3, n)


def test_dry_run_records_the_kernels_without_running_them():
    x, y = batch()
    model = nbcnn.build(SPEC, x.shape[1:], backend="numba", seed=1)
    out = np.full((2, 3), 7.0, np.float32)

    def run():
        model.forward(x, training=True)
        model.backend.dense_forward(np.ones((2, 4), np.float32), np.ones((3, 4), np.float32),
                                    None)
        out[:] = 1.0                            # host code still runs

    calls = precompile.kernels_of(run)
    names = [fn.py_func.__name__ for fn, _ in calls]
    assert {"conv", "to_flat_planes", "relu_forward", "maxpool_forward_2x2",
            "dropout_forward", "matmul_abt"} <= set(names)
    assert len(names) == len(set(names))        # each (kernel, types) once
    assert _jit.recording.calls is None and (out == 1.0).all()


def test_dry_run_records_the_padded_pooling_kernels_for_the_workers():
    x, y = batch(shape=(2, 9, 9))
    model = nbcnn.build("conv(4,3,same)-maxpool(3,2,padding=1)-"
                        "avgpool(2,ceil_mode=true,count_include_pad=false)-flatten-dense(3)",
                        x.shape[1:], backend="numba", seed=1)

    def run():
        _, dlogits, _ = model.backend.softmax_cross_entropy(model.forward(x, True), y)
        model.backward(dlogits)

    calls = precompile.kernels_of(run)
    assert {"maxpool_forward_padded", "maxpool_backward", "avgpool_forward_padded",
            "avgpool_backward_padded"} <= {fn.py_func.__name__ for fn, _ in calls}
    for fn, sig in calls:                       # each can be sent to a compile worker
        assert precompile.decode_types(precompile.encode_types(sig)) == sig


def test_recording_is_per_thread():
    """A dry run on one thread must not swallow the kernels another thread really runs."""
    import threading
    x = np.arange(8, dtype=np.float32) - 4
    got = {}
    with precompile.recording() as calls:
        worker = threading.Thread(target=lambda: got.update(
            y=nbcnn.get_backend("numba").activation_forward("relu", x, 0.0)))
        worker.start()
        worker.join()
    np.testing.assert_array_equal(got["y"], np.maximum(x, 0))
    assert calls == []


def test_argument_types_survive_the_trip_to_a_worker():
    import numba
    readonly = np.zeros(3, np.float32)
    readonly.flags.writeable = False
    args = (np.zeros((2, 3, 4, 5), np.float32), 3, True, np.float32(1), np.uint64(3),
            np.zeros(3, np.int32), np.zeros((3, 4), np.float32)[:, 1:], readonly)
    sig = tuple(numba.typeof(a) for a in args)
    encoded = json.loads(json.dumps(precompile.encode_types(sig)))
    assert precompile.decode_types(encoded) == sig
    with pytest.raises(ValueError, match="cannot pass"):
        precompile.encode_types((numba.typeof((1, 2)),))


#: grouped, dilated and depthwise convolutions (their own kernels, grouped.py)
GROUPED_SPEC = ("conv(4,3,same)-conv(8,3,same,dilation=2,groups=2)-relu-"
                "conv(8,3,stride=2,groups=8)-conv(4,3,padding=(2:1:0:1),dilation=(2:1),groups=4)-"
                "flatten-dense(3)")


def test_dry_run_records_the_grouped_kernels():
    x, _ = batch()
    model = nbcnn.build(GROUPED_SPEC, x.shape[1:], backend="numba", seed=1)

    def run():
        model.forward(x, training=True)
        model.backward(np.ones((len(x), 3), np.float32))

    names = {fn.py_func.__name__ for fn, _ in precompile.kernels_of(run)}
    assert {"grouped_forward", "grouped_backward_weights", "depthwise_forward",
            "depthwise_backward_weights", "backward_input"} <= names


@pytest.mark.parametrize("spec", [SPEC, GROUPED_SPEC], ids=["plain", "grouped"])
def test_first_step_is_the_same_with_and_without_the_dry_run(spec):
    x, y = batch()
    results = []
    for prepare in (True, False):
        model = nbcnn.build(spec, x.shape[1:], backend="numba", seed=3)
        model._prepared = not prepare           # False: the dry run happens on this first step
        opt = nbcnn.optim.Adam(lr=0.01)
        loss, correct = model.train_step(x, y, opt)
        results.append((loss, correct, model.get_weights(), opt.steps))
    (l1, c1, w1, s1), (l2, c2, w2, s2) = results
    assert l1 == l2 and c1 == c2 and s1 == s2 == 1
    for k in w1:
        np.testing.assert_array_equal(w1[k], w2[k])


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("NBCNN_PARALLEL_COMPILE", "0")
    assert not precompile.enabled()
    monkeypatch.setattr(precompile, "_compile_in_workers",
                        lambda *a: (_ for _ in ()).throw(AssertionError("workers started")))
    x, y = batch()
    model = nbcnn.build("flatten-dense(3)", x.shape[1:], backend="numba", seed=0)
    model.train_step(x, y, nbcnn.optim.SGD(lr=0.1))


_COLD_PROCESS = """
import json, numpy as np, nbcnn
from nbcnn.backends.numba import precompile
seen = []
real = precompile._compile_in_workers
precompile._compile_in_workers = lambda todo, n: (seen.extend(todo), real(todo, n))
model = nbcnn.build("flatten-dense(6)-relu-dense(3)", (1, 4, 4), backend="numba", seed=0)
x = np.random.default_rng(0).random((5, 1, 4, 4), dtype=np.float32)
model.train_step(x, np.array([0, 1, 2, 0, 1]), nbcnn.optim.SGD(lr=0.1))
print(json.dumps({fn.py_func.__name__: [fn.stats.cache_hits[sig], fn.stats.cache_misses[sig]]
                  for fn, sig in seen}))
"""


def test_workers_fill_the_cache_the_training_process_loads(tmp_path):
    """A fresh process with an empty cache: every kernel of the step is compiled by the workers
    and only loaded (a cache hit, no compile) by the training process."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"),
           "NBCNN_PARALLEL_COMPILE": "1"}
    done = subprocess.run([sys.executable, "-c", _COLD_PROCESS], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    if threads.available_cores() < 2:
        assert stats == {}                      # one core: nothing to parallelise
        return
    assert {"matmul_abt", "matmul_ab", "softmax_xent", "relu_forward", "sgd_plain"} <= set(stats)
    for name, (hits, misses) in stats.items():
        assert (hits, misses) == (1, 0), name


def test_dry_run_of_a_residual_model_records_the_sum(monkeypatch):
    """The dry run's twin is rebuilt from the model's config, blocks included, and the block's
    sum is among the kernels it records."""
    x, y = batch()
    model = nbcnn.build("conv(4,3,same)-residual(conv(4,3,same)-relu,conv(4,1))-relu-flatten-"
                        "dense(3)", x.shape[1:], backend="numba", seed=1)
    seen = {}
    monkeypatch.setattr(model.backend, "prepare_training",
                        lambda dry_step: seen.update(calls=precompile.kernels_of(dry_step)))
    before = model.get_weights()
    model.train_step(x, y, nbcnn.optim.SGD(lr=0.1))
    assert "add" in [fn.py_func.__name__ for fn, _ in seen["calls"]]
    assert not np.array_equal(model.get_weights()["1.shortcut.0.weight"],
                              before["1.shortcut.0.weight"])

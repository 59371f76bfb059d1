"""The benchmark produces a well-formed table (no test asserts a speed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import nbcnn
from nbcnn import bench
from nbcnn.cli import main


def test_multiply_adds_of_mnist_simple():
    model = nbcnn.build("mnist-simple", (1, 28, 28), backend="numpy")
    total, first = bench.multiply_adds(model)
    assert first == 28 * 28 * 8 * 9
    assert total == first + 8 * 14 * 14 * 10
    assert bench.flops_per_image(model, "inference") == 2 * total
    assert bench.flops_per_image(model, "train") == 2 * (3 * total - first)


def test_quick_bench_writes_a_well_formed_table(tmp_path, capsys):
    assert main(["bench", "--quick", "--out", str(tmp_path), "--backends", "numba"]) == 0
    table = pd.read_csv(tmp_path / "bench.csv")
    assert (tmp_path / "bench.png").stat().st_size > 0
    assert set(table["mode"]) == {"train", "inference"}
    assert {"numba"} <= set(table["backend"])
    for col in ("images_per_second", "ips_min", "ips_max", "gflops", "ms_per_batch"):
        assert (table[col] > 0).all(), col
    assert (table["ips_min"] <= table["images_per_second"]).all()
    assert (table["images_per_second"] <= table["ips_max"]).all()
    assert "images_per_second" in capsys.readouterr().out


@pytest.mark.parametrize("spec", [
    "conv(4,3,same)-relu-maxpool(2)-conv(6,2,same)-flatten-dense(5)",
    "conv(4,3,same)-maxpool(3,2,padding=1)-avgpool(2,ceil_mode=true,count_include_pad=false)-"
    "conv(6,2,same)-globalavgpool-dense(5)"])
def test_torch_peer_is_the_same_network(spec):
    torch = pytest.importorskip("torch")
    model = nbcnn.build(spec, (2, 9, 7), backend="numpy", seed=1)
    x = np.random.default_rng(0).random((3, 2, 9, 7), dtype=np.float32)
    with torch.no_grad():
        theirs = bench.to_torch(model)(torch.tensor(x)).numpy()
    np.testing.assert_allclose(model.predict(x), theirs, rtol=1e-4, atol=1e-5)


def test_multiply_adds_count_the_layers_inside_residual_blocks():
    model = nbcnn.build("conv(4,3,same)-residual(conv(4,3,same),conv(4,1))-flatten-dense(2)",
                        (1, 5, 5), backend="numpy")
    assert bench.multiply_adds(model) == (25 * 4 * 9 + 25 * 4 * 4 * 9 + 25 * 4 * 4 + 100 * 2,
                                          25 * 4 * 9)


def test_torch_peer_of_a_resnet_is_the_same_network():
    torch = pytest.importorskip("torch")
    assert "cifar-resnet20" in bench.ARCHS and bench.input_shape("cifar-resnet20") == (3, 32, 32)
    model = nbcnn.build("cifar-resnet8", (3, 12, 12), backend="numpy", seed=2)
    rng = np.random.default_rng(0)
    x = rng.random((4, 3, 12, 12), dtype=np.float32)
    model.fit((x, rng.integers(0, 10, 4)), epochs=1, batch_size=2, verbose=False)  # BN statistics
    net = bench.to_torch(model).eval()
    with torch.no_grad():
        theirs = net(torch.tensor(x)).numpy()
    np.testing.assert_allclose(model.predict(x), theirs, rtol=1e-4, atol=1e-5)


def test_torch_peer_on_cuda_runs_or_says_why():
    """--torch-device cuda: the peer on the GPU (same table, same network), or a clear error
    where torch sees no CUDA device (as here without a GPU)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="sees no CUDA device"):
            bench.TorchRunner("mnist-simple", 4, 1, device="cuda")
        return
    runner = bench.TorchRunner("mnist-simple", 4, 1, device="cuda")
    runner.train()
    runner.infer()
    assert "float32" in runner.device

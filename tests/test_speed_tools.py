"""The measuring tools and the CPU / threading policy around the kernels: the CPU description,
the vector-width switch, the peak, the per-layer profile, the contention run, core sharing and
the grid's local executor plan. No test asserts a speed."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import numba
import numpy as np
import pandas as pd
import pytest

import nbcnn
from nbcnn import bench, cpu, harness, optim, threads
from nbcnn.backends import numba_env
from nbcnn.cli import main
from nbcnn.harness import executors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

XEON = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
cpu MHz\t\t: 2699.998
flags\t\t: fpu sse sse2 avx fma avx2 avx512f avx512dq avx512bw avx512vl amx_tile

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: something else
"""
ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model name\t: AMD EPYC
cpu MHz\t\t: 2596.142
flags\t\t: fpu sse sse2 avx fma avx2 avx512f avx512bw
"""
HASWELL = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model name\t: Intel(R) Core(TM) i7-4770 CPU @ 3.40GHz
cpu MHz\t\t: 3400.000
flags\t\t: fpu sse sse2 avx fma avx2
"""
ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm
CPU implementer\t: 0x41
"""


# ---- the CPU ----------------------------------------------------------------------------------
def test_cpuinfo_parser_reads_the_first_processor():
    xeon = cpu.parse_cpuinfo(XEON)
    assert xeon.model.startswith("Intel(R) Xeon(R) Platinum 8481C")
    assert (xeon.vector_isa, xeon.vector_bits, xeon.vendor, xeon.family) == \
        ("AVX-512", 512, "GenuineIntel", 6)
    assert xeon.mhz == pytest.approx(2699.998)
    assert xeon.describe() == f"{xeon.model} (AVX-512)"
    # two 512-bit FMA pipes: 32 float32 lanes a cycle, x 2 FLOPs, x clock, x cores
    assert xeon.fma_lanes_per_cycle() == 32
    assert xeon.peak_estimate_gflops(2) == pytest.approx(2 * 2.699998 * 32 * 2)
    zen4 = cpu.parse_cpuinfo(ZEN4)
    assert (zen4.vector_isa, zen4.fma_lanes_per_cycle()) == ("AVX-512", 16)   # 2 x 256-bit
    haswell = cpu.parse_cpuinfo(HASWELL)
    assert (haswell.vector_isa, haswell.vector_bits, haswell.fma_lanes_per_cycle()) == \
        ("AVX2", 256, 16)
    arm = cpu.parse_cpuinfo(ARM)
    assert arm.vector_isa == "" and arm.peak_estimate_gflops(4) is None
    assert "fp" in arm.flags and "vector width unknown" in arm.describe()


def test_this_cpu_without_cpuinfo_still_names_something(tmp_path):
    c = cpu.this_cpu(str(tmp_path / "missing"))
    assert c.model and c.flags == frozenset()


# ---- the vector width -------------------------------------------------------------------------
def test_vector_width_decision():
    host = "+avx2,+avx512f,+fma"
    updates, notes = numba_env.decide({}, False, True, lambda: host)
    assert updates["NUMBA_CPU_FEATURES"] == host + ",-prefer-256-bit"
    assert updates["NBCNN_SET_NUMBA_CPU_FEATURES"] == updates["NUMBA_CPU_FEATURES"]
    updates, _ = numba_env.decide({"NBCNN_VECTOR_WIDTH": "256"}, False, True, lambda: host)
    assert updates["NUMBA_CPU_FEATURES"] == host + ",+prefer-256-bit"
    updates, notes = numba_env.decide({}, False, False, lambda: "+avx2")     # no AVX-512
    assert updates == {} and "widest" in notes["vector_width_note"]
    # a user's own Numba CPU settings, or Numba imported first: nothing is written
    for env in ({"NUMBA_CPU_FEATURES": "+avx2"}, {"NUMBA_CPU_NAME": "generic"}):
        updates, notes = numba_env.decide(env, False, True, lambda: host)
        assert "NUMBA_CPU_FEATURES" not in updates and "user" in notes["vector_width_note"]
    updates, notes = numba_env.decide({}, True, True, lambda: host)
    assert updates == {} and "imported before" in notes["vector_width_note"]
    # a child process inherits nbcnn's setting, and its own NBCNN_VECTOR_WIDTH still decides
    child = numba_env.decide({}, False, True, lambda: host)[0]
    child["NBCNN_VECTOR_WIDTH"] = "256"
    updates, _ = numba_env.decide(child, False, True, lambda: host)
    assert updates["NUMBA_CPU_FEATURES"] == host + ",+prefer-256-bit"
    child = {**numba_env.decide({"NBCNN_VECTOR_WIDTH": "256"}, False, True, lambda: host)[0]}
    assert numba_env.decide(child, False, False, lambda: "+avx2")[0]["NUMBA_CPU_FEATURES"] == "+avx2"
    with pytest.raises(ValueError, match="NBCNN_VECTOR_WIDTH.*auto, 256, 512.*'1024'"):
        numba_env.decide({"NBCNN_VECTOR_WIDTH": "1024"}, False, True, lambda: host)


def test_thread_wait_decision():
    assert numba_env.decide({}, False, False, str)[0] == {}
    assert numba_env.decide({"NBCNN_THREAD_WAIT": "passive"}, False, False, str)[0] == \
        {"OMP_WAIT_POLICY": "PASSIVE"}
    assert numba_env.decide({"NBCNN_THREAD_WAIT": "20000"}, False, False, str)[0] == \
        {"GOMP_SPINCOUNT": "20000"}
    # what the user set wins
    env = {"NBCNN_THREAD_WAIT": "passive", "OMP_WAIT_POLICY": "ACTIVE"}
    assert numba_env.decide(env, False, False, str)[0] == {}
    with pytest.raises(ValueError, match="NBCNN_THREAD_WAIT"):
        numba_env.decide({"NBCNN_THREAD_WAIT": "sometimes"}, False, False, str)


def test_thread_wait_reaches_gnu_openmp():
    """The spin count reaches libgomp when nbcnn is imported first (it prints its settings)."""
    code = ("import nbcnn, numba; numba.get_num_threads(); "
            "print('layer', numba.threading_layer())")
    env = {**os.environ, "PYTHONPATH": ROOT, "NBCNN_THREAD_WAIT": "20000",
           "OMP_DISPLAY_ENV": "VERBOSE"}
    for var in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER"):
        env.pop(var, None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    if "layer omp" not in done.stdout or "GOMP_SPINCOUNT" not in done.stderr:
        pytest.skip("Numba's threading layer here is not GNU OpenMP")
    assert "GOMP_SPINCOUNT = '20000'" in done.stderr


_WIDTH_CHECK = """
import json
import numpy as np
import nbcnn                     # first: Numba reads the CPU features when it is imported
import numba
from nbcnn.backends import get_backend, numba_env
from nbcnn.backends.numpy_ref import NumpyBackend
from nbcnn.backends.numba import activations
nb, ref = get_backend("numba"), NumpyBackend(np.float32)
rng = np.random.default_rng(0)
x = rng.standard_normal((1, 3, 9, 7)).astype(np.float32)
w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
b = rng.standard_normal(5).astype(np.float32)
errors = {}
def rel(got, want):
    return float(np.abs(got - want).max() / np.abs(want).max())
for stride, pad in (((1, 1), (1, 1, 1, 1)), ((2, 2), (1, 1, 1, 1)), ((1, 2), (0, 1, 0, 1))):
    got = nb.conv2d_forward(x, w, b, stride, pad)
    want = ref.conv2d_forward(x, w, b, stride, pad)
    errors[f"conv {stride} {pad}"] = rel(got, want)
    dy = rng.standard_normal(want.shape).astype(np.float32)
    for name, g, r in zip(("dx", "dw", "db"), nb.conv2d_backward(x, w, dy, stride, pad, True, True),
                          ref.conv2d_backward(x, w, dy, stride, pad, True, True)):
        errors[f"conv {stride} {pad} {name}"] = rel(g, r)
# both tiles of the SIMD plane kernel (13 filters: 4 + 4 + 4, then 1) on rows longer than a tile
x2 = rng.standard_normal((2, 6, 11, 37)).astype(np.float32)
w2 = rng.standard_normal((13, 6, 3, 3)).astype(np.float32)
errors["plane 13 filters"] = rel(nb.conv2d_forward(x2, w2, None, (1, 1), (1, 1, 1, 1)),
                                ref.conv2d_forward(x2, w2, None, (1, 1), (1, 1, 1, 1)))
# the dense backward's SIMD tiles: whole 4 x 3-vector tiles, a row tail, 1-vector tiles and
# scalar columns (100 = 2 * 48 + 4 with 16 lanes, 4 * 24 + 4 with 8), k in two blocks (600)
xd = rng.standard_normal((600, 100)).astype(np.float32)
wd = rng.standard_normal((7, 100)).astype(np.float32)
dyd = rng.standard_normal((600, 7)).astype(np.float32)
for name, g, r in zip(("dx", "dw", "db"), nb.dense_backward(xd, wd, dyd, True, True),
                      ref.dense_backward(xd, wd, dyd, True, True)):
    errors[f"dense {name}"] = rel(g, r)
# the 1 x 1 convolution's GEMM tiles (110 pixels: whole panels, then 1-vector or scalar columns)
x1 = rng.standard_normal((2, 7, 10, 11)).astype(np.float32)
w1 = rng.standard_normal((9, 7, 1, 1)).astype(np.float32)
want1 = ref.conv2d_forward(x1, w1, None, (1, 1), (0, 0, 0, 0))
errors["1x1"] = rel(nb.conv2d_forward(x1, w1, None, (1, 1), (0, 0, 0, 0)), want1)
dy1 = rng.standard_normal(want1.shape).astype(np.float32)
for name, g, r in zip(("dx", "dw"), nb.conv2d_backward(x1, w1, dy1, (1, 1), (0, 0, 0, 0), False, True),
                      ref.conv2d_backward(x1, w1, dy1, (1, 1), (0, 0, 0, 0), False, True)):
    errors[f"1x1 {name}"] = rel(g, r)
from nbcnn.backends.numba import simd
y = nb.activation_forward("relu", x, 0.0)
errors["relu"] = float(np.abs(y - ref.activation_forward("relu", x, 0.0)).max())
# nbcnn's relu kernel compiled afresh (a kernel loaded from the disk cache has no assembly)
fresh = numba.njit(parallel=True, fastmath=True)(activations.relu_forward.py_func)
fresh(x.reshape(-1), np.empty(x.size, np.float32))
asm = fresh.inspect_asm(fresh.signatures[0])
print(json.dumps({"width": numba_env.width(), "lanes": simd.LANES, "errors": errors,
                  "zmm": asm.count("%zmm"),
                  "ymm": asm.count("%ymm")}))
"""


@pytest.mark.skipif(not cpu.has_avx512(), reason="this CPU has no AVX-512")
@pytest.mark.parametrize("width", ["256", "512"])
def test_both_vector_widths_compute_the_reference(width):
    """Each vector width compiles every kernel for its own vectors (the plain loops for LLVM's
    vectoriser, the SIMD kernels for their LANES) and both compute the reference."""
    env = {**os.environ, "NBCNN_VECTOR_WIDTH": width, "PYTHONPATH": ROOT}
    done = subprocess.run([sys.executable, "-c", _WIDTH_CHECK], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["width"] == width
    assert out["lanes"] == {"256": 8, "512": 16}[width]          # the SIMD kernels' vectors
    for what, err in out["errors"].items():
        assert err < 1e-5, (what, err)
    # the relu kernel's machine code: 512-bit registers only when asked for
    assert (out["zmm"] > 0) == (width == "512"), out
    assert out["ymm"] + out["zmm"] > 0


def test_info_shows_the_vector_width(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "vector width" in out and "NBCNN_VECTOR_WIDTH" in out and "CPU:" in out
    from nbcnn.backends.numba import simd
    assert f"Numba SIMD kernels: {simd.LANES}-float vectors" in out


# ---- peak, profile, contention ----------------------------------------------------------------
def test_peak_subprocess_unpins_openblas(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Prescott")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "262144")
    peak = bench.measure_peak(n=256, threads=1, repeats=2)
    assert os.environ["OPENBLAS_CORETYPE"] == "Prescott"          # this process keeps its own
    assert peak["sgemm_n"] == 256 and peak["sgemm_threads"] == 1
    assert 0 < peak["peak_gflops_min"] <= peak["peak_gflops"]
    assert "kernel" in peak["peak_blas"]
    info = bench.machine(peak)
    assert info["cpu"] == cpu.this_cpu().model and info["peak_gflops"] == peak["peak_gflops"]
    assert info["vector_isa"] == cpu.this_cpu().vector_isa
    assert "GFLOP/s" in bench.machine_header(info)


def test_profile_table_of_a_tiny_preset():
    table = bench.profile_layers("mnist-tiny", "numba", 2, peak_gflops=100.0, warmup=1,
                                 repeats=2, min_seconds=0.001)
    assert list(table.columns) == bench.PROFILE_COLUMNS
    passes = table.groupby("layer_index")["pass"].apply(list).to_dict()
    # conv(8,3)-maxpool(2)-flatten-dense(10): the first layer has no input gradient
    assert passes == {0: ["forward", "backward", "weight_grad"], 1: ["forward", "backward"],
                      2: ["forward", "backward"],
                      3: ["forward", "backward", "weight_grad", "input_grad"]}
    assert list(table.layer.unique()) == ["Conv2D(8, 3x3)", "MaxPool2D(2x2)", "Flatten", "Dense(10)"]
    measured = table[~table.derived]
    assert (measured.ms > 0).all() and (measured.ms_min <= measured.ms).all()
    assert (measured.ms <= measured.ms_max).all()
    conv_fwd = table[(table.layer_index == 0) & (table["pass"] == "forward")].iloc[0]
    flops = 2 * 2 * 26 * 26 * 8 * 9
    assert conv_fwd.gflops == pytest.approx(flops / (conv_fwd.ms * 1e6))
    assert conv_fwd.fraction_of_peak == pytest.approx(conv_fwd.gflops / 100.0)
    assert table[table.layer_index.isin([1, 2])].gflops.isna().all()    # no FLOPs defined
    assert list(table.path.unique()) == ["0", "1", "2", "3"]
    summary = bench.profile_summary(table)
    assert len(summary) == 4 and summary.share.sum() == pytest.approx(1.0)


def test_profile_looks_inside_residual_blocks():
    spec = ("conv(4,3,same)-residual(conv(4,3,same)-relu-conv(4,3,same), conv(4,1))-relu"
            "-flatten-dense(10)")
    table = bench.profile_layers(spec, "numba", 2, peak_gflops=100.0, warmup=1, repeats=2,
                                 min_seconds=0.001)
    layers = table.drop_duplicates("layer_index")
    assert list(layers.path) == ["0", "1.body.0", "1.body.1", "1.body.2", "1.shortcut.0", "1",
                                 "2", "3", "4"]
    assert list(layers.layer)[5] == "Residual add"
    add = table[table.path == "1"]
    assert list(add["pass"]) == ["forward", "backward"] and add.derived.all()
    assert add.gflops.isna().all()
    inner = table[(table.path == "1.body.2") & (table["pass"] == "forward")].iloc[0]
    assert inner.gflops == pytest.approx(2 * 2 * 28 * 28 * 4 * 4 * 9 / (inner.ms * 1e6))
    summary = bench.profile_summary(table)
    assert len(summary) == 9 and summary.share.sum() == pytest.approx(1.0)


def test_profile_command_writes_the_tables(tmp_path, capsys):
    assert main(["bench", "--profile", "--quick", "--archs", "mnist-tiny", "--batch-sizes", "3",
                 "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "profile.csv")
    assert set(bench.PROFILE_COLUMNS) | set(bench.MACHINE_COLUMNS) == set(table.columns)
    assert (table.batch_size == 3).all() and (table.peak_gflops > 0).all()
    machine = json.loads((tmp_path / "machine.json").read_text())
    assert machine["cpu"] == table.cpu.iloc[0] and machine["sgemm_n"] == 1024
    out = capsys.readouterr().out
    assert machine["cpu"] in out and "measured peak" in out and "Conv2D(8, 3x3)" in out


def test_contention_command_writes_its_table(tmp_path, capsys):
    (tmp_path / "machine.json").write_text('{"peak_gflops": 123.0}\n')
    assert main(["bench", "--contention", "2", "--archs", "mnist-tiny", "--batch-sizes", "4",
                 "--contention-seconds", "0.3", "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "contention.csv")
    assert list(table.run) == ["alone", "together", "together"]
    assert (table.images_per_second > 0).all() and (table.cpu == cpu.this_cpu().model).all()
    together = table[table.run == "together"]
    assert together.total_images_per_second.iloc[0] == pytest.approx(together.images_per_second.sum())
    alone = table.images_per_second.iloc[0]
    assert together.ratio_to_alone.iloc[0] == pytest.approx(together.images_per_second.sum() / alone)
    assert "NBCNN_SHARE_CORES" in table.policy.iloc[0]
    assert "ratio_to_alone" in capsys.readouterr().out
    # it measures no peak, so it leaves the machine description of the run that did alone
    assert json.loads((tmp_path / "machine.json").read_text()) == {"peak_gflops": 123.0}
    with pytest.raises(ValueError, match="at least 2 copies"):
        bench.run_contention(["mnist-tiny"], [4], copies=1)


# ---- sharing the cores ------------------------------------------------------------------------
def test_share_threads():
    assert [threads.share_threads(8, n) for n in (0, 1, 2, 3, 8, 20)] == [8, 8, 4, 2, 1, 1]


def test_core_share_counts_running_processes(tmp_path, monkeypatch):
    share = threads.CoreShare(str(tmp_path / "running"))
    monkeypatch.setattr(threads, "_explicit", False)
    monkeypatch.delenv("NBCNN_SHARE_CORES", raising=False)
    before = numba.get_num_threads()
    try:
        share.update()
        assert share.running() == 1 and numba.get_num_threads() == threads.max_threads()
        other = open(tmp_path / "running" / "4194000", "a+")      # another live process
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        share.update()
        assert share.peers == 2
        assert numba.get_num_threads() == threads.share_threads(threads.max_threads(), 2)
        old = time.time() - 10                                     # alive but idle: not counted
        os.utime(other.name, (old, old))
        assert share.running() == 1 and os.path.exists(other.name)
        os.utime(other.name)
        other.close()                                              # it ended: its file goes
        assert share.running() == 1 and not os.path.exists(tmp_path / "running" / "4194000")
        share._announce()
        pid = os.fork()                                # a forked child announces itself anew
        if pid == 0:
            share._forget()
            share._announce()
            os._exit(0 if share.running() == 2 and os.path.exists(share._file.name) else 1)
        assert os.waitpid(pid, 0)[1] == 0
        assert share.running() == 1 and os.path.exists(os.path.join(share.folder, str(os.getpid())))
        monkeypatch.setenv("NBCNN_SHARE_CORES", "0")
        assert not share.enabled()
        monkeypatch.setattr(threads, "_explicit", True)
        monkeypatch.delenv("NBCNN_SHARE_CORES")
        assert not share.enabled()
    finally:
        share._withdraw()
        numba.set_num_threads(before)


def test_planned_threads_are_a_ceiling_that_sharing_lowers(tmp_path, monkeypatch):
    """A grid's planned count (plan_threads) is shared with the other running processes, up to
    the plan; an explicit count (set_num_threads, a grid file's threads, --threads) is kept."""
    from nbcnn.harness import runner
    monkeypatch.setattr(threads, "sharing", threads.CoreShare(str(tmp_path / "running")))
    monkeypatch.setattr(threads, "_explicit_env", False)
    monkeypatch.setattr(threads, "_explicit", threads._explicit)      # restored afterwards
    monkeypatch.setattr(threads, "_ceiling", None)
    monkeypatch.delenv("NBCNN_SHARE_CORES", raising=False)
    top = threads.max_threads()
    before = numba.get_num_threads()
    other = None
    try:
        assert runner._threads({}, top) == top and not threads._explicit
        assert threads._ceiling == top and threads.sharing.due()
        threads.sharing.update()                                   # alone: keeps the plan
        assert numba.get_num_threads() == top
        os.makedirs(tmp_path / "running", exist_ok=True)
        other = open(tmp_path / "running" / "4194001", "a+")      # another live process
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        threads.sharing.update()
        assert numba.get_num_threads() == threads.share_threads(top, 2)
        runner._threads({}, 1)                                     # a plan of 1 stays 1
        threads.sharing.update()
        assert numba.get_num_threads() == 1 and threads._ceiling == 1
        # kept exactly: the cell's own threads setting, the user's --threads
        assert runner._threads({"threads": top}, 1) == top and threads._explicit
        assert not threads.sharing.enabled()
        assert runner._threads({}, top, hint_explicit=True) == top and threads._explicit
    finally:
        if other is not None:
            other.close()
        threads.sharing._withdraw()
        numba.set_num_threads(before)


def test_thread_count_does_not_change_training():
    """Same seed, same history and weights on 1 and 2 threads (sharing changes speed only)."""
    if threads.max_threads() < 2:
        pytest.skip("needs 2 threads")
    rng = np.random.default_rng(0)
    x = rng.random((96, 1, 16, 16), dtype=np.float32)
    y = rng.integers(0, 3, 96)
    before = numba.get_num_threads()
    runs = []
    try:
        for n in (1, 2):
            nbcnn.set_num_threads(n)
            model = nbcnn.build("conv(8,3,same)-relu-maxpool(2)-conv(16,3,same)-relu-"
                                "maxpool(2)-flatten-dense(16)-relu-dense(3)", (1, 16, 16),
                                backend="numba", seed=5)
            h = model.fit((x, y), epochs=2, batch_size=48, optimizer=optim.SGD(lr=0.05, momentum=0.9),
                          verbose=False)
            runs.append((h.drop(columns=["seconds", "images_per_second"]), model.get_weights()))
    finally:
        nbcnn.set_num_threads(before)
    pd.testing.assert_frame_equal(runs[0][0], runs[1][0], check_exact=True)
    for k, v in runs[0][1].items():
        np.testing.assert_array_equal(v, runs[1][1][k])


# ---- the grid's local executor ----------------------------------------------------------------
def _cells(arch, n, **settings):
    return [SimpleNamespace(settings={"arch": arch, "dataset": "mnist", "batch_size": 10,
                                      **settings}) for _ in range(n)]


def _plan(cells, **kw):
    """plan_local with each group's cells replaced by their count."""
    return [(len(g), at_once, threads) for g, at_once, threads in executors.plan_local(cells, **kw)]


def test_local_plan():
    small, large = _cells("mnist-simple", 6), _cells("mnist-complex", 6, batch_size=64)
    assert _plan(small, cores=4) == [(6, 4, 1)]                    # one thread each
    assert _plan(large, cores=4) == [(6, 4, 1)]                    # whatever their size
    assert _plan(small[:2], cores=4) == [(2, 2, 2)]                # fewer cells: the cores shared
    assert _plan(small[:3], cores=4) == [(3, 3, 1)]
    assert _plan(small[:1], cores=4) == [(1, 1, 4)]                # one cell: every core
    assert _plan(small[:3] + large[:2], cores=2) == [(5, 2, 1)]
    assert _plan(_cells("mnist-simple", 3, threads=2), cores=4) == [(3, 2, 2)]
    assert _plan([], cores=4) == []
    # overrides
    assert _plan(large, workers=2, cores=4) == [(6, 2, 2)]
    assert _plan(large, workers=1, cores=4) == [(6, 1, 4)]         # one at a time, every core
    assert _plan(large, threads=1, cores=4) == [(6, 4, 1)]
    assert _plan(small, workers=3, threads=2, cores=4) == [(6, 3, 2)]
    assert _plan(small[:2], workers=5, cores=4) == [(2, 2, 2)]
    with pytest.raises(ValueError, match="--threads must be an int >= 1, got 0"):
        executors.plan_local(small, threads=0)


GRID = """
name = "t"
[fixed]
dataset = "shapes"
data = { n = 64, size = 12 }
epochs = 1
batch_size = 16
[grid]
arch = ["conv(4,3)-relu-maxpool(2)-flatten-dense(4)"]
seed = [0, 1]
"""


def test_local_executor_runs_small_cells_at_once_and_obeys_overrides(tmp_path, capsys):
    path = tmp_path / "g.toml"
    path.write_text(textwrap.dedent(GRID))
    lines = []
    runs = harness.run_grid(str(path), str(tmp_path / "a"), verbose=False, log=lines.append)
    assert (runs.status == "ok").all(), runs.error.tolist()
    if threads.available_cores() >= 2:
        assert any("2 cells, 2 at once, 1 thread(s) each" in str(m) for m in lines), lines
        assert (runs.num_threads == 1).all() and os.getpid() not in set(runs.pid)
    assert main(["grid", str(path), "--results", str(tmp_path / "b"), "--workers", "1",
                 "--threads", "1", "--quiet"]) == 0
    one = pd.read_csv(tmp_path / "b" / "t" / "runs.csv")
    assert (one.num_threads == 1).all() and set(one.pid) == {os.getpid()}   # here, in turn
    acc = runs.set_index("key").test_accuracy
    pd.testing.assert_series_equal(acc, one.set_index("key").test_accuracy.loc[acc.index])
    assert main(["grid", str(path), "--threads", "0"]) == 2
    assert "--threads must be >= 1" in capsys.readouterr().err
    assert main(["grid", str(path), "--results", str(tmp_path / "c"), "--dry-run",
                 "--workers", "1", "--threads", "2"]) == 0
    assert "local executor: 2 cell(s), 1 at once, 2 thread(s) each" in capsys.readouterr().out

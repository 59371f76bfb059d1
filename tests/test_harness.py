"""The experiments harness: grid files, keys, runs, resumable tables, failures, kill -9, Dask."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from nbcnn import harness, results
from nbcnn.harness import GridError, parse_grid
from nbcnn.cli import main as cli_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "conv(4,3)-relu-maxpool(2)-flatten-dense(4)"

BASE = f"""
name = "t"
[fixed]
dataset = "shapes"
data = {{ n = 160, size = 12 }}
epochs = 2
batch_size = 32
"""


def write(tmp_path, text, name="g.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


# ---- grid files ----------------------------------------------------------------------------
def test_expand_product_exclude_include(tmp_path):
    path = write(tmp_path, BASE + f"""
        [grid]
        arch = ["{TINY}", "mnist-tiny"]
        seed = [0, 1, 2]
        lr = [0.1, 0.01]

        [[exclude]]
        arch = "mnist-tiny"
        seed = [1, 2]

        [[include]]
        arch = "lenet5"
        optimizer = "adam"
        lr = [0.001, 0.002]
        momentum = 0.9          # not an Adam setting: left out of the cell
        """)
    grid = harness.load_grid(path)
    assert grid.name == "t"
    cells = grid.cells
    assert len(cells) == 2 * 3 * 2 - 2 * 2 + 2
    assert len({c.key for c in cells}) == len(cells)
    assert not any(c["arch"] == "mnist-tiny" and c["seed"] in (1, 2) for c in cells)
    adam = [c for c in cells if c["optimizer"] == "adam"]
    assert len(adam) == 2 and all("momentum" not in c.settings and c["beta1"] == 0.9 for c in adam)
    sgd = cells[0]
    assert sgd["data.n"] == 160 and sgd["data.size"] == 12 and sgd["backend"] == "numba"
    assert "beta1" not in sgd.settings
    assert grid.varying() == ["arch", "optimizer", "lr", "seed"]


def test_keys_stable_across_order_and_processes(tmp_path):
    a = parse_grid(textwrap.dedent(BASE + """
        [grid]
        lr = [0.1, 1]
        arch = ["mnist-tiny"]
        """), "a.toml")
    b = parse_grid(textwrap.dedent("""
        name = "t"
        [grid]
        arch = ["mnist-tiny"]
        lr = [1.0, 0.1]
        [fixed]
        batch_size = 32
        epochs = 2
        data = { size = 12, n = 160 }
        dataset = "SHAPES"
        """), "b.toml")
    assert sorted(c.key for c in a.cells) == sorted(c.key for c in b.cells)
    # int 1 and float 1.0 are the same lr
    assert {c.key for c in a.cells if c["lr"] == 1.0} == {c.key for c in b.cells if c["lr"] == 1.0}
    code = ("import sys, json; from nbcnn.harness import cell_key; "
            "print(cell_key(json.loads(sys.stdin.read())))")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(a.cells[0].settings),
                         capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**os.environ, "PYTHONHASHSEED": "123"})
    assert out.stdout.strip() == a.cells[0].key
    assert len(a.cells[0].key) == 12 and int(a.cells[0].key, 16) >= 0


def test_include_only_file(tmp_path):
    grid = parse_grid(textwrap.dedent(BASE + """
        [[include]]
        arch = ["mnist-tiny", "lenet5"]
        optimizer = "sgd"
        lr = 0.05
        momentum = 0.9
        [[include]]
        arch = "lenet5"
        optimizer = "adam"
        lr = 0.001
        """), "i.toml")
    assert [(c["arch"], c["optimizer"], c["lr"]) for c in grid.cells] == [
        ("mnist-tiny", "sgd", 0.05), ("lenet5", "sgd", 0.05), ("lenet5", "adam", 0.001)]


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(os.path.join(ROOT, "experiments"))
                                        if n.endswith(".toml")))
def test_shipped_studies_are_valid(name):
    grid = harness.load_grid(os.path.join(ROOT, "experiments", name))
    assert grid.cells and grid.name == name[:-5] and grid.description


def test_duplicate_cells_run_once(tmp_path):
    grid = parse_grid(textwrap.dedent(BASE + """
        [grid]
        arch = ["mnist-tiny"]
        beta1 = [0.8, 0.9]       # SGD takes no beta1: both cells resolve the same
        """), "d.toml")
    assert len(grid.cells) == 1


BAD = [
    ("[fixed]\nbatchsize = 3\narch='mnist-tiny'", "batchsize"),
    ("[fixed]\narch='mnist-tiny'\nbatch_size = '32'", "batch_size"),
    ("[fixed]\narch='mnist-tiny'\nbatch_size = 0", "batch_size"),
    ("[fixed]\narch='mnist-tiny'\nnesterov = 1", "nesterov"),
    ("[grid]\narch = ['mnist-tiny', 'mnist-huge']", "arch"),
    ("[grid]\narch = ['conv(8,3)-frobnicate-dense(10)']", "arch"),
    ("[fixed]\narch='mnist-tiny'\n[grid]\nbackend = ['numba', 'cuda']", "backend"),
    ("[fixed]\narch='mnist-tiny'\ndataset = 'imagenet'", "dataset"),
    ("[fixed]\narch='mnist-tiny'\noptimizer = 'lbfgs'", "optimizer"),
    ("[fixed]\narch='mnist-tiny'\nschedule = 'cosine:abc'", "schedule"),
    ("[fixed]\narch='mnist-tiny'\ndata = { sise = 3 }", "data.sise"),
    ("[fixed]\narch='mnist-tiny'\n[grid]\nseed = 3", "seed"),
    ("[fixed]\narch='mnist-tiny'\n[grid]\nseed = []", "seed"),
    ("[fixed]\narch='mnist-tiny'\nseed = 1\n[grid]\nseed = [1, 2]", "seed"),
    ("arch = 'mnist-tiny'", "arch"),
    ("[fixed]\narch='mnist-tiny'\n[[exclude]]\nbackend = 'cuda'", "backend"),
    ("[fixed]\narch='mnist-tiny'\nnesterov = true", "nesterov"),
    ("[fixed]\nlr = 0.1", "arch"),
    ("[fixed]\narch='mnist-tiny'\n[grid]\nseed = [1]\n[[exclude]]\nseed = 1", "no cells"),
    ("name = 3\n[fixed]\narch='mnist-tiny'", "name"),
    ("[fixed\narch='mnist-tiny'", "TOML"),
]


@pytest.mark.parametrize("text,word", BAD)
def test_bad_files_name_file_and_key(tmp_path, text, word):
    path = write(tmp_path, text, "bad_grid.toml")
    with pytest.raises(GridError) as info:
        harness.load_grid(path)
    msg = str(info.value)
    assert "bad_grid.toml" in msg and word in msg, msg


def test_bad_file_through_the_command(tmp_path, capsys):
    path = write(tmp_path, "[fixed]\narch='mnist-tiny'\nbackend='cuda'\n", "bad.toml")
    assert grid_main([path, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and "backend" in err and "cuda" in err


def test_only_and_dry_run(tmp_path, capsys):
    path = write(tmp_path, BASE + f"""
        [grid]
        arch = ["{TINY}", "mnist-tiny"]
        seed = [0, 1, 2]
        """)
    grid = harness.load_grid(path)
    assert len(grid.filter(["seed=1"])) == 2
    assert len(grid.filter(["seed=1", "seed=2"])) == 4
    assert len(grid.filter(["seed=1", "arch=mnist-tiny"])) == 1
    assert len(grid.filter([f"key={grid.cells[3].key[:6]}"])) == 1
    with pytest.raises(GridError, match="colour"):
        grid.filter(["colour=red"])
    with pytest.raises(GridError, match="seed"):
        grid.filter(["seed=abc"])
    assert grid_main([path, "--dry-run", "--results", str(tmp_path / "r"), "--only", "seed=2"]) == 0
    out = capsys.readouterr().out
    assert "2 cells of 6" in out and "todo" in out and grid.cells[2].key in out
    assert not (tmp_path / "r").exists()            # a dry run writes nothing


# ---- runs and tables -----------------------------------------------------------------------
def test_run_resume_and_tables(tmp_path):
    path = write(tmp_path, BASE + f"""
        [grid]
        arch = ["{TINY}"]
        seed = [0, 1]
        """)
    res_dir = str(tmp_path / "res")
    runs = harness.run_grid(path, res_dir, verbose=False, log=lambda m: None)
    assert list(runs["status"]) == ["ok", "ok"]
    folder = os.path.join(res_dir, "t")
    assert open(os.path.join(folder, "grid.toml")).read() == open(path).read()
    r = results.load(folder)
    runs_t, epochs_t = r                                   # unpacks as a tuple
    assert len(runs_t) == 2 and len(epochs_t) == 4
    for col in ["key", "status", "error", "dataset", "arch", "backend", "optimizer", "lr",
                "batch_size", "epochs", "seed", "val_fraction", "data.n", "data.size",
                "train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss",
                "test_accuracy", "wall_seconds", "compile_seconds", "images_per_second",
                "seconds_per_epoch", "device", "num_threads", "nbcnn_version", "numpy_version",
                "numba_version", "pyopencl_version", "git_commit", "hostname", "started",
                "finished", "params", "n_train", "n_val", "n_test"]:
        assert col in runs_t.columns, col
    assert (runs_t["n_train"] == 144).all() and (runs_t["n_val"] == 16).all()
    assert runs_t["test_accuracy"].between(0, 1).all()
    assert set(epochs_t.columns) >= {"key", "arch", "seed", "epoch", "val_accuracy", "seconds",
                                     "elapsed_seconds"}
    csv = pd.read_csv(os.path.join(folder, "runs.csv"))
    assert sorted(csv["key"]) == sorted(runs_t["key"])
    assert len(pd.read_csv(os.path.join(folder, "epochs.csv"))) == 4
    for key in runs_t["key"]:
        assert r.model_path(key) and r.predictions(key)["y_pred"].shape == (160,)
        assert r.load_model(key).count_params() > 0

    before = {k: os.stat(os.path.join(folder, "records", f"{k}.json")).st_mtime_ns
              for k in runs_t["key"]}
    again = harness.run_grid(path, res_dir, verbose=False, log=lambda m: None)
    assert list(again["key"]) == list(runs["key"])
    after = {k: os.stat(os.path.join(folder, "records", f"{k}.json")).st_mtime_ns
             for k in runs_t["key"]}
    assert before == after                                 # nothing ran again


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_failures_recorded_grid_goes_on_and_retried(tmp_path):
    path = write(tmp_path, BASE + f"""
        [grid]
        arch = ["{TINY}", "conv(4,20)-flatten-dense(4)"]   # the second fails when built (12 px)
        lr = [0.05, 1e30]                                    # and 1e30 diverges
        """)
    res_dir = str(tmp_path / "res")
    runs = harness.run_grid(path, res_dir, verbose=False, log=lambda m: None)
    assert len(runs) == 4
    ok = runs[runs["status"] == "ok"]
    assert list(ok["arch"]) == [TINY] and list(ok["lr"]) == [0.05]
    failed = runs[runs["status"] == "failed"]
    assert len(failed) == 3 and (failed["error"].str.len() > 0).all()
    assert failed["error"].str.contains("TrainingDiverged").sum() == 1
    folder = os.path.join(res_dir, "t")
    for key in failed["key"]:
        assert "Traceback" in open(os.path.join(folder, "logs", f"{key}.txt")).read()
    assert grid_main([path, "--results", res_dir, "--quiet"]) == 1   # retried, fail again
    runs2, _ = results.load(folder)
    assert len(runs2) == 4 and runs2["key"].is_unique
    ok_key = ok["key"].iloc[0]
    assert (runs2.set_index("key").loc[ok_key, "finished"] == ok["finished"].iloc[0])
    for key in failed["key"]:                              # the failed ones ran again
        assert runs2.set_index("key").loc[key, "started"] >= failed.set_index("key").loc[key, "started"]


def test_load_dedupes_csv_keeping_latest_ok(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    pd.DataFrame([
        {"key": "a", "status": "ok", "error": "", "test_accuracy": 0.5, "finished": "2024-01-01"},
        {"key": "a", "status": "failed", "error": "boom", "test_accuracy": None, "finished": "2024-01-03"},
        {"key": "a", "status": "ok", "error": "", "test_accuracy": 0.7, "finished": "2024-01-02"},
        {"key": "b", "status": "failed", "error": "x", "test_accuracy": None, "finished": "2024-01-01"},
        {"key": "b", "status": "failed", "error": "y", "test_accuracy": None, "finished": "2024-01-02"},
    ]).to_csv(folder / "runs.csv", index=False)
    pd.DataFrame({"key": ["a", "a", "a", "b"], "epoch": [1, 2, 2, 1],
                  "val_accuracy": [0.1, 0.2, 0.2, 0.0]}).to_csv(folder / "epochs.csv", index=False)
    runs, epochs = results.load(folder)
    assert list(runs["key"]) == ["a", "b"]
    assert runs.set_index("key").loc["a", "test_accuracy"] == 0.7
    assert runs.set_index("key").loc["b", "error"] == "y"
    assert list(epochs["epoch"]) == [1, 2]


def test_lock_keeps_a_second_writer_out(tmp_path):
    store = results.ResultStore(tmp_path / "s")
    (tmp_path / "s" / "records" / ".tmp-abc-x.json").write_text("{")   # torn, from a kill
    with store:
        assert not (tmp_path / "s" / "records" / ".tmp-abc-x.json").exists()
        assert results.load(tmp_path / "s").runs.empty
        with pytest.raises(RuntimeError, match="in use"):
            results.ResultStore(tmp_path / "s").lock()
    results.ResultStore(tmp_path / "s").lock()            # free again


def is_record(name: str) -> bool:
    return name.endswith(".json") and not name.startswith(".")


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux /proc)."""
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(c) for c in f.read().split()]
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"          # a zombie has exited
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_kill_minus_9_mid_grid_then_resume(tmp_path):
    path = write(tmp_path, """
        name = "k"
        [fixed]
        dataset = "shapes"
        data = { n = 400, size = 12 }
        epochs = 3
        batch_size = 16
        threads = 1
        [grid]
        arch = ["conv(4,3)-relu-maxpool(2)-flatten-dense(4)", "conv(6,3)-relu-maxpool(2)-flatten-dense(4)"]
        seed = [0, 1, 2, 3]
        """)
    res_dir = tmp_path / "res"
    records = res_dir / "k" / "records"
    cmd = [sys.executable, "-m", "nbcnn", "grid", path, "--results", str(res_dir), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if records.is_dir() and any(is_record(n) for n in os.listdir(records)):
            break
        time.sleep(0.02)
    time.sleep(0.1)
    workers = children(proc.pid)            # two cells at once: two worker processes
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the grid finished before it could be killed"
    deadline = time.monotonic() + 10        # orphaned workers notice and exit
    while time.monotonic() < deadline and any(alive(w) for w in workers):
        time.sleep(0.1)
    assert workers and not any(alive(w) for w in workers)
    # a kill mid-write leaves a ".tmp-*.json" that is not a record (the resume removes it)
    first = {n: (records / n).read_bytes() for n in os.listdir(records) if is_record(n)}
    assert 1 <= len(first) < 8
    for data in first.values():                      # whole records only
        assert json.loads(data)["status"] == "ok"
    runs, _ = results.load(res_dir / "k")
    assert len(runs) == len(first) and runs["key"].is_unique

    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"{len(first)} already done, {8 - len(first)} to run" in out.stderr
    for name, data in first.items():                 # finished cells were not run again
        assert (records / name).read_bytes() == data
    runs, epochs = results.load(res_dir / "k")
    assert len(runs) == 8 and runs["key"].is_unique and (runs["status"] == "ok").all()
    assert len(epochs) == 8 * 3 and not epochs.duplicated(["key", "epoch"]).any()
    csv = pd.read_csv(res_dir / "k" / "runs.csv")
    assert len(csv) == 8 and csv["key"].is_unique
    assert len(pd.read_csv(res_dir / "k" / "epochs.csv")) == 24
    for folder in ("", "records", "models", "predictions"):   # a killed writer's leftovers go
        assert not [n for n in os.listdir(res_dir / "k" / folder) if n.startswith(".tmp-")]


# ---- Dask ----------------------------------------------------------------------------------
def test_dask_local_cluster_two_workers(tmp_path):
    pytest.importorskip("dask.distributed")
    path = write(tmp_path, BASE + f"""
        [grid]
        arch = ["{TINY}"]
        seed = [0, 1, 2]
        """)
    res_dir = str(tmp_path / "res")
    lines = []
    runs = harness.run_grid(path, res_dir, executor="dask", workers=2, verbose=False,
                            log=lines.append)
    assert any("2 workers x 1 threads" in str(m) for m in lines), lines
    assert len(runs) == 3 and (runs["status"] == "ok").all(), runs["error"].tolist()
    assert (runs["num_threads"] == 1).all()
    assert os.getpid() not in set(runs["pid"])             # ran in the workers
    local = harness.run_grid(path, str(tmp_path / "res2"), verbose=False, log=lambda m: None)
    # same seeds, same results whichever executor ran them
    pd.testing.assert_series_equal(runs["test_accuracy"], local["test_accuracy"])
    assert len(results.load(os.path.join(res_dir, "t")).epochs) == 6


def test_cli_knows_grid_and_plot():
    cli = pytest.importorskip("nbcnn.cli")
    try:
        parser = cli.make_parser()
    except ImportError as exc:            # another command's module is not there yet
        pytest.skip(f"nbcnn.cli cannot load all commands: {exc}")
    args = parser.parse_args(["grid", "x.toml", "--dry-run", "--only", "seed=1"])
    assert args.command == "grid" and args.only == ["seed=1"]
    assert parser.parse_args(["plot", "results/x"]).command == "plot"


def grid_main(argv):
    """``nbcnn grid ARGV...``, returning the exit status."""
    return cli_main(["grid", *argv])

"""Grids and the training features: augment / early_stopping settings, cells that checkpoint and
continue after a kill -9, exploding losses recorded."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from nbcnn import harness, results
from nbcnn.harness import GridError, parse_grid
from interrupt import kill_once_checkpointed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "conv(4,3)-relu-maxpool(2)-flatten-dense(4)"
BASE = f"""
name = "t"
[fixed]
dataset = "shapes"
data = {{ n = 160, size = 12 }}
arch = "{TINY}"
"""
TIMING = ["seconds", "elapsed_seconds", "images_per_second"]


def write(tmp_path, text, name="g.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_settings_are_checked_and_defaults_keep_old_keys():
    plain = parse_grid(BASE)
    explicit = parse_grid(BASE + 'augment = "none"\nearly_stopping = "off"\n'
                          'early_stopping_monitor = "val_loss"\n')
    assert plain.cells[0].key == explicit.cells[0].key
    optional = {"augment", "early_stopping", "early_stopping_monitor"}
    assert not optional & set(plain.cells[0].settings)
    grid = parse_grid(BASE + '[grid]\naugment = ["flip, crop:4", "translate:2"]\n')
    assert [c["augment"] for c in grid.cells] == ["crop:4,flip", "translate:2"]
    assert grid.varying() == ["augment"]
    stop = parse_grid(BASE + "early_stopping = 3\n").cells[0].settings
    assert stop["early_stopping"] == 3 and stop["early_stopping_monitor"] == "val_loss"


@pytest.mark.parametrize("extra,word", [
    ('augment = "rotate:3"', "[fixed] augment: augment 'rotate:3': unknown part"),
    ("early_stopping = 0", "[fixed] early_stopping: must be >= 1"),
    ('early_stopping = 2\nearly_stopping_monitor = "loss"', "unknown monitor 'loss'"),
    ("early_stopping = 2\nval_fraction = 0", "needs validation (val_fraction > 0)"),
])
def test_bad_settings_name_the_key(extra, word):
    with pytest.raises(GridError) as info:
        parse_grid(BASE + extra + "\n", "g.toml")
    assert word in str(info.value)


def test_grid_records_stopping_kept_epoch_and_explosions(tmp_path):
    path = write(tmp_path, BASE + """
        lr = 0.05
        epochs = 4
        augment = "crop:1,flip"
        batch_size = 8
        early_stopping = 2
        early_stopping_monitor = "train_loss"
        [grid]
        schedule = ["constant", "exp:30"]
        [[include]]
        arch = "flatten-dense(4)"
        schedule = "exp:30"
        momentum = 0.9
        lr = 0.01
        """)
    runs = harness.run_grid(path, str(tmp_path / "res"), verbose=False, log=lambda m: None)
    assert (runs["status"] == "ok").all(), runs["error"].tolist()
    r = results.load(tmp_path / "res" / "t")
    for col in ("augment", "early_stopping", "stopped_epoch", "kept_epoch", "warning"):
        assert col in r.runs.columns, col
    assert set(r.epochs.columns) >= {"warning", "kept"}
    for _, run in r.runs.iterrows():
        e = r.epochs[r.epochs["key"] == run["key"]]
        assert e["kept"].sum() == 1
        assert int(e.loc[e["kept"], "epoch"].iloc[0]) == run["kept_epoch"]
        if pd.notna(run["stopped_epoch"]):
            assert len(e) == run["stopped_epoch"] < 4
    assert r.runs["stopped_epoch"].notna().any()
    exploding = r.runs[r.runs["arch"] == "flatten-dense(4)"].iloc[0]
    assert exploding["warning"].startswith("loss exploding")
    normal = r.runs[(r.runs["arch"] == TINY) & (r.runs["schedule"] == "constant")].iloc[0]
    assert pd.isna(normal["warning"]) or normal["warning"] == ""
    assert not os.listdir(tmp_path / "res" / "t" / "checkpoints")     # deleted once recorded


def test_grid_killed_mid_cell_continues_that_cell(tmp_path):
    grid_text = """
        name = "k"
        [fixed]
        dataset = "shapes"
        data = { n = 1700, size = 16 }
        arch = "conv(8,3)-relu-maxpool(2)-flatten-dropout(0.2)-dense(4)"
        epochs = 6
        batch_size = 8
        optimizer = "adam"
        lr = 0.002
        augment = "crop:2,flip"
        threads = 1
        """
    path = write(tmp_path, grid_text)
    res = tmp_path / "res"
    cmd = [sys.executable, "-m", "nbcnn", "grid", path, "--results", str(res), "--quiet"]
    key = parse_grid(textwrap.dedent(grid_text), path).cells[0].key
    point = res / "k" / "checkpoints" / f"{key}.ckpt.npz"
    done = kill_once_checkpointed(cmd, point)
    assert 2 <= done < 6 and not (res / "k" / "records" / f"{key}.json").exists()
    # the dry run says how far the killed cell got
    table = harness.plan(parse_grid(textwrap.dedent(grid_text), path), str(res))
    planned = table.iloc[0]
    assert planned["status"] == "checkpointed" and planned["key"] == key
    assert (planned["epochs_done"], planned["epochs"]) == (done, 6)
    assert planned["hours"] > 0 and 0 <= planned["val_accuracy"] <= 1
    assert harness.progress_line(table).startswith(f"1 cell(s) checkpointed: {done}/6 epochs")

    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "1 to run (1 continued from their checkpoints)" in out.stderr
    assert f"continued after epoch {done}" in out.stderr
    assert not point.exists()
    resumed = results.load(res / "k")
    assert resumed.runs["resumed_epochs"].iloc[0] == done

    # the same grid never interrupted, in this process: the same epochs and test accuracy
    harness.run_grid(path, str(tmp_path / "plain"), verbose=False, log=lambda m: None)
    plain = results.load(tmp_path / "plain" / "k")
    pd.testing.assert_frame_equal(resumed.epochs.drop(columns=TIMING),
                                  plain.epochs.drop(columns=TIMING), check_exact=True)
    assert resumed.runs["test_accuracy"].iloc[0] == plain.runs["test_accuracy"].iloc[0]
    assert plain.runs["resumed_epochs"].iloc[0] == 0


def test_grid_cell_with_a_refused_checkpoint_says_which_file_to_delete(tmp_path):
    import numpy as np

    import nbcnn
    path = write(tmp_path, BASE + "epochs = 2\nbatch_size = 16\n")
    res = tmp_path / "res"
    key = parse_grid(textwrap.dedent(BASE + "epochs = 2\nbatch_size = 16\n"), path).cells[0].key
    point = res / "t" / "checkpoints" / f"{key}.ckpt.npz"
    point.parent.mkdir(parents=True)
    # another run's checkpoint at the cell's path (other data and settings)
    rng = np.random.default_rng(0)
    other = nbcnn.build(TINY, input_shape=(1, 12, 12), backend="numpy", seed=0)
    other.fit((rng.random((8, 1, 12, 12), dtype=np.float32), rng.integers(0, 4, 8)), epochs=1,
              checkpoint=point, verbose=False)
    before = point.read_bytes()

    cmd = [sys.executable, "-m", "nbcnn", "grid", path, "--results", str(res), "--quiet"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    line = (f"CheckpointMismatch: checkpoint {point} refused; delete that file to restart this "
            "cell from its first epoch")
    assert line in out.stderr and "data.sha1" in out.stderr
    assert f"[{key}] its checkpoint {point} was refused and will be again: delete it" \
        in out.stderr
    assert point.read_bytes() == before                    # never deleted by nbcnn
    record = results.load(res / "t").runs.iloc[0]
    assert record["status"] == "failed" and record["checkpoint_refused"] == str(point)
    assert record["error"].startswith(line)

    # the same again is refused again; once the file is deleted the cell runs from epoch 1
    again = harness.run_grid(path, str(res), verbose=False, log=lambda m: None)
    assert again["status"].iloc[0] == "failed" and point.exists()
    point.unlink()
    runs = harness.run_grid(path, str(res), verbose=False, log=lambda m: None)
    assert runs["status"].iloc[0] == "ok" and runs["resumed_epochs"].iloc[0] == 0

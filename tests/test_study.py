"""A study folder's views agree: tables rebuilt at every grid start, studies extended by a second
grid file, fixed settings that conflict refused."""

from __future__ import annotations

import os
import textwrap

import pandas as pd
import pytest

from nbcnn import harness, plots, results
from nbcnn.cli import main as cli_main
from nbcnn.harness import GridError

GRID = """
name = "s"
save_models = false
[fixed]
dataset = "shapes"
data = {{ n = 120, size = 10 }}
arch = "flatten-dense(4)"
epochs = {epochs}
batch_size = 20
threads = 1
[grid]
seed = {seeds}
"""


def grid_file(tmp_path, name, seeds, epochs=1):
    path = tmp_path / name
    path.write_text(textwrap.dedent(GRID.format(seeds=seeds, epochs=epochs)))
    return str(path)


def quiet(path, res, **kw):
    return harness.run_grid(path, str(res), verbose=False, log=lambda m: None, **kw)


def csv_tables(folder):
    return (pd.read_csv(os.path.join(folder, "runs.csv")),
            pd.read_csv(os.path.join(folder, "epochs.csv")))


def test_tables_rebuilt_when_a_grid_starts_with_nothing_to_run(tmp_path):
    path = grid_file(tmp_path, "g.toml", "[0]")
    quiet(path, tmp_path / "res")
    folder = tmp_path / "res" / "s"
    # killed right after the record was written: no runs.csv yet, epochs.csv of an older state
    os.unlink(folder / "runs.csv")
    (folder / "epochs.csv").write_text("key,epoch\nstale,1\n")
    lines = []
    harness.run_grid(path, str(tmp_path / "res"), verbose=False, log=lines.append)
    assert "1 already done, 0 to run" in lines[0]
    runs, epochs = csv_tables(folder)
    want_runs, want_epochs = results.load(folder)
    assert list(runs["key"]) == list(want_runs["key"])
    assert list(epochs["key"]) == list(want_epochs["key"]) and "stale" not in set(epochs["key"])


def test_a_second_grid_file_extends_the_study_and_every_view_agrees(tmp_path, capsys,
                                                                    monkeypatch):
    res = tmp_path / "res"
    first = grid_file(tmp_path, "a.toml", "[0]")
    second = grid_file(tmp_path, "b.toml", "[1, 2]")      # same name, new seeds
    quiet(first, res)
    quiet(second, res)
    folder = res / "s"
    loaded = results.load(folder)
    assert len(loaded.runs) == 3
    runs_csv, epochs_csv = csv_tables(folder)
    assert sorted(runs_csv["key"]) == sorted(loaded.runs["key"])
    assert sorted(set(epochs_csv["key"])) == sorted(loaded.runs["key"])
    # both grid file versions are kept, and each run names the one that made it
    versions = sorted(os.listdir(folder / "grids"))
    assert len(versions) == 2
    texts = {open(folder / "grids" / v).read() for v in versions}
    assert texts == {open(first).read(), open(second).read()}
    assert (folder / "grid.toml").read_text() == open(second).read()
    made_by = loaded.runs.set_index("seed")["grid_file"]
    assert made_by[0] != made_by[1] == made_by[2]
    assert open(folder / made_by[0]).read() == open(first).read()

    assert cli_main(["report", str(folder)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[-6] == "3"           # the seeds column: all three runs
    drawn = []

    def spy(epochs, **kw):
        drawn.append(set(epochs["key"]))
        return plots._empty("x", "spy")
    monkeypatch.setattr(plots, "learning_curves", spy)
    plots.plot_study(folder, out=str(tmp_path / "fig"))
    assert drawn == [set(loaded.runs["key"])]


def test_a_grid_whose_fixed_settings_conflict_is_refused_unless_forced(tmp_path, capsys):
    res = tmp_path / "res"
    quiet(grid_file(tmp_path, "a.toml", "[0]", epochs=1), res)
    other = grid_file(tmp_path, "b.toml", "[1]", epochs=2)
    before = sorted(os.listdir(res / "s" / "records"))
    with pytest.raises(GridError, match=r"epochs = 2 here, 1 in every run there.*--force"):
        quiet(other, res)
    assert cli_main(["grid", other, "--results", str(res), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "conflict" in err and len(err.strip().splitlines()) == 1
    assert sorted(os.listdir(res / "s" / "records")) == before
    assert (res / "s" / "grid.toml").read_text() != open(other).read()   # nothing copied
    assert cli_main(["grid", other, "--results", str(res), "--quiet", "--force"]) == 0
    assert len(results.load(res / "s").runs) == 2


def test_an_axis_that_includes_the_old_value_extends_the_study(tmp_path):
    res = tmp_path / "res"
    quiet(grid_file(tmp_path, "a.toml", "[0]", epochs=1), res)
    axis = tmp_path / "c.toml"
    axis.write_text(open(grid_file(tmp_path, "b.toml", "[0]")).read().replace(
        "epochs = 1\n", "").replace("seed = [0]", "seed = [0]\nepochs = [1, 2]"))
    assert len(quiet(str(axis), res)) == 2
    assert sorted(results.load(res / "s").runs["epochs"]) == [1, 2]

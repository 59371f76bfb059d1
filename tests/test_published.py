"""Published numbers next to ours: nbcnn.published and ``nbcnn report --published``."""

from __future__ import annotations

import math
import os
import textwrap

import pandas as pd
import pytest

from nbcnn import arch, harness, published, results
from nbcnn.cli import main as cli_main
from nbcnn.cpu import this_cpu
from nbcnn.harness.spec import load_grid
from nbcnn.published import Published

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "conv(4,3)-relu-maxpool(2)-flatten-dense(4)"


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """A real two-epoch study on generated shapes: TINY without and with flips, two seeds."""
    tmp = tmp_path_factory.mktemp("published")
    path = tmp / "tiny_pub.toml"
    path.write_text(textwrap.dedent(f"""
        name = "tiny_pub"
        [fixed]
        dataset = "shapes"
        data = {{ n = 120, size = 12 }}
        arch = "{TINY}"
        backend = "numpy"
        epochs = 2
        batch_size = 30
        [grid]
        augment = ["none", "flip"]
        seed = [0, 1]
        """))
    harness.run_grid(str(path), str(tmp / "res"), verbose=False, log=lambda m: None)
    return os.path.join(str(tmp / "res"), "tiny_pub")


def _entry(**kw):
    base = dict(studies=("tiny_pub",), arch=TINY, dataset="shapes", value=0.5,
                source="a test", settings="none in particular")
    return Published(**{**base, **kw})


def test_runs_record_the_cpu(tiny_study):
    runs = results.load(tiny_study).runs
    assert (runs["cpu"] == this_cpu().describe()).all()
    assert (runs["cpu_count"] == os.cpu_count()).all()


def test_compare_gives_a_row_per_setting_besides_the_seed(tiny_study):
    runs = results.load(tiny_study).runs
    table = published.compare(runs, [_entry()])
    assert sorted(table["settings"]) == ["augment=flip", "augment=none"]
    for _, row in table.iterrows():
        flip = row["settings"] == "augment=flip"
        mine = runs[runs["augment"].notna() == flip]
        assert row["seeds"] == 2 and row["epochs"] == "2"
        assert row["mean"] == pytest.approx(mine["test_accuracy"].mean())
        assert row["sd"] == pytest.approx(mine["test_accuracy"].std())
        assert row["s/epoch"] == pytest.approx(mine["seconds_per_epoch"].mean())
        assert row["cpu"] == f"{this_cpu().describe()}, {int(mine['num_threads'].iloc[0])} " + \
            ("threads" if mine["num_threads"].iloc[0] != 1 else "thread")
        diff = 100 * (row["mean"] - 0.5)
        assert row["verdict"] == f"{'met' if diff >= 0 else 'not met'} ({diff:+.2f} pp)"
        assert row["published"] == "50.00%" and row["metric"] == "test"
    # the entry's `where` keeps only the runs with that setting
    only = published.compare(runs, [_entry(where={"augment": "flip"})])
    assert list(only["settings"]) == [""] and only["seeds"].iloc[0] == 2


def test_report_published_command(tiny_study, monkeypatch, capsys):
    monkeypatch.setattr(published, "PUBLISHED",
                        (_entry(value=0.01), _entry(value=0.99, kind="goal")))
    assert cli_main(["report", tiny_study, "--published", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out.count("| tiny_pub | shapes |") == 4             # 2 entries x 2 settings
    assert "met (+" in out and "not met (-" in out and "goal 99.00%" in out
    assert "Compute per study" in out and "| tiny_pub | 4 | 0 |" in out
    monkeypatch.setattr(published, "PUBLISHED", (_entry(studies=("other",)),))
    assert cli_main(["report", tiny_study, "--published"]) == 0
    assert "no published numbers for the studies tiny_pub" in capsys.readouterr().out


def _runs(rows):
    """A runs table of finished runs: (study, lr, seed, val, test, seconds per epoch)."""
    return pd.DataFrame([{"key": f"k{i}", "study": s, "status": "ok", "dataset": "mnist",
                          "arch": "mnist-strided", "optimizer": "sgd", "lr": lr, "epochs": 20,
                          "seed": seed, "val_accuracy": val, "test_accuracy": test,
                          "seconds_per_epoch": spe, "wall_seconds": 40.0 + i, "num_threads": 1,
                          "cpu": "Some CPU (AVX2)", "hostname": "h"}
                         for i, (s, lr, seed, val, test, spe) in enumerate(rows)])


def test_selection_on_validation_never_looks_at_test():
    runs = _runs([("search", 0.1, 0, 0.960, 0.990, 2.0), ("search", 0.1, 1, 0.962, 0.991, 2.2),
                  ("search", 0.01, 0, 0.975, 0.950, 1.0), ("search", 0.01, 1, 0.973, 0.951, 1.0)])
    entry = Published(("search",), "mnist-strided", "mnist", 0.97, "a claim", "not stated",
                      metric="val_accuracy", high=0.98, kind="claim", select="val_accuracy")
    table = published.compare(runs, [entry])
    assert len(table) == 1
    row = table.iloc[0]
    assert row["settings"] == "lr=0.01"                  # the best validation, not the best test
    assert row["mean"] == pytest.approx(0.974) and row["verdict"] == "met (+0.40 pp)"
    assert row["published"] == "claim 97.00-98.00%" and row["metric"] == "validation"
    assert row["note"] == ("chosen on validation, the best of 2 settings; test accuracy (reported "
                           "once): 95.05% ± 0.07")
    assert row["ours"] == "97.40% ± 0.14" and row["cpu"] == "Some CPU (AVX2), 1 thread"


def test_not_met_by_how_much_and_no_runs():
    runs = _runs([("s", 0.1, 0, 0.9, 0.9000, 3.0), ("s", 0.1, 1, 0.9, 0.9050, 3.0)])
    entries = [Published(("s",), "mnist-strided", "mnist", 0.9125, "He", "x"),
               Published(("s",), "lenet5", "mnist", 0.99, "LeCun", "y"),
               Published(("not-given",), "lenet5", "mnist", 0.99, "LeCun", "y")]
    table = published.compare(runs, entries)
    assert list(table["verdict"]) == ["not met (-1.00 pp)", "no finished runs"]
    assert table["ours"].iloc[0] == "90.25% ± 0.35" and table["seeds"].iloc[1] == 0
    old = runs.drop(columns="cpu")                       # records made before runs kept the CPU
    assert published.compare(old, entries[:1])["cpu"].iloc[0] == "not recorded (host h), 1 thread"


def test_compute_counts_the_epochs_of_earlier_processes():
    runs = _runs([("s", 0.1, 0, 0.9, 0.9, 3.0), ("s", 0.1, 1, 0.9, 0.9, 3.0),
                  ("t", 0.1, 0, 0.9, 0.9, 3.0)])
    runs["resumed_epochs"] = [0, 2, 0]
    runs.loc[2, "status"] = "failed"
    epochs = pd.DataFrame({"key": ["k1"] * 3, "epoch": [1, 2, 3], "seconds": [10.0, 20.0, 40.0]})
    assert list(published.compute_seconds(runs, epochs)) == [40.0, 41.0 + 30.0, 42.0]
    table = published.compute(runs, epochs).set_index("study")
    assert table.loc["s", "runs ok"] == 2 and table.loc["t", "runs failed"] == 1
    assert table.loc["s", "compute"] == "111.0s (0.03 h)"


def test_published_entries_name_real_grids():
    """Every entry's study has its grid file in experiments/, whose cells train the entry's
    architecture on its data set, and every architecture builds."""
    for entry in published.PUBLISHED:
        arch.parse(entry.arch)
        for study in entry.studies:
            grid = load_grid(os.path.join(ROOT, "experiments", f"{study}.toml"))
            assert grid.name == study
            assert any(c["dataset"] == entry.dataset and arch.resolve(c["arch"]) ==
                       arch.resolve(entry.arch) for c in grid.cells), (study, entry.arch)
            for k, v in entry.where.items():
                assert any(c.get(k) == v for c in grid.cells), (study, k, v)


@pytest.mark.parametrize("kw,match", [
    (dict(kind="rumour"), "kind must be one of"), (dict(metric="loss"), "metric must be one of"),
    (dict(value=91.25), "fractions"), (dict(value=0.98, high=0.97), "low <= high"),
    (dict(select="test_accuracy"), "select must be None or 'val_accuracy'")])
def test_bad_entries(kw, match):
    with pytest.raises(ValueError, match=match):
        _entry(**kw)


def test_markdown_and_text_cells():
    table = published.compare(_runs([("s", 0.1, 0, 0.9, 0.9, 3.04)]),
                              [Published(("s",), "mnist-strided", "mnist", 0.9, "a | b", "c")])
    md = published.markdown(table)
    assert "a \\| b" in md and "| 3.0 |" in md and "mean" not in md.splitlines()[0]
    assert math.isnan(table["sd"].iloc[0]) and table["ours"].iloc[0] == "90.00%"
    assert "  verdict            met (+0.00 pp)" in published.text(table)
    assert published.compare(_runs([("s", 0.1, 0, 0.9, 0.9, 3.0)]), []).empty


def test_headline_figures(tiny_study, monkeypatch, tmp_path, capsys):
    import matplotlib
    matplotlib.use("Agg")
    from nbcnn import plots
    # two numbers for the same runs: each setting is drawn once
    monkeypatch.setattr(published, "PUBLISHED", (_entry(), _entry(value=0.9, kind="goal")))
    runs = results.load(tiny_study).runs
    table = published.compare(runs)
    paths = plots.plot_headlines(tiny_study, out=str(tmp_path))
    names = sorted(os.path.basename(p) for p in paths)
    assert len(names) == 4 and all(os.path.getsize(p) > 0 for p in paths)
    for setting in ("none", "flip"):
        row = table[table["settings"] == f"augment={setting}"].iloc[0]
        key = published.headline_key(runs, row["keys"])
        accs = sorted(runs.loc[runs["key"].isin(row["keys"]), "test_accuracy"])
        assert float(runs.loc[runs["key"] == key, "test_accuracy"].iloc[0]) == accs[0]
        assert all(n.startswith("headline_conv_4_3_-relu-maxpool_2_-flatten-dense_4_augment_")
                   for n in names)
        assert any(n.endswith(f"augment_{setting}_confusion_{key}.png") for n in names)
        assert any(n.endswith(f"augment_{setting}_learning_curves.png") for n in names)
    assert cli_main(["plot", tiny_study, "--out", str(tmp_path / "cli"), "--headlines"]) == 0
    shown = [os.path.basename(p) for p in capsys.readouterr().out.split()]
    assert sorted(n for n in shown if n.startswith("headline_")) == names
    monkeypatch.setattr(published, "PUBLISHED", ())
    assert plots.plot_headlines(tiny_study, out=str(tmp_path / "none")) == []


def test_labels_name_only_the_settings_a_run_uses():
    runs = _runs([("s", 0.1, 0, 0.9, 0.9, 1.0), ("s", 0.1, 0, 0.9, 0.9, 1.0),
                  ("s", 0.001, 0, 0.9, 0.9, 1.0)])
    runs["optimizer"] = ["sgd", "sgd", "adam"]
    runs["momentum"] = [0.9, 0.0, float("nan")]          # SGD's only
    runs["beta1"] = [float("nan"), float("nan"), 0.9]    # Adam's only: never varies
    runs["augment"] = ["crop:2,flip", float("nan"), float("nan")]   # left out while off
    table = published.compare(runs, [Published(("s",), "mnist-strided", "mnist", 0.9, "a", "b")])
    assert list(table["settings"]) == [
        "optimizer=sgd, lr=0.1, momentum=0.9, augment=crop:2,flip",
        "optimizer=sgd, lr=0.1, momentum=0.0, augment=none",
        "optimizer=adam, lr=0.001, augment=none"]


def test_settings_text_of_integers_pandas_made_floats():
    from nbcnn.published import _value
    assert (_value(10.0, "batch_size"), _value(10, "batch_size"), _value(0.0, "momentum"),
            _value(1.0, "lr"), _value(float("nan"), "batch_size"), _value(None)) == \
        ("10", "10", "0.0", "1.0", "", "")

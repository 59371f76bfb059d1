"""Figures from a small real results folder (a tiny grid on `shapes`)."""

from __future__ import annotations

import os
import textwrap

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from nbcnn import harness, plots, results  # noqa: E402
from nbcnn.commands import plot as plot_command  # noqa: E402


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plots")
    path = tmp / "p.toml"
    path.write_text(textwrap.dedent("""
        name = "p"
        [fixed]
        dataset = "shapes"
        data = { n = 160, size = 12 }
        epochs = 2
        batch_size = 32
        [grid]
        arch = ["conv(4,3)-relu-maxpool(2)-flatten-dense(4)",
                "conv(4,3,same)-relu-maxpool(2)-conv(4,3)-relu-flatten-dense(4)"]
        seed = [0, 1]
        [[include]]
        arch = "flatten-dense(4)"                          # no convolution: no filter figures
        """))
    harness.run_grid(str(path), str(tmp / "res"), verbose=False, log=lambda m: None)
    return os.path.join(tmp / "res", "p")


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 5000


def test_table_figures(study, tmp_path):
    runs, epochs = results.load(study)
    for name, fig in [("lc", plots.learning_curves(epochs)),
                      ("lc_backend", plots.learning_curves(epochs, hue="backend")),
                      ("time", plots.time_per_epoch(epochs)),
                      ("avt", plots.accuracy_vs_time(epochs)),
                      ("tp", plots.throughput(runs))]:
        axes = [ax for ax in fig.axes if ax.get_xlabel()]
        assert axes and all(ax.get_ylabel() for ax in axes), name
        assert fig._suptitle is not None or any(ax.get_title() for ax in fig.axes), name
        out = tmp_path / f"{name}.png"
        fig.savefig(out)
        assert _is_png(out)
    assert "s" in plots.time_per_epoch(epochs).axes[0].get_ylabel()
    assert "images/s" in plots.throughput(runs).axes[0].get_ylabel()


def test_empty_tables_still_draw(tmp_path):
    import pandas as pd
    fig = plots.learning_curves(pd.DataFrame(columns=["key", "epoch"]))
    fig.savefig(tmp_path / "e.png")


def test_run_figures(study, tmp_path):
    res = results.load(study)
    key = res.best()
    pred = res.predictions(key)
    fig = plots.confusion_matrix(pred["y_true"], pred["y_pred"], list(pred["classes"]))
    assert fig.axes[0].get_xlabel() == "predicted class"
    fig.savefig(tmp_path / "c.png")
    model = res.load_model(key)
    plots.filters(model).savefig(tmp_path / "f.png")
    plots.feature_maps(model, pred["sample_x"][0]).savefig(tmp_path / "m.png")
    for name in "cfm":
        assert _is_png(tmp_path / f"{name}.png")
    rgb = plots.confusion_matrix(np.array([0, 1, 2]), np.array([0, 2, 2]))
    assert rgb.axes


def test_plot_study_and_command(study, tmp_path, capsys):
    paths = plots.plot_study(study)
    names = {os.path.basename(p).split("_")[0].split(".")[0] for p in paths}
    assert {"learning", "time", "accuracy", "throughput", "confusion", "filters",
            "feature"} <= names
    assert all(_is_png(p) for p in paths)

    import argparse
    no_conv = results.load(study).runs
    key = no_conv.loc[no_conv["arch"] == "flatten-dense(4)", "key"].iloc[0]
    args = argparse.Namespace(dir=study, out=str(tmp_path / "figs"), key=key[:8], format="png",
                              dpi=80)
    assert plot_command.run(args) == 0
    written = os.listdir(tmp_path / "figs")
    assert f"confusion_{key}.png" in written and not any(n.startswith("filters") for n in written)
    assert str(tmp_path / "figs") in capsys.readouterr().out


def test_curves_of_plain_and_augmented_runs_get_their_own_labels():
    """augment is absent from a run while off: its curve is labelled 'none', not merged with
    the augmented run's."""
    import pandas as pd

    from nbcnn import plots
    df = pd.DataFrame({"arch": "a", "seed": 0, "epoch": [1, 1],
                       "augment": [float("nan"), "crop:4,flip"]})
    assert plots.varying(df) == ["augment"]
    assert list(plots.run_labels(df)) == ["none", "crop:4,flip"]

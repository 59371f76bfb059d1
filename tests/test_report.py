"""nbcnn report: studies summarised over seeds."""

from __future__ import annotations

import pandas as pd
import pytest

from nbcnn import results
from nbcnn.cli import main


def test_summarize_averages_over_seeds():
    runs = pd.DataFrame({"status": ["ok", "ok", "ok", "failed"], "dataset": "shapes",
                         "arch": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1],
                         "test_accuracy": [0.8, 0.9, 0.5, float("nan")],
                         "best_val_accuracy": [0.8, 0.8, 0.5, 0.1],
                         "seconds_per_epoch": [1.0, 3.0, 2.0, 9.0],
                         "images_per_second": [100.0, 50.0, 10.0, 1.0]})
    table = results.summarize(runs)
    a = table.set_index("arch").loc["a"]
    assert a["seeds"] == 2 and a["test_accuracy"] == pytest.approx(0.85)
    assert a["test_accuracy_sd"] == pytest.approx(0.0707, abs=1e-4)
    assert a["seconds_per_epoch"] == 2.0
    assert table.set_index("arch").loc["b", "seeds"] == 1        # the failed run is left out
    md = results.markdown(table)
    assert md.splitlines()[0].startswith("| dataset | arch |") and "| 85.00 |" in md


def test_report_command_on_a_real_grid(tmp_path, capsys):
    grid = tmp_path / "tiny.toml"
    grid.write_text('name = "tiny"\nsave_models = false\n[fixed]\ndataset = "shapes"\ndata = { n = 120, size = 10 }\n'
                    'epochs = 1\nbatch_size = 20\n[grid]\n'
                    'arch = ["flatten-dense(4)"]\nseed = [0, 1]\n')
    assert main(["grid", str(grid), "--results", str(tmp_path), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "tiny"), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| tiny | shapes | flatten-dense(4) |" in out and "| 2 |" in out


def test_a_setting_left_out_while_off_still_varies_and_splits_the_summary():
    """augment is absent from a run's settings while off: such runs have augment = none, so a
    study of plain and augmented runs gets one summary row for each, not one for both."""
    import pandas as pd

    from nbcnn import results, settings
    cells = [{"arch": "a", "seed": 0}, {"arch": "a", "seed": 0, "augment": "crop:4,flip"}]
    assert settings.varying(cells) == ["augment"]
    assert settings.varying([{"arch": "a"}, {"arch": "a", "optimizer": "adam"}]) == []
    runs = pd.DataFrame({"study": "s", "arch": "a", "status": "ok", "seed": [0, 1, 0, 1],
                         "augment": [float("nan"), float("nan"), "crop:4,flip", "crop:4,flip"],
                         "test_accuracy": [0.5, 0.6, 0.7, 0.8]})
    table = results.summarize(runs)
    assert list(table["augment"]) == ["none", "crop:4,flip"]
    assert list(table["seeds"]) == [2, 2]
    assert table["test_accuracy"].round(6).tolist() == [0.55, 0.75]

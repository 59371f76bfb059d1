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

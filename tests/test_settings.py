"""The settings registry: one default per setting for the Python API, ``nbcnn train`` and grid
files; the command line built from it; the keys of committed studies unchanged."""

from __future__ import annotations

import glob
import inspect
import json
import os
import re

import pytest

import nbcnn
from nbcnn import optim
from nbcnn import settings as registry
from nbcnn.cli import make_parser
from nbcnn.commands.train import flag, settings_of
from nbcnn.harness import cell_key, load_grid, parse_grid
from nbcnn.harness.spec import LATER_SETTINGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCH = "flatten-dense(4)"


def grid_cell(**fixed):
    lines = [f"{json.dumps(k)} = {json.dumps(v)}" if "." not in k else f"{k} = {json.dumps(v)}"
             for k, v in {"arch": ARCH, **fixed}.items()]
    return parse_grid("[fixed]\n" + "\n".join(lines) + "\n").cells[0].settings


def cli_settings(*argv):
    args = make_parser().parse_args(["train", "--arch", ARCH, *argv])
    return settings_of(args)


def api_default(name, optimizer):
    """The Python API's own default of ``name``, or None where the API has no parameter."""
    if registry.get(name).optimizers:
        params = inspect.signature(optim.OPTIMIZERS[optimizer]).parameters
        return params[name].default if name in params else None
    params = inspect.signature(nbcnn.Sequential.fit).parameters
    return params[name].default if name in params else None


@pytest.mark.parametrize("name", list(registry.SETTINGS))
def test_every_setting_has_one_default_in_api_cli_and_grid(name):
    setting = registry.get(name)
    for optimizer in setting.optimizers or ["sgd"]:
        want = registry.default(name, optimizer)
        grid = grid_cell(optimizer=optimizer)
        cli = cli_settings("--optimizer", optimizer)
        assert grid == cli, "nbcnn train and a grid file resolve to different settings"
        if name in ("arch", "backend"):       # required; the default backend
            continue
        if name.startswith("data.") or name in ("augment", "early_stopping",
                                                  "early_stopping_monitor"):
            assert name not in grid           # off / the data set's own: out of the cell
        else:
            assert grid[name] == want, (name, optimizer)
        api = api_default(name, optimizer)
        if api is not None or name in ("clip_grad_norm",):
            assert api == want, f"{name}: the API's default {api!r}, the registry's {want!r}"
    if setting.optimizers and name != "schedule":
        # the optimizer classes take every setting the registry gives them, and nothing else
        for optimizer in registry.OPTIMIZERS:
            params = inspect.signature(optim.OPTIMIZERS[optimizer]).parameters
            assert (name in params) == (optimizer in setting.optimizers), (name, optimizer)


def test_the_api_uses_the_registry_defaults():
    assert optim.SGD().lr == 1e-3 and optim.SGD().momentum == 0.0
    assert optim.RMSprop().lr == 1e-2 and optim.Adadelta().lr == 1.0
    assert registry.default("backend") is None and registry.default("arch") is None
    fit = inspect.signature(nbcnn.Sequential.fit).parameters
    assert (fit["epochs"].default, fit["batch_size"].default) == (1, 32)


def test_optimizer_defaults_are_pytorchs():
    torch = pytest.importorskip("torch")
    names = {"sgd": "SGD", "adam": "Adam", "rmsprop": "RMSprop", "adagrad": "Adagrad",
             "adadelta": "Adadelta"}
    for ours, theirs in names.items():
        params = inspect.signature(getattr(torch.optim, theirs)).parameters
        for name, value in registry.optimizer_defaults(ours).items():
            if name in ("beta1", "beta2"):
                want = params["betas"].default[name == "beta2"]
            elif name == "decoupled":
                want = params["decoupled_weight_decay"].default
            elif name == "clip_grad_norm":
                continue                                  # torch clips outside the optimizer
            else:
                want = params[name].default
            assert value == want, (ours, name, value, want)


def test_cli_help_is_built_from_the_registry():
    sub = next(a for a in make_parser()._actions if a.dest == "command")
    text = " ".join(sub.choices["train"].format_help().split())
    for s in registry.SETTINGS.values():
        assert flag(s.name) in text, s.name
        assert " ".join(s.describe().split()) in text, s.name


def test_cli_checks_values_as_the_grid_does():
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\), got 5"):
        cli_settings("--momentum", "5")
    with pytest.raises(ValueError, match="--momentum does not apply to this run"):
        cli_settings("--optimizer", "adam", "--momentum", "0.9")
    with pytest.raises(ValueError, match="--data-n does not apply"):
        cli_settings("--dataset", "mnist", "--data-n", "100")
    assert cli_settings("--threads", "auto")["threads"] is None
    s = cli_settings("--nesterov", "--momentum", "0.9", "--data-n", "50", "--test-limit", "20")
    assert s["nesterov"] is True and s["data.n"] == 50 and s["test_limit"] == 20
    assert s == grid_cell(nesterov=True, momentum=0.9, **{"data.n": 50}, test_limit=20)


def test_the_optimizer_is_built_from_its_settings_only():
    opt = registry.make_optimizer(grid_cell(optimizer="adam", lr=0.01, schedule="cosine",
                                            epochs=3))
    assert isinstance(opt, optim.Adam) and opt.lr == 0.01 and opt.eps == 1e-8
    assert isinstance(opt.schedule, optim.CosineDecay) and opt.schedule.epochs == 3


def test_markdown_lists_every_setting():
    table = registry.markdown()
    assert table.count("\n") == len(registry.SETTINGS) + 1
    assert "| `lr` | 0.001 for sgd, adam; 0.01 for rmsprop, adagrad; 1 for adadelta |" in table


def test_varying_is_one_rule():
    rows = [{"optimizer": "sgd", "momentum": 0.9, "limit": None},
            {"optimizer": "adam", "limit": 100}]
    assert registry.varying(rows) == ["optimizer", "limit"]   # adam has no momentum


def study_folders():
    return sorted(os.path.dirname(d) for d in glob.glob(os.path.join(ROOT, "results", "*",
                                                                     "records")))


@pytest.mark.parametrize("study", study_folders(), ids=os.path.basename)
def test_committed_studies_keep_their_keys(study):
    """Every committed run's key is re-derived from its grid file(s): same key, same settings
    (records written before ``LATER_SETTINGS`` existed lack them at their defaults)."""
    grids = [os.path.join(study, "grid.toml"), *glob.glob(os.path.join(study, "grids", "*"))]
    cells = {c.key: c.settings for g in grids if os.path.isfile(g) for c in load_grid(g).cells}
    records = [json.load(open(p)) for p in glob.glob(os.path.join(study, "records", "*.json"))]
    if not records:                    # a long study committed mid-way: checkpoints only
        pytest.skip(f"{os.path.basename(study)} has no finished run yet")
    for r in records:
        assert r["key"] in cells, f"{r['key']} is no longer a cell of its grid file"
        assert cell_key(r["settings"]) == r["key"]
        now = {k: v for k, v in cells[r["key"]].items()
               if not (k in LATER_SETTINGS and v == LATER_SETTINGS[k] and k not in r["settings"])}
        assert now == r["settings"]


def test_grid_errors_name_the_key_and_the_range():
    with pytest.raises(ValueError, match=re.escape("[fixed] momentum: must be in [0, 1), got 2")):
        grid_cell(momentum=2)

"""Grid files: read a TOML study, check every value, expand it into cells with stable keys.

A grid file (see ``docs/design.md``)::

    name = "quickstart"            # results go to <results>/quickstart/
    description = "..."
    results = "results"            # optional, overridden by ``nbcnn grid --results``
    save_models = true             # optional: true, false, or absent = only models up to 1M params
    save_predictions = true        # optional: test predictions per run (for confusion matrices)
    plot = false                   # optional: draw the figures when the grid is done

    [fixed]                        # settings shared by every cell
    dataset = "shapes"
    data = { n = 600, size = 16 }  # the data set's own options (here: shapes), as data.<option>

    [grid]                         # axes: the cells are their cartesian product
    arch = ["mnist-tiny", "conv(8,3)-relu-maxpool(2)-flatten-dense(4)"]
    seed = [0, 1]

    [[exclude]]                    # drop the product's cells that match every key given
    arch = "mnist-tiny"            # (a list matches any of its values)
    seed = 1

    [[include]]                    # add cells: [fixed] plus the entry (a list is an axis too),
    arch = "lenet5"                # not crossed with [grid]; without [grid], the cells are
    lr = [0.01, 0.1]               # the includes' alone

Every setting is checked before anything runs; a problem raises ``GridError`` naming the file,
the section and the key. Settings of other optimizers than a cell's own (e.g. ``momentum`` for an
Adam cell) and data options of other data sets are left out of that cell, so one grid can cross
optimizers or data sets; a data option that no cell's data set takes is refused (it would be
dropped from every cell). Cells that resolve to the same settings are run once. ``augment``
(e.g. ``"crop:4,flip"``), ``early_stopping`` (a patience in epochs) and
``early_stopping_monitor`` are left out of a cell's settings, and so of its key, while they are
off (so the cells of grids written before them keep their keys).

A cell's key is the first 12 hex digits of the sha1 of its resolved settings as sorted, compact
JSON: the same settings give the same key in any process, whatever the order in the file.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import numbers
import os
import sys
from dataclasses import dataclass, field

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class GridError(ValueError):
    """A grid file that cannot be run; the message names the file and the key."""


# ---- settings ------------------------------------------------------------------------------
#: optimizer -> the settings it takes (besides the schedule)
OPTIMIZER_SETTINGS = {
    "sgd": ("lr", "momentum", "nesterov", "weight_decay", "clip_grad_norm"),
    "adam": ("lr", "beta1", "beta2", "eps", "weight_decay", "decoupled", "clip_grad_norm"),
    "rmsprop": ("lr", "alpha", "eps", "momentum", "weight_decay", "clip_grad_norm"),
    "adagrad": ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps",
                "clip_grad_norm"),
    "adadelta": ("lr", "rho", "eps", "weight_decay", "clip_grad_norm"),
}
_ALL_OPTIMIZER_KEYS = {k for keys in OPTIMIZER_SETTINGS.values() for k in keys}
#: optimizer -> its own defaults where they differ from DEFAULTS (PyTorch's)
OPTIMIZER_DEFAULTS = {
    "adagrad": {"lr": 0.01, "eps": 1e-10},
    "adadelta": {"lr": 1.0, "eps": 1e-6},
}

#: data set -> its own options (written data.<option> in grid files)
DATA_OPTIONS = {"shapes": ("n", "size", "channels", "classes", "seed")}

#: every cell setting, in table order -> default (None: not set)
DEFAULTS = {
    "dataset": "shapes",
    "arch": None,                 # required
    "backend": "numba",
    "optimizer": "sgd",
    "lr": 0.05,
    "momentum": 0.0,
    "nesterov": False,
    "weight_decay": 0.0,
    "beta1": 0.9,
    "beta2": 0.999,
    "eps": 1e-8,
    "alpha": 0.99,
    "decoupled": False,
    "lr_decay": 0.0,
    "initial_accumulator_value": 0.0,
    "rho": 0.9,
    "clip_grad_norm": None,       # None: no gradient clipping
    "schedule": "constant",
    "label_smoothing": 0.0,
    "batch_size": 32,
    "epochs": 1,
    "seed": 0,
    "threads": None,              # None: the executor decides (local: all cores)
    "val_fraction": 0.1,          # carved from train; 0: no validation
    "limit": None,                # train on this many examples (a seeded, stratified subset)
    "test_limit": None,           # evaluate on this many test examples (the same ones every cell)
    "augment": "none",            # training-batch augmentation, e.g. "crop:4,flip"
    "early_stopping": None,       # patience in epochs (None: train every epoch)
    "early_stopping_monitor": "val_loss",
}

SETTINGS = tuple(DEFAULTS)
#: settings added after the first studies: at these values they stay out of a cell's key, so
#: the cells of earlier studies keep their keys
LATER_SETTINGS = {"clip_grad_norm": None, "label_smoothing": 0.0}

TOP_LEVEL = ("name", "description", "results", "save_models", "save_predictions", "plot",
             "fixed", "grid", "exclude", "include")


def _where(section: str, key: str, index=None) -> str:
    return f"[{section}] {key}" + (f"[{index}]" if index is not None else "")


def _need(cond: bool, msg: str):
    if not cond:
        raise ValueError(msg)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _float(lo=None, hi=None, lo_open=False, hi_open=False, none_word=None):
    def check(v):
        if none_word is not None and isinstance(v, str) and v.strip().lower() == none_word:
            return None
        extra = f" or {none_word!r}" if none_word else ""
        _need(_is_real(v), f"must be a number{extra}, got {type(v).__name__} {v!r}")
        v = float(v)
        _need(math.isfinite(v), f"must be finite, got {v!r}")
        if lo is not None:
            _need(v > lo if lo_open else v >= lo, f"must be {'>' if lo_open else '>='} {lo}, got {v!r}")
        if hi is not None:
            _need(v < hi if hi_open else v <= hi, f"must be {'<' if hi_open else '<='} {hi}, got {v!r}")
        return v
    return check


def _int(lo=None, none_word=None):
    def check(v):
        if none_word is not None and isinstance(v, str) and v.strip().lower() == none_word:
            return None
        extra = f" or {none_word!r}" if none_word else ""
        _need(_is_int(v), f"must be an integer{extra}, got {type(v).__name__} {v!r}")
        if lo is not None:
            _need(v >= lo, f"must be >= {lo}, got {v!r}")
        return int(v)
    return check


def _bool(v):
    _need(isinstance(v, bool), f"must be true or false, got {type(v).__name__} {v!r}")
    return v


def _string(v):
    _need(isinstance(v, str) and v.strip() != "", f"must be a non-empty string, got {v!r}")
    return v.strip()


def _dataset(v):
    from ..data.sources import canonical_name
    return canonical_name(_string(v))


def _arch(v):
    from ..arch import parse
    v = _string(v)
    parse(v)          # raises ValueError naming the bad layer
    return v


def _backend(v):
    from ..backends import names
    v = _string(v).lower()
    family, _, device = v.partition(":")
    _need(family in names(), f"unknown backend {v!r}; expected one of {', '.join(names())} "
                             "(opencl also as 'opencl:PLATFORM:DEVICE')")
    if device:
        _need(family == "opencl", f"backend {v!r}: only opencl takes a device suffix")
        parts = device.split(":")
        _need(len(parts) == 2 and all(p.isdigit() for p in parts),
              f"backend {v!r}: expected opencl:PLATFORM:DEVICE with two integers")
    return v


def _optimizer(v):
    v = _string(v).lower()
    _need(v in OPTIMIZER_SETTINGS, f"unknown optimizer {v!r}; expected one of "
                                   f"{', '.join(OPTIMIZER_SETTINGS)}")
    return v


def _schedule(v):
    v = _string(v).lower()
    from ..optim import parse_schedule
    parse_schedule(v, epochs=1)       # raises ValueError on a bad string
    return v


def _augment(v):
    from ..data.augment import Augment
    return Augment.parse(_string(v)).spec()


def _monitor(v):
    from ..callbacks import MONITORS
    v = _string(v).lower()
    _need(v in MONITORS, f"unknown monitor {v!r}; expected one of {', '.join(MONITORS)}")
    return v


CHECKS = {
    "dataset": _dataset,
    "arch": _arch,
    "backend": _backend,
    "optimizer": _optimizer,
    "lr": _float(0, lo_open=True),
    "momentum": _float(0, 1, hi_open=True),
    "nesterov": _bool,
    "weight_decay": _float(0),
    "beta1": _float(0, 1, hi_open=True),
    "beta2": _float(0, 1, hi_open=True),
    "eps": _float(0, lo_open=True),
    "alpha": _float(0, 1),
    "decoupled": _bool,
    "lr_decay": _float(0),
    "initial_accumulator_value": _float(0),
    "rho": _float(0, 1),
    "clip_grad_norm": _float(0, lo_open=True, none_word="none"),
    "schedule": _schedule,
    "label_smoothing": _float(0, 1),
    "batch_size": _int(1),
    "epochs": _int(1),
    "seed": _int(0),
    "threads": _int(1, none_word="auto"),
    "val_fraction": _float(0, 1, hi_open=True),
    "limit": _int(1, none_word="all"),
    "test_limit": _int(1, none_word="all"),
    "augment": _augment,
    "early_stopping": _int(1, none_word="off"),
    "early_stopping_monitor": _monitor,
}


def _data_option(option):
    def check(v):
        if option == "classes":
            if isinstance(v, str):
                return v
            _need(isinstance(v, list) and all(isinstance(c, str) for c in v),
                  f"must be a list of class names or a comma-separated string, got {v!r}")
            return list(v)
        return _int(0 if option == "seed" else 1)(v)
    return check


def known_keys() -> list:
    data = sorted({f"data.{o}" for opts in DATA_OPTIONS.values() for o in opts})
    return list(SETTINGS) + data


def check_value(key: str, value):
    """The normalised value of setting ``key``; ValueError/TypeError if it is bad."""
    if key.startswith("data."):
        option = key[5:]
        if not any(option in opts for opts in DATA_OPTIONS.values()):
            raise KeyError(key)
        return _data_option(option)(value)
    if key not in CHECKS:
        raise KeyError(key)
    return CHECKS[key](value)


def make_optimizer(settings: dict):
    """The optimizer of a cell's resolved settings (with its schedule)."""
    from .. import optim
    name = settings["optimizer"]
    kwargs = {k: settings[k] for k in OPTIMIZER_SETTINGS[name] if k in settings}
    kwargs["schedule"] = optim.parse_schedule(settings["schedule"], settings["epochs"])
    return optim.make(name, **kwargs)


# ---- cells ---------------------------------------------------------------------------------
def cell_key(settings: dict) -> str:
    """12 hex digits of the sha1 of ``settings`` as sorted, compact JSON (without the
    ``LATER_SETTINGS`` that are at their default)."""
    settings = {k: v for k, v in settings.items()
                if not (k in LATER_SETTINGS and v == LATER_SETTINGS[k])}
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass
class Cell:
    """One run of a grid: its resolved settings and their stable key."""

    settings: dict
    key: str = ""
    index: int = 0

    def __post_init__(self):
        if not self.key:
            self.key = cell_key(self.settings)

    def get(self, name, default=None):
        return self.settings.get(name, default)

    def __getitem__(self, name):
        return self.settings[name]

    def label(self, keys=None) -> str:
        keys = keys or list(self.settings)
        return ", ".join(f"{k}={self.settings.get(k)}" for k in keys)


def resolve(raw: dict) -> dict:
    """Defaults + ``raw`` (checked values), keeping only what applies to the cell's optimizer and
    data set. Raises ValueError if the optimizer rejects the combination."""
    own_defaults = OPTIMIZER_DEFAULTS.get(raw.get("optimizer", DEFAULTS["optimizer"]), {})
    s = {k: raw.get(k, own_defaults.get(k, DEFAULTS[k])) for k in SETTINGS}
    if s["arch"] is None:
        raise ValueError("no 'arch' given (a preset name or an architecture string)")
    used = OPTIMIZER_SETTINGS[s["optimizer"]]
    for k in _ALL_OPTIMIZER_KEYS - set(used):
        del s[k]
    own = DATA_OPTIONS.get(s["dataset"], ())
    for k, v in raw.items():
        if k.startswith("data.") and k[5:] in own:
            s[k] = v
    make_optimizer(s)                 # e.g. nesterov without momentum
    if s["early_stopping"] is None:   # the monitor of no early stopping is no setting
        del s["early_stopping_monitor"]
    elif s["early_stopping_monitor"].startswith("val_") and not s["val_fraction"]:
        raise ValueError(f"early_stopping on {s['early_stopping_monitor']!r} needs validation "
                         "(val_fraction > 0), or early_stopping_monitor = \"train_loss\"")
    for k in ("augment", "early_stopping"):
        if s[k] == DEFAULTS[k]:
            del s[k]
    return s


def make_early_stopping(settings: dict):
    """The cell's EarlyStopping, or None."""
    from ..callbacks import EarlyStopping
    if settings.get("early_stopping") is None:
        return None
    return EarlyStopping(patience=settings["early_stopping"],
                         monitor=settings.get("early_stopping_monitor",
                                              DEFAULTS["early_stopping_monitor"]))


@dataclass
class Grid:
    """A checked grid file: its study name, options and cells."""

    path: str
    name: str
    description: str = ""
    results: str | None = None
    save_models: bool | None = None
    save_predictions: bool = True
    plot: bool = False
    fixed: dict = field(default_factory=dict)
    axes: dict = field(default_factory=dict)
    exclude: list = field(default_factory=list)
    include: list = field(default_factory=list)
    cells: list = field(default_factory=list)
    text: str = ""

    def varying(self, cells=None) -> list:
        """Settings that take more than one value across ``cells`` (default: all), table order;
        a setting a cell does not use (e.g. momentum of an Adam cell) does not count."""
        cells = self.cells if cells is None else cells
        keys = []
        for k in known_keys():
            values = {json.dumps(c.settings[k], sort_keys=True) for c in cells if k in c.settings}
            if len(values) > 1:
                keys.append(k)
        return keys

    def filter(self, only) -> list:
        """The cells matching every ``key=value`` of ``only`` (several values of one key: any)."""
        return filter_cells(self.cells, only, self.path)


def _flatten(table: dict, section: str, path: str, prefix: str = "") -> dict:
    """{'data': {'n': 3}} -> {'data.n': 3}; only 'data' may hold a table."""
    out = {}
    for k, v in table.items():
        name = prefix + k
        if isinstance(v, dict):
            if name != "data":
                raise GridError(f"{path}: {_where(section, name)}: a table is only allowed for "
                                "'data' (the data set's options)")
            out.update(_flatten(v, section, path, name + "."))
        else:
            out[name] = v
    return out


def _check_entry(key, value, section, path, index=None):
    try:
        return check_value(key, value)
    except KeyError:
        raise GridError(f"{path}: {_where(section, key)}: unknown setting {key!r}; known: "
                        f"{', '.join(known_keys())}") from None
    except (ValueError, TypeError) as exc:
        raise GridError(f"{path}: {_where(section, key, index)}: {exc}") from None


def _rules(doc, name, path) -> list:
    rules = doc.get(name, [])
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        raise GridError(f"{path}: {name!r} must be written as [[{name}]] tables")
    out = []
    for i, rule in enumerate(rules):
        section = f"[{name}] #{i + 1}"
        flat = _flatten(rule, section[1:-1], path)
        if not flat:
            raise GridError(f"{path}: {section} is empty")
        checked = {}
        for k, v in flat.items():
            values = v if isinstance(v, list) and k != "data.classes" else [v]
            if isinstance(v, list) and not v:
                raise GridError(f"{path}: {section} {k}: empty list")
            checked[k] = [_check_entry(k, x, section[1:-1], path, j if len(values) > 1 else None)
                          for j, x in enumerate(values)]
        out.append(checked)
    return out


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _matches(settings: dict, rule: dict) -> bool:
    from ..arch import resolve as resolve_arch
    for k, allowed in rule.items():
        have = settings.get(k)
        if k == "arch" and have is not None:
            ok = any(have == a or resolve_arch(have) == resolve_arch(a) for a in allowed)
        else:
            ok = any(_same(have, a) for a in allowed)
        if not ok:
            return False
    return True


def _check_data_options_used(path, given, cells) -> None:
    """Refuse a data option the file gives that no cell keeps (an option of a data set no cell
    uses, e.g. ``data = { n = 100 }`` with ``dataset = "mnist"``): it would be dropped without a
    word. (A grid that crosses data sets keeps it in the cells of the data set that takes it.)"""
    for k in dict.fromkeys(k for k in given if k.startswith("data.")):
        if not any(k in c.settings for c in cells):
            owners = [d for d, opts in DATA_OPTIONS.items() if k[5:] in opts]
            used = sorted({c.settings["dataset"] for c in cells})
            raise GridError(f"{path}: {k!r} is an option of the {', '.join(owners)} data set, "
                            f"but no cell uses it (data sets here: {', '.join(used)}); remove it "
                            "or use a data set that takes it")


def parse_grid(text: str, path: str = "<grid>") -> Grid:
    """Check a grid file's text and expand it into cells. Raises GridError."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GridError(f"{path}: not valid TOML: {exc}") from None
    for k in doc:
        if k not in TOP_LEVEL:
            hint = (" (settings go under [fixed] or [grid])"
                    if k in SETTINGS or k == "data" else "")
            raise GridError(f"{path}: unknown top-level key {k!r}{hint}; allowed: "
                            f"{', '.join(TOP_LEVEL)}")
    stem = os.path.splitext(os.path.basename(path))[0]
    name = doc.get("name", stem)
    if not isinstance(name, str) or not name.strip() or any(c in name for c in "/\\") \
            or name.strip() in (".", ".."):
        raise GridError(f"{path}: key 'name' must be a non-empty string usable as a folder name, "
                        f"got {name!r}")
    for k, kind in (("description", str), ("results", str)):
        if k in doc and not isinstance(doc[k], kind):
            raise GridError(f"{path}: key {k!r} must be a string, got {doc[k]!r}")
    for k in ("save_models", "save_predictions", "plot"):
        if k in doc and not isinstance(doc[k], bool):
            raise GridError(f"{path}: key {k!r} must be true or false, got {doc[k]!r}")
    for sec in ("fixed", "grid"):
        if sec in doc and not isinstance(doc[sec], dict):
            raise GridError(f"{path}: {sec!r} must be a table ([{sec}])")

    fixed = {k: _check_entry(k, v, "fixed", path)
             for k, v in _flatten(doc.get("fixed", {}), "fixed", path).items()}
    axes = {}
    for k, values in _flatten(doc.get("grid", {}), "grid", path).items():
        if not isinstance(values, list):
            raise GridError(f"{path}: {_where('grid', k)}: an axis must be a list of values, got "
                            f"{values!r} (put a single value under [fixed])")
        if not values:
            raise GridError(f"{path}: {_where('grid', k)}: an axis needs at least one value")
        if k in fixed:
            raise GridError(f"{path}: {k!r} is both in [fixed] and in [grid]")
        axes[k] = [_check_entry(k, v, "grid", path, i) for i, v in enumerate(values)]
    exclude = _rules(doc, "exclude", path)
    include = _rules(doc, "include", path)

    raws = []
    names = list(axes)
    # a file of [[include]] cells only (no [grid]) has no product cell of [fixed] alone
    product = itertools.product(*(axes[k] for k in names)) if axes or not include else []
    for combo in product:
        raw = {**fixed, **dict(zip(names, combo))}
        if not any(_matches(raw, rule) for rule in exclude):
            raws.append(raw)
    for rule in include:
        keys = list(rule)
        for combo in itertools.product(*(rule[k] for k in keys)):
            raws.append({**fixed, **dict(zip(keys, combo))})
    if not raws:
        raise GridError(f"{path}: the grid has no cells (every cell excluded?)")

    cells, seen = [], set()
    for raw in raws:
        try:
            settings = resolve(raw)
        except (ValueError, TypeError) as exc:
            shown = ", ".join(f"{k}={v}" for k, v in raw.items() if k in names or k == "arch")
            raise GridError(f"{path}: cell ({shown}): {exc}") from None
        cell = Cell(settings)
        if cell.key not in seen:
            seen.add(cell.key)
            cell.index = len(cells)
            cells.append(cell)
    _check_data_options_used(path, [*fixed, *axes, *(k for rule in include for k in rule)], cells)
    save_models = doc.get("save_models")
    return Grid(path=path, name=name.strip(), description=doc.get("description", ""),
                results=doc.get("results"), save_models=save_models,
                save_predictions=doc.get("save_predictions", True), plot=doc.get("plot", False),
                fixed=fixed, axes=axes, exclude=exclude, include=include, cells=cells, text=text)


def load_grid(path) -> Grid:
    """Read, check and expand the grid file at ``path``. Raises GridError or FileNotFoundError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"grid file not found: {path}")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise GridError(f"{path}: not UTF-8 text") from None
    return parse_grid(text, path)


def parse_only(items, path="--only") -> dict:
    """['lr=0.1', 'arch=mnist-tiny', 'lr=0.2'] -> {'lr': [0.1, 0.2], 'arch': ['mnist-tiny']}."""
    out: dict = {}
    for item in items or []:
        k, eq, v = str(item).partition("=")
        k, v = k.strip(), v.strip()
        if not eq or not k:
            raise GridError(f"{path}: expected key=value, got {item!r}")
        if k == "key":
            out.setdefault(k, []).append(v.lower())
            continue
        try:
            value = tomllib.loads(f"v = {v}")["v"]
        except tomllib.TOMLDecodeError:
            value = v
        try:
            value = check_value(k, value)
        except KeyError:
            raise GridError(f"{path}: unknown setting {k!r} in {item!r}; known: key, "
                            f"{', '.join(known_keys())}") from None
        except (ValueError, TypeError) as exc:
            raise GridError(f"{path}: {item!r}: {exc}") from None
        out.setdefault(k, []).append(value)
    return out


def filter_cells(cells, only, path="--only") -> list:
    if not only:
        return list(cells)
    rules = parse_only(only, path) if isinstance(only, (list, tuple)) else dict(only)
    key_prefixes = rules.pop("key", None)
    picked = []
    for cell in cells:
        if key_prefixes and not any(cell.key.startswith(p) for p in key_prefixes):
            continue
        if rules and not _matches(cell.settings, rules):
            continue
        picked.append(cell)
    return picked

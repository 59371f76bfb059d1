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

The settings, their defaults and their checks are ``nbcnn.settings``'s (the same as the Python
API's and ``nbcnn train``'s). Every setting is checked before anything runs; a problem raises ``GridError`` naming the file,
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
import os
import sys
from dataclasses import dataclass, field

from .. import settings as registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class GridError(ValueError):
    """A grid file that cannot be run; the message names the file and the key."""


# ---- settings (the table is ``nbcnn.settings``) ---------------------------------------------
#: the cell settings besides the data options, in table order
SETTINGS = registry.NAMES
#: settings added after the first studies: at these values they stay out of a cell's key, so
#: the cells of earlier studies keep their keys
LATER_SETTINGS = {"clip_grad_norm": None, "label_smoothing": 0.0}

TOP_LEVEL = ("name", "description", "results", "save_models", "save_predictions", "plot",
             "fixed", "grid", "exclude", "include")


def _where(section: str, key: str, index=None) -> str:
    return f"[{section}] {key}" + (f"[{index}]" if index is not None else "")


def known_keys() -> list:
    """Every setting a grid file may give, in table order."""
    return list(registry.SETTINGS)


def check_value(key: str, value):
    """The normalised value of setting ``key``; KeyError if there is no such setting,
    ValueError/TypeError (the message without the name) if the value is bad."""
    return registry.get(key).check(value)


make_optimizer = registry.make_optimizer
make_early_stopping = registry.make_early_stopping
resolve = registry.resolve


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
        return registry.varying([c.settings for c in (self.cells if cells is None else cells)])

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
            owners = registry.get(k).datasets
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
        value = registry.parse_text(v)
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

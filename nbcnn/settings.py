"""Every training setting in one place: its name, default, check, help and what it applies to.

The Python API (the ``optim`` classes' keyword defaults, ``Sequential.fit``'s optimizer), the
``nbcnn train`` command (one ``--option`` per setting, its help and default from here) and grid
files (``nbcnn.harness.spec``: checks and defaults of ``[fixed]`` / ``[grid]`` values) all read
this table, so they cannot disagree. ``markdown()`` renders it for the README.

A setting applies to everything, or only to some optimizers (``optimizers``: e.g. ``momentum``
to sgd and rmsprop), to some data sets (``datasets``: the ``data.<option>`` settings) or to a
feature that is switched on (``feature``: ``early_stopping_monitor`` only counts with
``early_stopping``). The learning rate and ``eps`` have one default per optimizer
(``per_optimizer``).

Defaults are PyTorch's where PyTorch has one. Before this table the API, grid files and the
command line had their own, and some changed to agree: SGD's ``lr`` is 0.001 everywhere (it was
0.01 in ``optim.SGD``, 0.05 in grids and on the command line), RMSprop's is 0.01 (it was 0.001
in ``optim.RMSprop``, 0.05 in grids); ``nbcnn train`` now defaults to ``momentum`` 0 (it was
0.9), ``epochs`` 1 (3) and ``batch_size`` 32 (64), as ``fit`` and grid files always did, and
needs ``--arch``; a grid without ``backend`` runs on the default backend, as the API does.
Grid cells resolve to the same settings as before for every setting a grid file gives, so the
keys of the committed studies (which all give ``lr``) are unchanged (``tests/test_settings.py``
re-derives them).

The functions at the end turn resolved settings into the objects a run needs, the one place
each is written: ``make_optimizer``, ``make_early_stopping`` and ``load_data`` (load, subset,
split), used by ``nbcnn train`` and by every grid cell.
"""

from __future__ import annotations

import functools
import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

#: the optimizers, in table order (``optim.OPTIMIZERS`` holds their classes)
OPTIMIZERS = ("sgd", "adam", "rmsprop", "adagrad", "adadelta")
#: data set -> its own options (written ``data.<option>`` in grid files, ``--data-<option>``
#: on the command line)
DATA_OPTIONS = {"shapes": ("n", "size", "channels", "classes", "seed")}


# ---- checks: each returns the normalised value or raises ValueError / TypeError ------------
def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


@dataclass(frozen=True)
class Number:
    """A real number (``integer``: a whole one) in a range; ``none_word`` (e.g. ``"off"``) or
    None itself stands for "not set" (None) where the setting's default is None."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False
    none_word: str | None = None

    def want(self) -> str:
        """The range in words: 'in [0, 1)', '> 0', '>= 1'."""
        if self.lo is not None and self.hi is not None:
            return (f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}"
                    f"{')' if self.hi_open else ']'}")
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {self.hi:g}"
        return "a number"

    def __call__(self, value):
        if self.none_word is not None and (value is None or (
                isinstance(value, str) and value.strip().lower() == self.none_word)):
            return None
        extra = f" or {self.none_word!r}" if self.none_word else ""
        if self.integer:
            if not (isinstance(value, numbers.Integral) and _is_real(value)):
                raise TypeError(f"must be an integer{extra}, got {type(value).__name__} {value!r}")
        elif not _is_real(value):
            raise TypeError(f"must be a number{extra}, got {type(value).__name__} {value!r}")
        v = int(value) if self.integer else float(value)
        if not math.isfinite(v):          # out of a range with two ends, else just infinite
            bounded = self.lo is not None and self.hi is not None
            raise ValueError(f"must be {self.want() if bounded else 'finite'}, got {value!r}")
        too_low = self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo)
        too_high = self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi)
        if too_low or too_high:
            raise ValueError(f"must be {self.want()}, got {value!r}")
        return v


def _bool(v):
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"must be True or False, got {type(v).__name__} {v!r}")
    return bool(v)


def _string(v) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"must be a non-empty string, got {v!r}")
    return v.strip()


def _dataset(v):
    from .data.sources import canonical_name
    return canonical_name(_string(v))


def _arch(v):
    from .arch import parse
    v = _string(v)
    parse(v)          # raises ValueError naming the bad layer
    return v


def _backend(v):
    if v is None:
        return None
    from .backends import names
    v = _string(v).lower()
    family, _, device = v.partition(":")
    if family not in names():
        raise ValueError(f"unknown backend {v!r}; expected one of {', '.join(names())} "
                         "(opencl also as 'opencl:PLATFORM:DEVICE')")
    if device:
        if family != "opencl":
            raise ValueError(f"backend {v!r}: only opencl takes a device suffix")
        parts = device.split(":")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise ValueError(f"backend {v!r}: expected opencl:PLATFORM:DEVICE with two integers")
    return v


def _optimizer(v):
    v = _string(v).lower()
    if v not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {v!r}; expected one of {', '.join(OPTIMIZERS)}")
    return v


def _schedule(v):
    from .optim import parse_schedule
    v = _string(v).lower()
    parse_schedule(v, epochs=1)       # raises ValueError on a bad string
    return v


def _augment(v):
    from .data.augment import Augment
    return Augment.parse(_string(v)).spec()


def _monitor(v):
    from .callbacks import MONITORS
    v = _string(v).lower()
    if v not in MONITORS:
        raise ValueError(f"unknown monitor {v!r}; expected one of {', '.join(MONITORS)}")
    return v


def _classes(v):
    if isinstance(v, str):
        return v
    if not isinstance(v, list) or not all(isinstance(c, str) for c in v):
        raise ValueError(f"must be a list of class names or a comma-separated string, got {v!r}")
    return list(v)


# ---- the table -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """One setting. ``default`` None means "not set" (``shown`` says what that means);
    ``per_optimizer`` overrides ``default`` for the optimizers it names."""

    name: str
    default: Any
    check: Callable[[Any], Any]
    help: str
    group: str                                  # model, optimizer, training, data, run
    optimizers: tuple = ()                      # optimizer settings: the optimizers that take it
    datasets: tuple = ()                        # data options: the data sets that take it
    feature: str = ""                           # only counts when this setting is on
    per_optimizer: dict = field(default_factory=dict)
    shown: str = ""                             # the default in words, where None is not clear
    choices: tuple = ()                         # the allowed strings, where there is a short list

    @property
    def kind(self) -> str:
        """'flag' (true or false), 'number' (a ``Number``) or 'text'."""
        return "flag" if self.check is _bool else "number" if isinstance(self.check, Number) \
            else "text"

    def default_for(self, optimizer: str | None = None):
        """The default, for ``optimizer`` when it has its own."""
        return self.per_optimizer.get(optimizer, self.default)

    def applies_to(self) -> str:
        """What the setting applies to, in words."""
        if self.optimizers:
            return ", ".join(self.optimizers) if set(self.optimizers) != set(OPTIMIZERS) \
                else "every optimizer"
        if self.datasets:
            return "data set " + ", ".join(self.datasets)
        if self.feature:
            return f"with {self.feature}"
        return "every run"

    def default_text(self) -> str:
        """The default as the README and ``--help`` show it."""
        if self.per_optimizer:
            by: dict = {}
            for opt in self.optimizers:
                by.setdefault(self.default_for(opt), []).append(opt)
            return "; ".join(f"{_show(v)} for {', '.join(opts)}" for v, opts in by.items())
        return self.shown or _show(self.default)

    def describe(self) -> str:
        """Help, choices, default and what it applies to, in one sentence (``--help``)."""
        text = self.help + (f" (one of {', '.join(self.choices)})" if self.choices else "")
        where = "" if self.per_optimizer or self.applies_to() == "every run" \
            else f"; {self.applies_to() if self.feature else 'for ' + self.applies_to()}"
        return f"{text}; default: {self.default_text()}{where}"

    def check_value(self, value):
        """The normalised ``value``; ValueError/TypeError '<name> must be ...' otherwise."""
        try:
            return self.check(value)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"{self.name} {exc}") from None


def _show(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    return "none" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


_ALL = OPTIMIZERS
_LR = {"sgd": 1e-3, "adam": 1e-3, "rmsprop": 1e-2, "adagrad": 1e-2, "adadelta": 1.0}
_EPS = {"adam": 1e-8, "rmsprop": 1e-8, "adagrad": 1e-10, "adadelta": 1e-6}

_TABLE = [
    Setting("dataset", "shapes", _dataset, "mnist, fashion-mnist, cifar10 or shapes (generated)",
            "model"),
    Setting("arch", None, _arch, "a preset name or an architecture string, e.g. "
            "'conv(8,3,same)-relu-maxpool(2)-flatten-dense(10)'", "model", shown="required"),
    Setting("backend", None, _backend, "numba, opencl[:PLATFORM:DEVICE] or numpy", "run",
            shown="$NBCNN_BACKEND, else numba"),
    Setting("optimizer", "sgd", _optimizer, "the optimizer", "optimizer", choices=OPTIMIZERS),
    Setting("lr", None, Number(0, lo_open=True), "the learning rate (the peak of a onecycle "
            "schedule)", "optimizer", _ALL, per_optimizer=_LR),
    Setting("momentum", 0.0, Number(0, 1, hi_open=True), "momentum", "optimizer",
            ("sgd", "rmsprop")),
    Setting("nesterov", False, _bool, "Nesterov momentum (needs momentum > 0)", "optimizer",
            ("sgd",)),
    Setting("weight_decay", 0.0, Number(0), "L2 penalty added to the gradients (decoupled: "
            "AdamW's)", "optimizer", _ALL),
    Setting("beta1", 0.9, Number(0, 1, hi_open=True), "decay of the first moment",
            "optimizer", ("adam",)),
    Setting("beta2", 0.999, Number(0, 1, hi_open=True), "decay of the second moment",
            "optimizer", ("adam",)),
    Setting("eps", None, Number(0, lo_open=True), "added to the denominator", "optimizer",
            ("adam", "rmsprop", "adagrad", "adadelta"), per_optimizer=_EPS),
    Setting("alpha", 0.99, Number(0, 1), "decay of the running mean of squared gradients",
            "optimizer", ("rmsprop",)),
    Setting("decoupled", False, _bool, "decoupled weight decay (AdamW)", "optimizer",
            ("adam",)),
    Setting("lr_decay", 0.0, Number(0), "the learning rate is lr / (1 + (step - 1) * lr_decay)",
            "optimizer", ("adagrad",)),
    Setting("initial_accumulator_value", 0.0, Number(0), "where the sum of squared gradients "
            "starts", "optimizer", ("adagrad",)),
    Setting("rho", 0.9, Number(0, 1), "decay of the running averages", "optimizer",
            ("adadelta",)),
    Setting("clip_grad_norm", None, Number(0, lo_open=True, none_word="none"),
            "scale all gradients together when their total L2 norm exceeds this", "optimizer",
            _ALL, shown="none (no clipping)"),
    Setting("schedule", "constant", _schedule, "learning-rate schedule: constant, "
            "cosine[:T[:MIN]], step:S[:GAMMA], multistep:M1:M2...[:gamma=G], exp:GAMMA, "
            "warmup:W, joined by '*' (e.g. warmup:1*cosine), or onecycle[:PCT[:DIV[:FINAL_DIV]]] (per batch, lr is the peak)",
            "optimizer", _ALL),
    Setting("label_smoothing", 0.0, Number(0, 1), "train against (1-eps)*onehot + eps/classes",
            "training"),
    Setting("batch_size", 32, Number(1, integer=True), "training examples per step", "training"),
    Setting("epochs", 1, Number(1, integer=True), "passes over the training set", "training"),
    Setting("seed", 0, Number(0, integer=True), "initial weights, shuffling, dropout, "
            "augmentation, the train subset and the validation split", "training"),
    Setting("threads", None, Number(1, integer=True, none_word="auto"), "CPU threads",
            "run", shown="auto (all cores; in a grid, the executor decides)"),
    Setting("val_fraction", 0.1, Number(0, 1, hi_open=True), "fraction of the training set held "
            "out for validation (0: none)", "data"),
    Setting("limit", None, Number(1, integer=True, none_word="all"), "train on this many "
            "examples (a seeded, stratified subset)", "data", shown="all"),
    Setting("test_limit", None, Number(1, integer=True, none_word="all"), "evaluate on this many "
            "test examples (the same ones for every seed)", "data", shown="all"),
    Setting("augment", "none", _augment, "training-batch augmentation: crop:P (zero-pad P "
            "pixels, crop back), flip, translate:T, joined by commas, e.g. crop:4,flip",
            "training"),
    Setting("early_stopping", None, Number(1, integer=True, none_word="off"), "patience in "
            "epochs: stop when early_stopping_monitor has not improved for this many epochs, "
            "keeping the best epoch's weights", "training", shown="off"),
    Setting("early_stopping_monitor", "val_loss", _monitor, "what early stopping watches",
            "training", feature="early_stopping",
            choices=("val_loss", "val_accuracy", "train_loss", "train_accuracy")),
    Setting("data.n", None, Number(1, integer=True), "images per split", "data",
            datasets=("shapes",), shown="the data set's (shapes: 2000 train, 500 test)"),
    Setting("data.size", None, Number(1, integer=True), "image height and width", "data",
            datasets=("shapes",), shown="the data set's (shapes: 28)"),
    Setting("data.channels", None, Number(1, integer=True), "1 or 3", "data",
            datasets=("shapes",), shown="the data set's (shapes: 1)"),
    Setting("data.classes", None, _classes, "class names (a list, or comma-separated)", "data",
            datasets=("shapes",), shown="the data set's (shapes: all four)"),
    Setting("data.seed", None, Number(0, integer=True), "the generator's seed", "data",
            datasets=("shapes",), shown="the data set's (shapes: 0)"),
]

#: name -> Setting, in table order (runs.csv's column order)
SETTINGS: dict[str, Setting] = {s.name: s for s in _TABLE}
#: the settings that are not data options, in table order
NAMES = tuple(k for k in SETTINGS if not k.startswith("data."))


def parse_text(text: str):
    """A value written on the command line (``nbcnn train --lr 0.1``, ``nbcnn grid --only
    lr=0.1``) as a grid file would hold it: a TOML value (0.1, 3, true, [1, 2]), else a number
    Python reads (.5), else the text itself (the setting's check then says whether it fits)."""
    from .harness.spec import tomllib
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def get(name: str) -> Setting:
    """The setting ``name``; KeyError if there is none."""
    return SETTINGS[name]


def default(name: str, optimizer: str | None = None):
    """The default of ``name`` (for ``optimizer``, when it has its own)."""
    return SETTINGS[name].default_for(optimizer)


def check(name: str, value):
    """The normalised ``value`` of setting ``name``: KeyError for an unknown name,
    ValueError/TypeError '<name> must be ...' for a bad value."""
    return SETTINGS[name].check_value(value)


def optimizer_settings(optimizer: str) -> tuple:
    """The settings ``optimizer`` takes, in table order (the schedule included)."""
    return tuple(k for k, s in SETTINGS.items() if optimizer in s.optimizers)


def optimizer_defaults(optimizer: str) -> dict:
    """Keyword defaults of the optimizer class (without the schedule, which is an object)."""
    return {k: default(k, optimizer) for k in optimizer_settings(optimizer) if k != "schedule"}


def data_options(dataset: str) -> tuple:
    """The ``data.<option>`` settings ``dataset`` takes."""
    return tuple(k for k, s in SETTINGS.items() if dataset in s.datasets)


def varying(rows, names=None) -> list:
    """The settings among ``names`` (default: every setting, then any other key, in table
    order) that take more than one value across ``rows``: settings dicts (grid cells, run
    records) or a DataFrame (one row per run or epoch). A row without the setting (NaN in a
    DataFrame), e.g. ``momentum`` of an Adam run, does not count, except for the
    ``ABSENT_WHEN_DEFAULT`` settings, which it has at their default (``augment = "none"``). The one rule behind a grid's
    table, the settings kept in ``epochs.csv`` and the labels of the plots."""
    rows = rows.to_dict("records") if hasattr(rows, "to_dict") else list(rows)
    if names is None:
        seen = dict.fromkeys(k for r in rows for k in r)
        names = [k for k in SETTINGS if k in seen] + sorted(k for k in seen if k not in SETTINGS)
    out = []
    for k in names:
        values = {json.dumps(with_default(r, k), sort_keys=True, default=str) for r in rows
                  if k in ABSENT_WHEN_DEFAULT
                  or (k in r and not (isinstance(r[k], float) and math.isnan(r[k])))}
        if len(values) > 1:
            out.append(k)
    return out


#: settings a run leaves out while they are at their default (off), so that the keys of runs
#: made before they existed stay as they were: a run without one has it at its default
ABSENT_WHEN_DEFAULT = ("augment", "early_stopping", "clip_grad_norm", "label_smoothing")


def with_default(row: dict, name: str):
    """``row``'s value of setting ``name``; for ``ABSENT_WHEN_DEFAULT`` settings a row without
    it (or with NaN, in a table) has the default."""
    v = row.get(name)
    if name in ABSENT_WHEN_DEFAULT and _absent(v):
        return default(name)
    return v


def _absent(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def markdown() -> str:
    """The table as GitHub markdown: name, default, applies to, meaning."""
    lines = ["| setting | default | applies to | meaning |", "| --- | --- | --- | --- |"]
    for s in SETTINGS.values():
        meaning = s.help + (f" (one of {', '.join(s.choices)})" if s.choices else "")
        lines.append(f"| `{s.name}` | {s.default_text()} | {s.applies_to()} | "
                     f"{meaning.replace('|', '/')} |")
    return "\n".join(lines)


def resolve(raw: dict) -> dict:
    """A run's settings: the defaults (the optimizer's own where it has them; the default
    backend when none is given) updated with ``raw`` (checked values), keeping only what applies
    to the run's optimizer and data set, and leaving out ``augment`` and ``early_stopping``
    (with its monitor) while they are off. Raises ValueError if the optimizer rejects the
    combination (e.g. nesterov without momentum) or early stopping on validation has none.
    Grid cells (whose key hashes this) and ``nbcnn train`` both resolve through here."""
    optimizer = raw.get("optimizer", default("optimizer"))
    s = {k: raw.get(k, default(k, optimizer)) for k in NAMES}
    if s["arch"] is None:
        raise ValueError("no 'arch' given (a preset name or an architecture string)")
    if s["backend"] is None:
        from .backends import default_backend_name
        s["backend"] = default_backend_name()
    for k in NAMES:
        if get(k).optimizers and optimizer not in get(k).optimizers:
            del s[k]
    own = data_options(s["dataset"])
    for k, v in raw.items():
        if k in own:
            s[k] = v
    make_optimizer(s)                 # e.g. nesterov without momentum
    if s["early_stopping"] is None:   # the monitor of no early stopping is no setting
        del s["early_stopping_monitor"]
    elif s["early_stopping_monitor"].startswith("val_") and not s["val_fraction"]:
        raise ValueError(f"early_stopping on {s['early_stopping_monitor']!r} needs validation "
                         "(val_fraction > 0), or early_stopping_monitor = \"train_loss\"")
    for k in ("augment", "early_stopping"):
        if s[k] == default(k):
            del s[k]
    return s


# ---- what the settings build ---------------------------------------------------------------
def make_optimizer(settings: dict):
    """The optimizer of resolved ``settings`` (``optimizer``, its own settings, ``schedule`` as
    a string over ``epochs``); settings of other optimizers are ignored."""
    from . import optim
    name = settings.get("optimizer", default("optimizer"))
    kwargs = {k: settings[k] for k in optimizer_settings(name) if k in settings}
    kwargs["schedule"] = optim.parse_schedule(kwargs.get("schedule", default("schedule")),
                                              settings.get("epochs", default("epochs")))
    return optim.make(name, **kwargs)


def make_early_stopping(settings: dict):
    """The ``callbacks.EarlyStopping`` of ``settings``, or None when early stopping is off."""
    from .callbacks import EarlyStopping
    if settings.get("early_stopping") is None:
        return None
    return EarlyStopping(patience=settings["early_stopping"],
                         monitor=settings.get("early_stopping_monitor",
                                              default("early_stopping_monitor")))


@functools.lru_cache(maxsize=4)
def _load(name, split, root, options):
    from . import data
    return data.load(name, split=split, root=root, **dict(options))


def load_data(settings: dict, data_root=None):
    """(train, validation or None, test) as ``settings`` describe them: the data set with its
    ``data.<option>`` settings, the train subset (``limit``) and the validation part
    (``val_fraction``) drawn with the run's ``seed``, the test subset (``test_limit``) with seed
    0, so every seed sees the same test. The last few loads are kept (a grid's cells share
    them); the datasets are never changed in place."""
    options = tuple((k[5:], tuple(v) if isinstance(v, list) else v)
                    for k, v in sorted(settings.items()) if k.startswith("data."))
    name = settings.get("dataset", default("dataset"))
    train = _load(name, "train", data_root, options)
    test = _load(name, "test", data_root, options)
    seed = settings.get("seed", default("seed"))
    if settings.get("limit") and settings["limit"] < len(train):
        train = train.subset(settings["limit"], seed=seed)
    if settings.get("test_limit") and settings["test_limit"] < len(test):
        test = test.subset(settings["test_limit"], seed=0)
    val = None
    if settings.get("val_fraction"):
        train, val = train.split(settings["val_fraction"], seed=seed)
    return train, val, test

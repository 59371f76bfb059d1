"""Published numbers, and our studies' results next to them (``nbcnn report DIR... --published``).

``PUBLISHED`` lists, for each full-length study, the number a paper, a benchmark table or a claim
gives for one architecture on one data set: the value, where it comes from, and the settings it
was obtained with. ``compare(runs)`` puts beside each the matching finished runs of the
study (same study name, architecture and data set): ours as mean +- sd over seeds, the epochs,
the training seconds per epoch, the CPU the runs ran on, and "met" or "not met" with the
difference in percentage points. Runs that differ in some setting besides the seed (e.g. with
and without augmentation) give one row each. An entry with ``select="val_accuracy"`` (a search
tuned on validation) keeps only the setting whose mean last-epoch validation accuracy is the
highest, and reports that setting's test accuracy once, as a note: the choice never looks at
test. ``compute(runs, epochs)`` gives each study's total compute (wall seconds summed over runs).

A published value is a fraction (0.9125 for 91.25%); a claimed range (97-98%) has ``value`` its
low end and ``high`` its top, and is met from its low end on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

#: what ``kind`` says about a number: from a paper or benchmark table, someone's claim, or the
#: issue's own goal (no publication)
KINDS = ("published", "claim", "goal")
#: metrics a published number may be compared on
METRICS = {"test_accuracy": "test", "val_accuracy": "validation"}


@dataclass(frozen=True)
class Published:
    """One published number for one architecture on one data set, and the studies that
    reproduce it."""

    studies: tuple            # results' study names (a grid's ``name``) compared with it
    arch: str                 # preset name or architecture string, as the grid gives it
    dataset: str
    value: float              # a fraction; a claimed range's low end
    source: str               # paper, table or URL
    settings: str             # what it was obtained with
    metric: str = "test_accuracy"
    high: float | None = None  # a claimed range's top
    kind: str = "published"
    select: str | None = None  # "val_accuracy": keep only the setting best on validation
    where: dict = field(default_factory=dict)   # settings a run must have to be compared

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Published {self.arch}: kind must be one of {KINDS}, "
                             f"got {self.kind!r}")
        if self.metric not in METRICS:
            raise ValueError(f"Published {self.arch}: metric must be one of {tuple(METRICS)}, "
                             f"got {self.metric!r}")
        if not 0 < self.value <= 1 or (self.high is not None and not self.value <= self.high <= 1):
            raise ValueError(f"Published {self.arch}: value (and high) must be fractions in "
                             f"(0, 1], low <= high, got {self.value!r}, {self.high!r}")
        if self.select not in (None, "val_accuracy"):
            raise ValueError(f"Published {self.arch}: select must be None or 'val_accuracy', "
                             f"got {self.select!r}")

    def shown(self) -> str:
        """'91.25%' or '97-98%' (with 'goal ' or 'claim ' in front when it is one)."""
        text = _pct(self.value) if self.high is None else \
            f"{_pct(self.value, plain=True)}-{_pct(self.high)}"
        return text if self.kind == "published" else f"{self.kind} {text}"


_MNIST = "batch 10, lr 0.05, plain SGD, 30 epochs"
_AS_QUOTED = "the figure this preset is known by; its publication is not named here"
_LECUN = ("LeCun, Bottou, Bengio & Haffner 1998, Proc. IEEE 86(11), LeNet-5: 0.95% test error "
          "without distortions")
_LENET5 = ("the original LeNet-5 (scaled tanh, trainable average subsampling, partly connected "
           "C3, RBF outputs), 20 passes; ")
PUBLISHED = (
    Published(("mnist_seeds", "mnist_seeds_reduced"), "mnist-simple", "mnist", 0.9767,
              _AS_QUOTED, _MNIST),
    Published(("mnist_seeds", "mnist_seeds_reduced"), "mnist-complex", "mnist", 0.9933,
              _AS_QUOTED, _MNIST),
    Published(("mnist_seeds", "mnist_seeds_reduced"), "mnist-tiny", "mnist", 0.96,
              _AS_QUOTED, _MNIST),
    Published(("mnist_seeds", "mnist_seeds_reduced"), "lenet5", "mnist", 0.9905,
              _LECUN, _LENET5 + "ours is the ReLU / max-pool variant"),
    Published(("mnist_seeds",), "lenet5-tanh", "mnist", 0.9905,
              _LECUN, _LENET5 + "ours has tanh and plain average pooling"),
    Published(("mnist_seeds", "mnist_seeds_reduced"), "mnist-strided", "mnist", 0.97,
              "Kajda's claim for this net (no publication)", "not stated", metric="val_accuracy",
              high=0.98, kind="claim"),
    Published(("mnist_strided_kajda",), "mnist-strided", "mnist", 0.97,
              "Kajda's claim for this net (no publication)", "not stated", metric="val_accuracy",
              high=0.98, kind="claim", select="val_accuracy"),
    Published(("fashion_mnist_benchmark",), "fmnist-2conv", "fashion-mnist", 0.916,
              "Fashion-MNIST benchmark table, '2 Conv+pooling' (github.com/zalandoresearch/"
              "fashion-mnist#benchmark; submitted as TensorFlow's doc, benchmark/convnet.py)",
              "plain SGD lr 0.001, batch 400, 200k steps (1333 epochs), no augmentation, the test "
              "set evaluated every 2000 steps"),
    Published(("fashion_mnist_benchmark",), "fmnist-2conv-bn", "fashion-mnist", 0.934,
              "Fashion-MNIST benchmark table, '2 Conv+pooling+BN', @khanguyen1207 (github.com/"
              "khanguyen1207/My-Machine-Learning-Corner, Zalando MNIST/fashion.ipynb)",
              "RMSprop lr 0.001, batch 512, 40 epochs, lr halved on a plateau of the TEST "
              "accuracy (after epochs 15, 25, 35), no augmentation"),
    Published(("cifar10_resnet20",), "cifar-resnet20", "cifar10", 0.9125,
              "He, Zhang, Ren & Sun 2016, Deep Residual Learning (CVPR; arXiv:1512.03385), "
              "Table 6: ResNet-20, 8.75% test error",
              "SGD 0.1, momentum 0.9, wd 1e-4, batch 128, lr / 10 at 32k and 48k iterations, "
              "64k iterations (164 epochs), pad-4 crop + flip, 50k training images"),
    Published(("cifar10_onecycle",), "cifar-resnet20", "cifar10", 0.9125,
              "He et al. 2016, Table 6 (as above: 164 epochs)",
              "He et al.'s step schedule over 164 epochs (ours: one cycle, fewer epochs)"),
    Published(("cifar10_onecycle",), "cifar-resnet20", "cifar10", 0.90,
              "the project's goal for a faster schedule (no publication)", "one cycle, few epochs",
              kind="goal"),
)


def _pct(v, plain=False) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else \
        f"{100 * v:.2f}" + ("" if plain else "%")


def _same_arch(a, b) -> bool:
    from .arch import resolve
    return a == b or resolve(str(a)) == resolve(str(b))


def _setting_columns(runs: pd.DataFrame) -> list:
    """The settings columns of a runs table (``harness.spec.SETTINGS`` and data options)."""
    from .harness.spec import SETTINGS
    return [c for c in runs.columns if c in SETTINGS or c.startswith("data.")]


def _value(v, name: str | None = None) -> str:
    """A setting as text, a missing one (a setting at its off value, left out of a cell) as ''.
    An integer setting ``name`` (``nbcnn.settings``) that pandas made a float, joining tables
    with a missing value, is written as the integer (batch_size 10.0 is 10)."""
    from .settings import SETTINGS, Number
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    check = SETTINGS[name].check if name in SETTINGS else None
    if isinstance(v, float) and v.is_integer() and isinstance(check, Number) and check.integer:
        return str(int(v))
    return str(v)


def _groups(runs: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(label, runs) for each combination of the settings that vary among ``runs`` (the seed
    aside; ``settings.varying``): the label names them, e.g. 'augment=crop:2,flip', '' when
    nothing varies. A setting left out of some runs while off (augment, early stopping) is
    'none' there; one of another optimizer (momentum of an Adam run) is not named in that
    run's label."""
    from .settings import SETTINGS, varying, with_default
    cols = [c for c in _setting_columns(runs) if c != "seed"]
    rows = runs[cols].to_dict("records")
    vary = varying(rows, cols)
    if not vary:
        return [("", runs)]
    labels = []
    for r in rows:
        parts = []
        for k in vary:
            v = _value(with_default(r, k), k)
            if not v and k in SETTINGS and SETTINGS[k].optimizers:
                continue                       # a setting of another optimizer
            parts.append(f"{k}={v or 'none'}")
        labels.append(", ".join(parts))
    labels = pd.Series(labels, index=runs.index)
    return [(label, runs[labels == label]) for label in dict.fromkeys(labels)]


def _cpu(runs: pd.DataFrame) -> str:
    """The CPU model(s) the runs recorded, with their thread counts; 'not recorded' for runs made
    before runs recorded it (with their host name)."""
    parts = []
    for _, r in runs.iterrows():
        cpu = _value(r.get("cpu"))
        threads = _value(r.get("num_threads"))
        what = cpu or f"not recorded (host {_value(r.get('hostname')) or '?'})"
        if threads:
            what += f", {int(float(threads))} thread{'s' if float(threads) != 1 else ''}"
        if what not in parts:
            parts.append(what)
    return "; ".join(parts)


def _mean_sd(values: pd.Series) -> tuple[float, float]:
    values = values.dropna().astype(float)
    if values.empty:
        return math.nan, math.nan
    return float(values.mean()), float(values.std()) if len(values) > 1 else math.nan


def _ours(mean, sd) -> str:
    if math.isnan(mean):
        return ""
    return _pct(mean) + (f" ± {100 * sd:.2f}" if not math.isnan(sd) else "")


def verdict(entry: Published, mean: float) -> str:
    """'met (+0.42 pp)' or 'not met (-1.30 pp)', against the value (a range's low end)."""
    if math.isnan(mean):
        return "no finished runs"
    diff = 100 * (mean - entry.value)
    return f"{'met' if diff >= 0 else 'not met'} ({diff:+.2f} pp)"


#: compare()'s columns
COLUMNS = ["study", "dataset", "arch", "settings", "metric", "published", "source",
           "published settings", "ours", "seeds", "epochs", "s/epoch", "cpu", "verdict", "note",
           "mean", "sd", "keys"]
#: compare()'s columns for programs, not for the printed tables
_HIDDEN = ("mean", "sd", "keys")


def compare(runs: pd.DataFrame, entries=None) -> pd.DataFrame:
    """One row per published entry and group of matching finished runs (see the module
    docstring), for the studies that ``runs`` holds (a runs table of one or more studies, with
    a ``study`` column). Entries of studies not in ``runs`` are left out; an entry of a study
    that is there without a matching finished run gets a row saying so. ``mean`` / ``sd`` are
    the fractions behind ``ours``, ``keys`` the row's runs. ``entries``: default ``PUBLISHED``."""
    entries = PUBLISHED if entries is None else entries
    ok = runs[runs["status"] == "ok"] if "status" in runs else runs
    studies = set(runs["study"]) if "study" in runs else set()
    rows = []
    for entry in entries:
        for study in entry.studies:
            if study not in studies:
                continue
            mine = ok[(ok["study"] == study) & (ok["dataset"] == entry.dataset)
                      & ok["arch"].map(lambda a: _same_arch(a, entry.arch))]
            for k, v in entry.where.items():
                mine = mine[mine[k].map(_value) == _value(v)] if k in mine else mine.iloc[0:0]
            base = {"study": study, "dataset": entry.dataset, "arch": entry.arch,
                    "metric": METRICS[entry.metric], "published": entry.shown(),
                    "source": entry.source, "published settings": entry.settings}
            if mine.empty:
                rows.append({**base, "settings": "", "ours": "", "seeds": 0, "epochs": "",
                             "s/epoch": math.nan, "cpu": "", "verdict": "no finished runs",
                             "note": "", "mean": math.nan, "sd": math.nan, "keys": []})
                continue
            groups = _groups(mine)
            chosen = ""
            if entry.select == "val_accuracy":
                scored = [(_mean_sd(g["val_accuracy"])[0], label, g) for label, g in groups]
                scored = [s for s in scored if not math.isnan(s[0])]
                if scored:
                    _, label, g = max(scored, key=lambda s: s[0])
                    chosen = f"chosen on validation, the best of {len(groups)} settings; "
                    groups = [(label, g)]
            for label, g in groups:
                mean, sd = _mean_sd(g[entry.metric])
                note = ""
                if entry.metric != "test_accuracy":
                    test = _ours(*_mean_sd(g["test_accuracy"]))
                    note = f"{chosen}test accuracy (reported once): {test}"
                epochs = sorted({int(e) for e in g["epochs"].dropna()})
                rows.append({**base, "settings": label, "ours": _ours(mean, sd),
                             "seeds": int(g["seed"].nunique()) if "seed" in g else len(g),
                             "epochs": ", ".join(map(str, epochs)),
                             "s/epoch": _mean_sd(g["seconds_per_epoch"])[0],
                             "cpu": _cpu(g), "verdict": verdict(entry, mean), "note": note,
                             "mean": mean, "sd": sd, "keys": list(g["key"])})
    return pd.DataFrame(rows, columns=COLUMNS)


def headline_key(runs: pd.DataFrame, keys) -> str | None:
    """The run of ``keys`` to show for a row (its confusion matrix): the one with the median
    test accuracy (the lower of the two middle ones for an even count), so the figure is a
    typical seed, not the luckiest."""
    mine = runs[runs["key"].isin(list(keys))].dropna(subset=["test_accuracy"])
    if mine.empty:
        return None
    ordered = mine.sort_values(["test_accuracy", "key"], kind="stable")
    return str(ordered["key"].iloc[(len(ordered) - 1) // 2])


def compute_seconds(runs: pd.DataFrame, epochs: pd.DataFrame) -> pd.Series:
    """Wall seconds each run took: its ``wall_seconds`` plus, for a run continued from a
    checkpoint, the training seconds of the epochs an earlier process ran (``resumed_epochs``;
    their validation passes and set-up are not recorded, so such a run's total is a lower
    bound)."""
    out = runs["wall_seconds"].astype(float).fillna(0.0).copy()
    if "resumed_epochs" not in runs or epochs.empty:
        return out
    for i, r in runs.iterrows():
        done = r.get("resumed_epochs")
        if done is None or (isinstance(done, float) and math.isnan(done)) or not done:
            continue
        mine = epochs[(epochs["key"] == r["key"]) & (epochs["epoch"] <= int(done))]
        out.loc[i] += float(mine["seconds"].sum())
    return out


def compute(runs: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Per study: runs finished and failed, the compute they took (``compute_seconds`` summed,
    failed attempts included), and the CPUs they ran on."""
    if runs.empty:
        return pd.DataFrame(columns=["study", "runs ok", "runs failed", "compute", "cpu"])
    from .results import fmt_seconds
    seconds = compute_seconds(runs, epochs)
    rows = []
    for study, g in runs.groupby("study", sort=False):
        total = float(seconds.loc[g.index].sum())
        rows.append({"study": study, "runs ok": int((g["status"] == "ok").sum()),
                     "runs failed": int((g["status"] != "ok").sum()),
                     "compute": f"{fmt_seconds(total)} ({total / 3600:.2f} h)",
                     "cpu": _cpu(g)})
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    """A ``compare`` or ``compute`` table as GitHub markdown (without ``mean``, ``sd``,
    ``keys``)."""
    table = table.drop(columns=[c for c in _HIDDEN if c in table])
    cols = list(table.columns)

    def cell(col, v):
        if col == "s/epoch":
            return "" if isinstance(v, float) and math.isnan(v) else f"{v:.1f}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    lines += ["| " + " | ".join(cell(c, v) for c, v in zip(cols, row)) + " |"
              for row in table.itertuples(index=False)]
    return "\n".join(lines)


def text(table: pd.DataFrame) -> str:
    """A ``compare`` or ``compute`` table as plain text, one block per row (its cells are long)."""
    table = table.drop(columns=[c for c in _HIDDEN if c in table])
    blocks = []
    for _, r in table.iterrows():
        lines = []
        for c, v in r.items():
            if c == "s/epoch":
                v = "" if isinstance(v, float) and math.isnan(v) else f"{v:.1f}"
            if str(v) != "":
                lines.append(f"  {c:<19}{v}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)

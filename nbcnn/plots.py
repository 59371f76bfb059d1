"""Figures of a study's tables (seaborn), for notebooks and for ``nbcnn plot``.

Each function takes DataFrames (``runs, epochs = nbcnn.results.load(dir)``) or a model and returns
a matplotlib ``Figure`` made without pyplot (no display needed; a notebook shows it when it is the
cell's value; ``fig.savefig("x.png")`` writes it). ``plot_study(dir)`` draws them all to PNG.

- ``learning_curves(epochs)``: accuracy and loss per epoch, train and validation, one colour per
  setting that varies (arch, backend, ...), the mean over seeds with a band of +-1 sd.
- ``time_per_epoch(epochs)``: training seconds per epoch by architecture and backend.
- ``accuracy_vs_time(epochs)``: validation accuracy against training time, one line per run.
- ``throughput(runs)``: training images per second by batch size (or arch) and backend.
- ``confusion_matrix(y_true, y_pred, classes)``: row-normalised confusion matrix of one run.
- ``filters(model)``: the first convolution's learned filters.
- ``feature_maps(model, image)``: one image and the first convolution block's output maps.

``plot_headlines(dir)`` draws, for each row of the study's comparison with the published numbers
(``nbcnn.published.compare``), that row's learning curves alone and the confusion matrix of its
median-seed run.
"""

from __future__ import annotations

import os
import textwrap

import numpy as np
import pandas as pd

#: settings that may label a curve, in order of preference
LABEL_SETTINGS = ["dataset", "arch", "backend", "optimizer", "lr", "momentum", "schedule",
                  "batch_size", "epochs", "weight_decay", "threads", "limit", "val_fraction"]


def _figure(w=7.0, h=4.5, ncols=1, nrows=1, **kw):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(w, h), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def _suptitle(fig, text):
    width = int(fig.get_figwidth() * 10)
    fig.suptitle("\n".join(textwrap.wrap(text, max(width, 30))))


def _sns():
    import seaborn as sns
    return sns


def varying(df: pd.DataFrame, candidates=None) -> list:
    """The settings among ``candidates`` (default: ``LABEL_SETTINGS`` first, then every other
    setting of ``nbcnn.settings``) that take more than one value in ``df``, by the rule of
    ``nbcnn.settings.varying`` (a run without the setting does not count, unless the setting is
    one left out while off: ``augment`` absent is ``none``)."""
    from .settings import NAMES
    from .settings import varying as vary
    if candidates is None:
        candidates = LABEL_SETTINGS + [k for k in NAMES if k not in LABEL_SETTINGS]
    return vary(df, [c for c in candidates if c in df])


def _values(df: pd.DataFrame, key: str) -> pd.Series:
    """A setting's column as labels show it: the default where a run left it out while off."""
    from .settings import with_default
    return df[key].map(lambda v: with_default({key: v}, key))


def _short(text, width: int = 34) -> str:
    """A label broken over lines at '-' (architecture strings) so it stays narrow and unique."""
    text = str(text)
    if len(text) <= width:
        return text
    lines, line = [], ""
    for part in text.split("-"):
        if line and len(line) + 1 + len(part) > width:
            lines.append(line + "-")
            line = part
        else:
            line = f"{line}-{part}" if line else part
    lines.append(line)
    return "\n".join(lines)


def run_labels(df: pd.DataFrame, exclude=("seed",)) -> pd.Series:
    """A label per row naming the settings that vary (seeds aside), e.g. 'arch=lenet5, lr=0.1'."""
    keys = [k for k in varying(df) if k not in exclude]
    if not keys:
        return pd.Series([_short(df["arch"].iloc[0]) if "arch" in df and len(df) else "all runs"]
                         * len(df), index=df.index)
    values = pd.DataFrame({k: _values(df, k) for k in keys}, index=df.index)
    if len(keys) == 1:
        return values[keys[0]].map(_short)
    return values.astype(str).apply(lambda r: ", ".join(f"{k}={_short(v)}"
                                                        for k, v in r.items()), axis=1)


def _legend(ax, title=None):
    leg = ax.get_legend()
    if leg is not None:
        leg.set_title(title)


def _empty(title, msg):
    fig, axes = _figure(6, 3)
    ax = axes[0, 0]
    ax.text(0.5, 0.5, msg, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    ax.set_title(title)
    return fig


def _title_suffix(df) -> str:
    n_seeds = df["seed"].nunique() if "seed" in df else 1
    return f" (mean over {n_seeds} seeds, band: +-1 sd)" if n_seeds > 1 else ""


# ---- from the tables -----------------------------------------------------------------------
def learning_curves(epochs: pd.DataFrame, hue: str | None = None, title: str | None = None):
    """Accuracy and loss per epoch (train solid, validation dashed), mean and sd over seeds."""
    sns = _sns()
    if epochs.empty:
        return _empty("Learning curves", "no finished runs")
    df = epochs.copy()
    df["run"] = df[hue].map(_short) if hue else run_labels(df)
    long = []
    for split in ("train", "val"):
        part = df[["run", "seed", "epoch"]].copy() if "seed" in df else df[["run", "epoch"]].copy()
        part["split"] = "train" if split == "train" else "validation"
        part["accuracy"] = df[f"{split}_accuracy"]
        part["loss"] = df[f"{split}_loss"]
        long.append(part)
    long = pd.concat(long, ignore_index=True).dropna(subset=["accuracy", "loss"], how="all")
    fig, axes = _figure(12, 4.8, ncols=2)
    for ax, metric, unit in ((axes[0, 0], "accuracy", "accuracy (fraction correct)"),
                             (axes[0, 1], "loss", "cross-entropy loss")):
        sns.lineplot(data=long, x="epoch", y=metric, hue="run", style="split",
                     style_order=["train", "validation"], errorbar="sd", marker="o",
                     markersize=4, ax=ax, legend=(metric == "loss"))
        ax.set_xlabel("epoch")
        ax.set_ylabel(unit)
        ax.set_title(metric.capitalize())
        ax.grid(alpha=0.3)
        if long["epoch"].nunique() <= 15:
            ax.set_xticks(sorted(long["epoch"].unique()))
    if axes[0, 1].get_legend() is not None:
        sns.move_legend(axes[0, 1], "upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    fig.suptitle(title or "Learning curves" + _title_suffix(df))
    return fig


def _order(values) -> list:
    """Numbers in numeric order, then strings in alphabetical order."""
    nums = sorted(v for v in values if isinstance(v, (int, float, np.number)) and not isinstance(v, bool))
    rest = sorted((v for v in values if v not in nums), key=str)
    return nums + rest


def _bars(df, x, y, hue, col, ylabel, title):
    """Bar plots of ``y`` by ``x`` and ``hue``, one panel per value of ``col`` (if any), shared
    y axis (log when it spans more than 30x), error ticks +-1 sd."""
    sns = _sns()
    df = df.copy()
    for c in (x, hue, col):
        if c == "arch":
            df[c] = df[c].map(_short)
    panels = _order(df[col].unique()) if col else [None]
    ncols = min(len(panels), 3)
    nrows = -(-len(panels) // ncols)
    width = max(6.0, 1.2 * df[x].nunique() + 2.5)
    fig, axes = _figure(width * ncols, 4.6 * nrows, ncols=ncols, nrows=nrows, sharey=True)
    log = df[y].max() > 30 * max(df[y].min(), 1e-9)
    hue_order = _order(df[hue].unique()) if hue else None
    order = _order(df[x].unique())
    for i, ax in enumerate(axes.flat):
        if i >= len(panels):
            ax.set_axis_off()
            continue
        part = df if col is None else df[df[col] == panels[i]]
        sns.barplot(data=part, x=x, y=y, hue=hue, order=order, hue_order=hue_order,
                    errorbar="sd", ax=ax, legend=(i == 0))
        if log:
            ax.set_yscale("log")
        ax.set_ylabel(ylabel + (" (log scale)" if log else "") if i % ncols == 0 else "")
        ax.set_xlabel(x.replace("_", " "))
        ax.grid(axis="y", alpha=0.3)
        if x == "arch":
            ax.tick_params(axis="x", labelsize=8)
        if col:
            ax.set_title(f"{col.replace('_', ' ')} = {panels[i]}", fontsize=10)
        if ax.get_legend() is not None:
            ax.get_legend().set_title(hue)
    _suptitle(fig, title)
    return fig


def time_per_epoch(epochs: pd.DataFrame, x: str | None = None, hue: str | None = None,
                   col: str | None = None, title: str | None = None):
    """Training time per epoch (the training loop, no validation) by ``x`` (default arch) and
    ``hue`` (default backend), a panel per ``col`` (default batch size, when it varies); bars are
    means over epochs and seeds, ticks +-1 sd."""
    if epochs.empty:
        return _empty("Time per epoch", "no finished runs")
    vary = varying(epochs)
    x = x or ("arch" if "arch" in epochs else "key")
    if hue is None:
        hue = next((h for h in ("backend", "threads", "optimizer") if h != x and h in vary), None)
    if col is None:
        col = next((c for c in ("batch_size", "dataset") if c not in (x, hue) and c in vary), None)
    return _bars(epochs, x, "seconds", hue, col, "training time per epoch (s)",
                 title or "Training time per epoch")


def accuracy_vs_time(epochs: pd.DataFrame, hue: str | None = None, title: str | None = None):
    """Validation accuracy (train accuracy when there is none) against cumulative training time,
    one line per run, a marker per epoch."""
    sns = _sns()
    if epochs.empty:
        return _empty("Accuracy against time", "no finished runs")
    df = epochs.copy()
    metric = "val_accuracy" if df["val_accuracy"].notna().any() else "train_accuracy"
    df["run"] = df[hue].map(_short) if hue else run_labels(df)
    style = "backend" if "backend" in varying(df) and hue != "backend" else None
    fig, axes = _figure(9, 5)
    ax = axes[0, 0]
    sns.lineplot(data=df, x="elapsed_seconds", y=metric, hue="run", style=style, units="key",
                 estimator=None, marker="o", markersize=4, ax=ax)
    ax.set_xlabel("training time (s, cumulative over epochs)")
    ax.set_ylabel(f"{'validation' if metric == 'val_accuracy' else 'train'} accuracy (fraction)")
    if df["elapsed_seconds"].max() > 30 * max(df["elapsed_seconds"].min(), 1e-9):
        ax.set_xscale("log")
        ax.set_xlabel("training time (s, cumulative over epochs, log scale)")
    ax.grid(alpha=0.3)
    if ax.get_legend() is not None:
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    ax.set_title(title or "Accuracy against training time (one line per run)")
    return fig


def throughput(runs: pd.DataFrame, x: str | None = None, hue: str | None = None,
               col: str | None = None, title: str | None = None):
    """Training images per second by ``x`` (default batch size when it varies, else arch) and
    ``hue`` (default backend), a panel per ``col`` (default arch, when it varies and is not x)."""
    df = runs[runs["status"] == "ok"] if "status" in runs else runs
    if df.empty or "images_per_second" not in df:
        return _empty("Throughput", "no finished runs")
    vary = varying(df)
    x = x or ("batch_size" if "batch_size" in vary else "arch")
    hue = hue or next((h for h in ("backend", "threads", "arch") if h != x and h in vary), None)
    if col is None:
        col = next((c for c in ("arch", "dataset") if c not in (x, hue) and c in vary), None)
    return _bars(df, x, "images_per_second", hue, col, "training throughput (images/s)",
                 title or "Training throughput")


# ---- one run -------------------------------------------------------------------------------
def confusion_matrix(y_true, y_pred, classes=None, normalize: bool = True,
                     title: str | None = None):
    """Rows: true class; columns: predicted class; cells: fraction of the row (or counts)."""
    sns = _sns()
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    k = int(max(y_true.max(initial=0), y_pred.max(initial=0)) + 1)
    classes = [str(c) for c in (classes if classes is not None else range(k))]
    k = max(k, len(classes))
    classes = classes + [str(i) for i in range(len(classes), k)]
    counts = np.zeros((k, k), np.int64)
    np.add.at(counts, (y_true, y_pred), 1)
    values = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalize else counts
    size = min(4 + 0.55 * k, 14)
    fig, axes = _figure(size + 1.2, size)
    ax = axes[0, 0]
    sns.heatmap(values, annot=k <= 12, fmt=".2f" if normalize else "d", cmap="Blues",
                xticklabels=classes, yticklabels=classes, square=True, ax=ax,
                vmin=0, vmax=1 if normalize else None,
                cbar_kws={"label": "fraction of the true class" if normalize else "images"})
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    acc = float((y_true == y_pred).mean()) if len(y_true) else float("nan")
    text = (title + "\n" if title else "") + f"test accuracy {acc:.4f} on {len(y_true)} images"
    width = int(8 * fig.get_figwidth()) + 10
    ax.set_title("\n".join(line for para in text.split("\n")
                           for line in textwrap.wrap(para, width)))
    return fig


def _first_conv(model):
    from .layers import Conv2D
    for i, layer in enumerate(model.layers):
        if isinstance(layer, Conv2D):
            return i, layer
    raise ValueError(f"the model has no convolution layer: {model.spec()}")


def _grid_shape(n):
    cols = int(np.ceil(np.sqrt(n)))
    return int(np.ceil(n / cols)), cols


def filters(model, max_filters: int = 32, title: str | None = None):
    """The first convolution's filters: RGB when it reads 3 channels, else channel 0 on a
    diverging colour scale (red positive, blue negative, shared across filters)."""
    _, conv = _first_conv(model)
    w = conv.get_weights()["weight"]            # (out, in, kh, kw)
    n = min(len(w), max_filters)
    rows, cols = _grid_shape(n)
    fig, axes = _figure(max(1.3 * cols + 1, 5), 1.3 * rows + 1, ncols=cols, nrows=rows)
    lim = float(np.abs(w[:n]).max()) or 1.0
    im = None
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.set_axis_off()
            continue
        if w.shape[1] == 3:
            f = w[i].transpose(1, 2, 0)
            f = (f - f.min()) / (np.ptp(f) or 1.0)
            ax.imshow(f, interpolation="nearest")
        else:
            im = ax.imshow(w[i, 0], cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        ax.set_title(f"#{i}", fontsize=8)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.8, label="weight")
    shown = "RGB, each filter scaled to its own range" if w.shape[1] == 3 else \
        ("input channel 0 of " + str(w.shape[1]) if w.shape[1] > 1 else "grey input")
    _suptitle(fig, title or f"First-layer filters: {len(w)} of {w.shape[2]}x{w.shape[3]} px "
                 f"({shown})")
    return fig


def feature_maps(model, image, max_maps: int = 16, title: str | None = None, label=None):
    """``image`` (C, H, W) and the output maps of the first convolution block (the convolution
    and the activation right after it, if any), in evaluation mode."""
    from .layers.activations import Activation
    image = np.asarray(image, np.float32)
    if image.ndim == 4:
        image = image[0]
    i, conv = _first_conv(model)
    stop = i + 1
    if stop < len(model.layers) and isinstance(model.layers[stop], Activation):
        stop += 1
    maps = model.activations(image[None], upto=stop)[-1][0]
    n = min(len(maps), max_maps)
    rows, cols = _grid_shape(n + 1)
    fig, axes = _figure(max(1.5 * cols + 1, 5), 1.5 * rows + 1, ncols=cols, nrows=rows)
    flat = list(axes.flat)
    for ax in flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if image.shape[0] == 3:
        flat[0].imshow(image.transpose(1, 2, 0).clip(0, 1), interpolation="nearest")
    else:
        flat[0].imshow(image[0], cmap="gray", interpolation="nearest")
    flat[0].set_title("input" + (f" ({label})" if label is not None else ""), fontsize=8)
    for j in range(n):
        flat[j + 1].imshow(maps[j], cmap="viridis", interpolation="nearest")
        flat[j + 1].set_title(f"map {j}", fontsize=8)
    for ax in flat[n + 1:]:
        ax.set_axis_off()
    names = "-".join(layer.spec() for layer in model.layers[i:stop])
    _suptitle(fig, title or f"Feature maps after {names}: {n} of {len(maps)} "
                 f"({maps.shape[1]}x{maps.shape[2]} px, own colour scale each)")
    return fig


# ---- a whole study -------------------------------------------------------------------------
def plot_study(study_dir, out=None, key: str | None = None, fmt: str = "png", dpi: int = 120):
    """Draw every figure of a study folder into ``out`` (default ``<study>/figures``); returns the
    paths written. ``key``: the run for the confusion matrix, filters and feature maps (default:
    the best test accuracy). Every run of the folder is drawn (as ``results.load`` gives them)."""
    from . import results as R
    res = R.load(study_dir)
    out = out or os.path.join(res.dir, "figures")
    os.makedirs(out, exist_ok=True)
    written = []

    def save(fig, name):
        path = os.path.join(out, f"{name}.{fmt}")
        fig.savefig(path, dpi=dpi)
        written.append(path)

    runs, epochs = res.runs, res.epochs
    study = res.name
    if not epochs.empty:
        save(learning_curves(epochs, title=f"{study}: learning curves" + _title_suffix(epochs)),
             "learning_curves")
        save(time_per_epoch(epochs, title=f"{study}: training time per epoch"), "time_per_epoch")
        save(accuracy_vs_time(epochs, title=f"{study}: accuracy against training time"),
             "accuracy_vs_time")
    ok = res.ok()
    if not ok.empty and "images_per_second" in ok:
        save(throughput(ok, title=f"{study}: training throughput"), "throughput")
    key = res.find(key) if key else res.best()
    if key is None:
        return written
    row = runs[runs["key"] == key].iloc[0]
    what = f"{row.get('arch', '')} on {row.get('backend', '')}, seed {row.get('seed', '')}"
    pred = res.predictions(key)
    if pred is not None:
        save(confusion_matrix(pred["y_true"], pred["y_pred"], list(pred["classes"]),
                              title=f"{study} run {key} ({what}): test confusion matrix"),
             f"confusion_{key}")
    if res.model_path(key):
        model = res.load_model(key, backend="numpy")
        try:
            save(filters(model, title=f"{study} run {key}: first-layer filters"), f"filters_{key}")
            if pred is not None and len(pred.get("sample_x", [])):
                label = pred["classes"][int(pred["sample_y"][0])] if "sample_y" in pred else None
                save(feature_maps(model, pred["sample_x"][0], label=label), f"feature_maps_{key}")
        except ValueError:           # no convolution: no filters to show
            pass
    return written


def _slug(text: str) -> str:
    """A file-name-safe version of a label: letters, digits, '.', '-' and '_'."""
    out = "".join(c if c.isalnum() or c in ".-_" else "_" for c in str(text))
    return "_".join(filter(None, out.split("_")))[:80]


def plot_headlines(study_dir, out=None, fmt: str = "png", dpi: int = 120):
    """For each row of the study's comparison with its published numbers
    (``published.compare``; one row per architecture and setting): the learning curves of that
    row's runs (mean and sd over seeds) and the test confusion matrix of its median-seed run
    (``published.headline_key``), into ``out`` (default ``<study>/figures``) as
    ``headline_<arch>[_<settings>]_learning_curves`` and ``..._confusion_<key>``. Rows of one
    architecture and setting compared with two numbers are drawn once. Returns the paths
    written (none when the study has no published numbers)."""
    from . import published
    from . import results as R
    res = R.load(study_dir)
    out = out or os.path.join(res.dir, "figures")
    runs, epochs = res.runs, res.epochs
    if "study" not in runs:
        runs = runs.assign(study=res.name)
    table = published.compare(runs)
    written, seen = [], set()
    for _, row in table.iterrows():
        keys = list(row["keys"])
        if not keys or tuple(sorted(keys)) in seen:
            continue
        seen.add(tuple(sorted(keys)))
        setting = row["settings"]
        name = "headline_" + _slug(row["arch"] + (f"_{setting}" if setting else ""))
        what = f"{row['study']}: {row['arch']}" + (f" ({setting})" if setting else "")
        os.makedirs(out, exist_ok=True)
        mine = epochs[epochs["key"].isin(keys)]
        if not mine.empty:
            fig = learning_curves(mine, title=f"{what}: learning curves" + _title_suffix(mine))
            written.append(os.path.join(out, f"{name}_learning_curves.{fmt}"))
            fig.savefig(written[-1], dpi=dpi)
        key = published.headline_key(runs, keys)
        pred = res.predictions(key) if key else None
        if pred is not None:
            fig = confusion_matrix(pred["y_true"], pred["y_pred"], list(pred["classes"]),
                                   title=f"{what}, run {key} (median seed): test confusion matrix")
            written.append(os.path.join(out, f"{name}_confusion_{key}.{fmt}"))
            fig.savefig(written[-1], dpi=dpi)
    return written

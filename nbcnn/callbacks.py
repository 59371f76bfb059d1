"""What ``fit`` watches from one epoch to the next: early stopping and exploding losses.

    model.fit(train, epochs=50, validation=val,
              early_stopping=EarlyStopping(patience=5, monitor="val_loss", restore_best=True))

stops when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs in a
row and, with ``restore_best``, puts back the weights of the best epoch. The history's ``attrs``
say where it stopped (``stopped_epoch``) and whose weights the model kept (``kept_epoch``).
"""

from __future__ import annotations

import math

import numpy as np

#: monitor -> True when larger is better
MONITORS = {"val_loss": False, "val_accuracy": True, "train_loss": False, "train_accuracy": True}

#: an epoch whose mean train loss is above this many times the first epoch's, and above the
#: loss of a uniform guess (ln classes), is flagged in the history's ``warning`` column
EXPLOSION_FACTOR = 10.0


class EarlyStopping:
    """Stop training when ``monitor`` stops improving (see the module docstring)."""

    def __init__(self, patience: int = 5, monitor: str = "val_loss", restore_best: bool = True,
                 min_delta: float = 0.0):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"EarlyStopping: patience must be an int >= 1, got {patience!r}")
        if monitor not in MONITORS:
            raise ValueError(f"EarlyStopping: unknown monitor {monitor!r}; expected one of "
                             f"{', '.join(MONITORS)}")
        if not (isinstance(min_delta, (int, float)) and math.isfinite(min_delta)
                and min_delta >= 0):
            raise ValueError(f"EarlyStopping: min_delta must be a number >= 0, got {min_delta!r}")
        self.patience, self.monitor = patience, monitor
        self.restore_best, self.min_delta = bool(restore_best), float(min_delta)
        self.reset()

    @property
    def needs_validation(self) -> bool:
        return self.monitor.startswith("val_")

    def reset(self) -> None:
        """Forget everything seen (``fit`` calls this when it starts from scratch)."""
        self.best = None             # best monitored value so far
        self.best_epoch = None       # its epoch (1-based, as in the history)
        self.wait = 0                # epochs since the last improvement
        self.stopped_epoch = None    # the epoch after which training stopped, if it did
        self.best_weights = None     # the model's weights at best_epoch (with restore_best)

    def update(self, row: dict, model) -> bool:
        """Take in a finished epoch's history row; True when training should stop now."""
        value = float(row[self.monitor])
        larger = MONITORS[self.monitor]
        improved = self.best is None or (value - self.best > self.min_delta if larger
                                         else self.best - value > self.min_delta)
        if improved:
            self.best, self.best_epoch, self.wait = value, int(row["epoch"]), 0
            if self.restore_best:
                self.best_weights = model.get_weights()
            return False
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = int(row["epoch"])
            return True
        return False

    def finish(self, model) -> None:
        """After a stop: put back the best epoch's weights (with ``restore_best``)."""
        if self.kept_epoch() is not None:
            model.set_weights(self.best_weights)

    def kept_epoch(self) -> int | None:
        """The epoch whose weights a stopped run keeps (its best, with ``restore_best``), or None
        when it keeps its last ones."""
        if self.stopped_epoch is None or not self.restore_best or self.best_weights is None:
            return None
        return self.best_epoch

    # ---- checkpoints -------------------------------------------------------------------------
    def config(self) -> dict:
        return {"patience": self.patience, "monitor": self.monitor,
                "restore_best": self.restore_best, "min_delta": self.min_delta}

    def state_dict(self) -> tuple[dict, dict]:
        """(JSON-able state, arrays): what continues this early stopping exactly."""
        meta = {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                "stopped_epoch": self.stopped_epoch}
        return meta, dict(self.best_weights or {})

    def load_state_dict(self, meta: dict, arrays: dict) -> None:
        self.best, self.best_epoch = meta["best"], meta["best_epoch"]
        self.wait, self.stopped_epoch = int(meta["wait"]), meta["stopped_epoch"]
        self.best_weights = dict(arrays) if arrays else None

    def __repr__(self):
        return (f"EarlyStopping(patience={self.patience}, monitor={self.monitor!r}, "
                f"restore_best={self.restore_best}, min_delta={self.min_delta:g})")


def explosion_warning(loss: float, first_loss: float, classes: int) -> str:
    """The history's warning for an epoch whose mean train loss ``loss`` is more than
    ``EXPLOSION_FACTOR`` times the first epoch's and above a uniform guess's ln(classes);
    "" otherwise."""
    if not (np.isfinite(loss) and np.isfinite(first_loss)) or first_loss <= 0:
        return ""
    if loss > EXPLOSION_FACTOR * first_loss and loss > math.log(max(classes, 2)):
        return (f"loss exploding: {loss:.4g} is {loss / first_loss:.3g}x the first epoch's "
                f"{first_loss:.4g}")
    return ""

"""What keeps ``Sequential.fit`` from ending with NaN or infinite weights, at a small cost.

The guarantee: whenever ``fit`` returns or raises ``TrainingDiverged``, every parameter is finite
and is a value the parameter really had during training:

* a batch whose loss is NaN or infinite makes no update (``train_step`` returns before the
  backward pass), so when its weights are still finite they are kept exactly: the weights from
  before that batch;
* an update that itself made a weight NaN or infinite (an overflow) is caught when the weights
  are next checked: before every ``every``-th batch, when a loss goes non-finite, and at the end
  of every epoch. The model then gets back the last snapshot, the weights checked finite before
  batch ``every * k`` (at most ``every`` batches back), and the error names the span of batches
  in which the weights broke.

The cost: checking finiteness reads each parameter once (no copy, no allocation) and copying a
snapshot reads and writes it, both only every ``every`` batches, where the old scheme copied
every parameter before every batch. The optimizer's own state (momentum, Adam's moments) is not
restored: after ``TrainingDiverged`` start again with a new optimizer.
"""

from __future__ import annotations


class WeightGuard:
    """The snapshots and checks of one ``fit`` call over ``params`` (backend arrays)."""

    def __init__(self, backend, params, every: int):
        self.backend = backend
        self.params = list(params)
        self.every = max(1, int(every))
        self.saved = [backend.zeros(p.shape) for p in self.params]
        self.saved_at = None          # (epoch, batch), 1-based: the snapshot is from before it
        self.steps = 0

    def finite(self) -> bool:
        return all(self.backend.all_finite(p) for p in self.params)

    def before_step(self, epoch: int, batch: int) -> str | None:
        """Call before each training step. Every ``every`` steps: check the weights, then take a
        snapshot. Returns None, or (after restoring the snapshot) why the weights are broken."""
        due = self.steps % self.every == 0
        self.steps += 1
        if not due:
            return None
        if not self.finite():
            return self._restore(f"found before epoch {epoch}, batch {batch}")
        for saved, p in zip(self.saved, self.params):
            self.backend.copy_into(saved, p)
        self.saved_at = (epoch, batch)
        return None

    def after_bad_loss(self, epoch: int, batch: int) -> str:
        """The loss of (epoch, batch) was not finite: keep the weights if they are finite (the
        step made no update), else restore the snapshot. Says which weights the model keeps."""
        if self.finite():
            return "the model keeps its last finite weights, from before that batch"
        return self._restore("found then")

    def end_of_epoch(self, epoch: int, batches: int) -> str | None:
        """Check the weights after an epoch's last update (None when they are finite)."""
        return None if self.finite() else self._restore(f"found at the end of epoch {epoch} "
                                                        f"({batches} batches)")

    def _restore(self, when: str) -> str:
        if self.saved_at is None:
            raise ValueError("fit: the model's weights hold NaN or infinite values before "
                             "training (were they loaded or set that way?)")
        for saved, p in zip(self.saved, self.params):
            self.backend.copy_into(p, saved)
        e, b = self.saved_at
        return (f"an update since epoch {e}, batch {b} made the weights NaN or infinite ({when}); "
                f"the model keeps its last finite weights, from before epoch {e}, batch {b}")

"""Loss functions."""

from __future__ import annotations

import numpy as np

from .backends import Backend, get_backend


def softmax_cross_entropy(logits, labels, backend: str | Backend | None = None,
                          label_smoothing: float = 0.0):
    """Mean softmax cross-entropy of ``logits`` (N, classes) against integer ``labels`` (N,).

    With ``label_smoothing`` = eps in [0, 1] the target of a row is PyTorch's
    (1 - eps) * onehot(label) + eps / classes. Returns ``(mean_loss, dlogits)``; numerically
    stable (log-sum-exp after subtracting each row's maximum). Numpy inputs are moved to
    ``backend`` (default: the default backend).
    """
    label_smoothing = check_label_smoothing(label_smoothing)
    b = get_backend(backend)
    if isinstance(logits, np.ndarray):
        check_logits_and_labels(logits, np.asarray(labels))
        logits = b.from_numpy(logits)
    if isinstance(labels, np.ndarray) or isinstance(labels, (list, tuple)):
        labels = b.labels_from_numpy(np.asarray(labels))
    loss, dlogits, _ = b.softmax_cross_entropy(logits, labels, label_smoothing)
    return loss, dlogits


def check_label_smoothing(value) -> float:
    """``value`` as a float in [0, 1] (the check of ``nbcnn.settings``); an error naming the
    setting and the value otherwise."""
    from .settings import check
    return check("label_smoothing", value)


def check_logits_and_labels(logits: np.ndarray, labels: np.ndarray) -> None:
    """ValueError/TypeError naming what is wrong with a (logits, labels) pair."""
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, classes), got {logits.shape}")
    check_labels(labels, logits.shape[1], n=logits.shape[0])


def check_labels(labels: np.ndarray, num_classes: int, n: int | None = None) -> None:
    """Labels must be a 1-D integer array of class indices in [0, num_classes)."""
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.ndim != 1 or (n is not None and labels.shape[0] != n):
        raise ValueError(f"labels must have shape ({n if n is not None else 'N'},), "
                         f"got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}) for {num_classes} classes, got "
                         f"values from {labels.min()} to {labels.max()}")

"""What every layer shares: building weights from the first input's shape, the backend it runs
on, and numpy access to its parameters and gradients."""

from __future__ import annotations

import numpy as np

from ..backends import Backend, get_backend
from ..init import resolve_init


class Layer:
    """A layer transforms a batch forward and its gradient backward.

    ``params`` and ``grads`` map names to backend arrays (``grads`` is filled by ``backward``);
    ``buffers`` holds state that is saved but not trained (BatchNorm's running statistics).
    A layer used on its own builds itself on the first ``forward`` from the input's shape, on
    ``backend=`` or the default backend, with weights drawn from ``seed``.
    """

    def __init__(self, *, backend: str | Backend | None = None, seed: int | None = None):
        self._backend_choice = backend
        self._seed = seed
        self.backend: Backend | None = None
        self.input_shape: tuple[int, ...] | None = None      # per example, without the batch
        self.params: dict = {}
        self.grads: dict = {}
        self.buffers: dict = {}
        self.training = True
        #: False for a model's first layer: nobody needs the gradient of the input images
        self.need_input_grad = True
        self._cache = None
        self._keeps_numpy = None            # whether the backend's arrays are numpy arrays

    #: True for layers with weights drawn by an ``init`` scheme (Conv2D, Dense)
    weighted = False

    # ---- building -------------------------------------------------------------------------
    def build(self, input_shape, backend: Backend, rng: np.random.Generator, *,
              followed_by: "Layer | None" = None, input_grad: bool = True) -> tuple[int, ...]:
        """Check ``input_shape`` (one example's, no batch axis), create the parameters on
        ``backend`` with draws from ``rng``, and return the output shape.

        ``followed_by``: the first activation or weighted layer this layer's output meets (see
        ``lead`` and ``followers``), None when there is none (a layer on its own, the model's
        last). A weighted layer's ``init="auto"`` is resolved from it, into ``resolved_init``
        (``nbcnn.init.resolve_init``: He before the ReLU family, Glorot otherwise); ``init``,
        and so ``config()`` and ``spec()``, keep what the user wrote.
        ``input_grad``: False when nothing needs the gradient w.r.t. this layer's input (a
        model's first layer): ``backward`` then skips it and returns None
        (``need_input_grad``). ``Sequential`` builds its layers through these two arguments.
        """
        input_shape = tuple(int(s) for s in input_shape)
        out = self.output_shape(input_shape)
        self.input_shape = input_shape
        self.backend = backend
        self._keeps_numpy = None
        self.need_input_grad = bool(input_grad)
        if self.weighted:
            self.resolved_init, self.resolved_slope = resolve_init(self.init, followed_by)
        self.params = {k: backend.from_numpy(v) for k, v in self._initial_params(input_shape, rng).items()}
        self.buffers = {k: backend.from_numpy(v) for k, v in self._initial_buffers(input_shape).items()}
        self.grads = {}
        return out

    @property
    def built(self) -> bool:
        return self.backend is not None

    def lead(self) -> "Layer | None":
        """The activation or weighted layer an input of this layer meets first: the layer
        itself if it is one (a residual block: the first of its paths'), else None (the layers
        after it decide an ``init="auto"`` before it)."""
        return self if self.weighted else None

    def output_shape(self, input_shape) -> tuple[int, ...]:
        """Shape of one example's output (no batch axis); raises ValueError on bad geometry."""
        return tuple(input_shape)

    def _initial_params(self, input_shape, rng) -> dict:
        return {}

    def _initial_buffers(self, input_shape) -> dict:
        return {}

    # ---- running --------------------------------------------------------------------------
    def forward(self, x, training: bool | None = None):
        """Output for the batch ``x`` (a numpy or backend array); remembers what backward needs."""
        if not self.built:
            if not hasattr(x, "shape") or len(x.shape) < 2:
                raise ValueError(f"{self.describe()}: expected a batch with a leading batch axis, "
                                 f"got {type(x).__name__} of shape {getattr(x, 'shape', None)}")
            self.build(x.shape[1:], get_backend(self._backend_choice),
                       np.random.default_rng(0 if self._seed is None else self._seed))
        x = self._on_backend(x)
        self._check_input(x)
        return self._forward(x, self.training if training is None else training)

    def backward(self, dy):
        """Gradient of the loss w.r.t. the input, given the one w.r.t. the output; fills
        ``grads``."""
        if self._cache is None:
            raise RuntimeError(f"{self.describe()}: backward called before forward")
        return self._backward(self._on_backend(dy))

    def _on_backend(self, a):
        """``a`` as an array of this layer's backend. A numpy array is moved there (copied),
        unless the backend keeps its arrays in numpy (numpy, numba) and ``a`` already is one
        (its dtype, C-contiguous): a model passing its arrays from layer to layer copies
        nothing."""
        if not isinstance(a, np.ndarray):
            return a
        if self._keeps_numpy is None:
            self._keeps_numpy = isinstance(self.backend.zeros((1,)), np.ndarray)
        if self._keeps_numpy and a.dtype == self.backend.dtype and a.flags.c_contiguous:
            return a
        return self.backend.from_numpy(a)

    def _check_input(self, x) -> None:
        got = tuple(x.shape[1:])
        if got != self.input_shape:
            raise ValueError(f"{self.describe()}: expected input of shape (N, "
                             f"{', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}")

    def _forward(self, x, training):
        raise NotImplementedError

    def _backward(self, dy):
        raise NotImplementedError

    # ---- numpy access ---------------------------------------------------------------------
    def get_weights(self) -> dict[str, np.ndarray]:
        """Parameters and buffers as numpy arrays (PyTorch's names and shapes)."""
        b = self.backend
        return {k: b.to_numpy(v).copy() for k, v in {**self.params, **self.buffers}.items()}

    def set_weights(self, weights: dict) -> None:
        """Replace parameters/buffers from numpy arrays of the same names and shapes."""
        if not self.built:
            raise RuntimeError(f"{self.describe()}: build the layer (run forward once or put it "
                               "in a Sequential with input_shape) before set_weights")
        own = {**self.params, **self.buffers}
        unknown = set(weights) - set(own)
        if unknown:
            raise ValueError(f"{self.describe()}: unknown weight names {sorted(unknown)}; "
                             f"expected {sorted(own)}")
        for name, value in weights.items():
            value = np.asarray(value)
            if value.shape != tuple(own[name].shape):
                raise ValueError(f"{self.describe()}: weight {name!r} must have shape "
                                 f"{tuple(own[name].shape)}, got {value.shape}")
            target = self.params if name in self.params else self.buffers
            target[name] = self.backend.from_numpy(value)

    def get_grads(self) -> dict[str, np.ndarray]:
        """The last backward's parameter gradients as numpy arrays."""
        return {k: self.backend.to_numpy(v).copy() for k, v in self.grads.items()}

    # ---- description ----------------------------------------------------------------------
    def config(self) -> dict:
        """Constructor arguments, JSON-serialisable (saved inside model files)."""
        return {}

    def spec(self) -> str:
        """This layer in the architecture-string language of ``nbcnn.build``."""
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def followers(layers, after: Layer | None = None) -> list:
    """For each layer of the sequence ``layers``, the ``followed_by`` it is built with: the
    ``lead`` of the first layer after it that has one, else ``after`` (what follows the whole
    sequence; for a residual block's paths, what follows the block)."""
    out, following = [], after
    for layer in reversed(layers):
        out.append(following)
        following = layer.lead() or following
    return out[::-1]

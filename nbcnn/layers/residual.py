"""Residual: a skip connection, y = body(x) + shortcut(x), the block ResNets are made of."""

from __future__ import annotations

from .activations import Activation
from .base import Layer, followers
from .batchnorm import BatchNorm2D
from .conv import Conv2D
from .dense import Dense
from .pool import AvgPool2D, GlobalAvgPool2D, MaxPool2D


class Residual(Layer):
    """y = body(x) + shortcut(x); the shortcut is the identity (y = body(x) + x) when it is None.

    ``body`` and ``shortcut`` are each a layer, a list of layers, or a Sequential-like object
    with a ``layers`` list (an unbuilt ``Sequential``); their layers run one after another.
    Both paths must give outputs of the same shape (a stride-2 body that changes the channels
    needs a projection shortcut, e.g. a 1x1 stride-2 ``Conv2D`` and ``BatchNorm2D``): a
    mismatch is a ValueError naming both shapes when the block is built.

    **Arguments:** ``body``; ``shortcut`` (None: the identity).

    **Shapes:** x (N, *input_shape) -> y (N, *body output shape); dy like y, dx like x.

    **Forward:** y = body(x) + shortcut(x), the paths' layers run one after another.

    **Backward:** both paths receive the output's gradient dy; the block's input gradient is
    the sum of theirs, dx = d(body)/dx . dy + d(shortcut)/dx . dy (dy itself for the identity).
    The sums use the backend's ``add`` op, accumulating in place into an array a path has just
    made when no layer keeps it (**Reference:** ``NumpyBackend.add`` in
    ``nbcnn/backends/numpy_ref.py``; each inner layer names its own).

    The block has no parameters of its own: they live in its inner layers, and
    ``get_weights`` / ``set_weights`` / ``get_grads`` name them as a nested PyTorch
    ``state_dict`` does: ``body.<j>.<name>`` and ``shortcut.<j>.<name>`` (``<j>`` the layer's
    index in its path), nested further for a block inside a block, e.g. ``body.1.body.0.weight``.
    Blocks nest freely; a model gives the inner layers the same treatment as its own (initial
    weights chosen by the activation that follows, training mode, input gradients).
    """

    def __init__(self, body, shortcut=None, **kwargs):
        # the paths exist before Layer.__init__ sets ``training`` / ``need_input_grad``, whose
        # setters pass the value on to them
        self.body = _as_layers(body, "body")
        if not self.body:
            raise ValueError("Residual: the body needs at least one layer")
        self.shortcut = [] if shortcut is None else _as_layers(shortcut, "shortcut")
        super().__init__(**kwargs)

    # ---- structure ------------------------------------------------------------------------
    def named_layers(self) -> list[tuple[str, Layer]]:
        """('body.<j>', layer) for the body's layers, then ('shortcut.<j>', layer)."""
        return ([(f"body.{j}", layer) for j, layer in enumerate(self.body)]
                + [(f"shortcut.{j}", layer) for j, layer in enumerate(self.shortcut)])

    @property
    def training(self) -> bool:
        return self._training

    @training.setter
    def training(self, value: bool) -> None:
        self._training = value
        for _, layer in self.named_layers():
            layer.training = value

    @property
    def need_input_grad(self) -> bool:
        return self._need_input_grad

    @need_input_grad.setter
    def need_input_grad(self, value: bool) -> None:
        """The block's input is each path's input: whether its gradient is needed is passed on
        to the first layer of each path."""
        self._need_input_grad = bool(value)
        for path in (self.body, self.shortcut):
            if path:
                path[0].need_input_grad = bool(value)

    def output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        body = _path_shape(self.body, input_shape)
        short = _path_shape(self.shortcut, input_shape)
        if body != short:
            via = "the shortcut gives" if self.shortcut else "the identity shortcut passes on"
            raise ValueError(f"{self.describe()}: the body gives {_fmt_shape(body)} but {via} "
                             f"{_fmt_shape(short)} for the input {_fmt_shape(input_shape)}; "
                             "they must have the same shape to be added (give a shortcut that "
                             "maps the input to the body's shape, e.g. a strided 1x1 conv)")
        return body

    def build(self, input_shape, backend, rng, *, followed_by=None, input_grad=True):
        """Check that both paths agree, then build the body's layers and the shortcut's, in
        that order, from ``rng``, as ``Layer.build`` says: each inner layer is built with the
        ``followed_by`` of its place in its path (``followers``), the last ones with the
        block's own (the add passes their output on to what follows the block); ``input_grad``
        goes to the first layer of each path (``need_input_grad``)."""
        input_shape = tuple(int(s) for s in input_shape)
        out = self.output_shape(input_shape)
        for path in (self.body, self.shortcut):
            shape = input_shape
            for layer, after in zip(path, followers(path, followed_by)):
                shape = layer.build(shape, backend, rng, followed_by=after)
        self.input_shape = input_shape
        self.backend = backend
        self._keeps_numpy = None
        self.need_input_grad = input_grad
        self.params, self.buffers, self.grads = {}, {}, {}
        return out

    def lead(self):
        """The first activation or weighted layer of the body, else of the shortcut."""
        return next((lead for lead in (layer.lead() for layer in self.body + self.shortcut)
                     if lead is not None), None)

    # ---- running --------------------------------------------------------------------------
    def _forward(self, x, training):
        h = x
        for layer in self.body:
            h = layer.forward(h, training)
        s = x
        for layer in self.shortcut:
            s = layer.forward(s, training)
        self._cache = tuple(x.shape)
        return self.backend.add(h, s, out=_owned(h, s, self.body, self.shortcut, _NEW_OUTPUT))

    def _backward(self, dy):
        g = dy
        for layer in reversed(self.body):
            g = layer.backward(g)
        s = dy
        for layer in reversed(self.shortcut):
            s = layer.backward(s)
        if not self.need_input_grad:       # the paths' parameter gradients are all that counts
            return None
        return self.backend.add(g, s, out=_owned(g, s, self.body, self.shortcut, _NEW_INPUT_GRAD,
                                                 first=True))

    # ---- numpy access ---------------------------------------------------------------------
    def get_weights(self):
        return {f"{prefix}.{k}": v for prefix, layer in self.named_layers()
                for k, v in layer.get_weights().items()}

    def get_grads(self):
        return {f"{prefix}.{k}": v for prefix, layer in self.named_layers()
                for k, v in layer.get_grads().items()}

    def set_weights(self, weights: dict) -> None:
        """Replace inner layers' parameters/buffers from numpy arrays keyed as ``get_weights``
        names them (``body.0.weight``, ...)."""
        if not self.built:
            raise RuntimeError(f"{self.describe()}: build the block (run forward once or put it "
                               "in a Sequential with input_shape) before set_weights")
        inner = dict(self.named_layers())
        per_layer: dict[str, dict] = {}
        for key, value in weights.items():
            path, _, rest = key.partition(".")
            j, _, name = rest.partition(".")
            prefix = f"{path}.{j}"
            if prefix not in inner or not name:
                raise ValueError(f"{self.describe()}: unknown weight name {key!r}; expected "
                                 f"{sorted(self.get_weights())}")
            per_layer.setdefault(prefix, {})[name] = value
        for prefix, w in per_layer.items():
            inner[prefix].set_weights(w)

    # ---- description ----------------------------------------------------------------------
    def config(self):
        return {"body": [_entry(layer) for layer in self.body],
                "shortcut": [_entry(layer) for layer in self.shortcut]}

    def spec(self):
        body = "-".join(layer.spec() for layer in self.body)
        if not self.shortcut:
            return f"residual({body})"
        return f"residual({body},{'-'.join(layer.spec() for layer in self.shortcut)})"

    def __repr__(self):
        short = "None" if not self.shortcut else repr(self.shortcut)
        return f"Residual(body={self.body!r}, shortcut={short})"


#: layers whose forward returns a new array that they do not keep (a block may add into it)
_NEW_OUTPUT = (Conv2D, Dense, BatchNorm2D, MaxPool2D, AvgPool2D, GlobalAvgPool2D, Residual)
#: layers whose backward returns a new input gradient that they do not keep
_NEW_INPUT_GRAD = (Conv2D, Dense, BatchNorm2D, MaxPool2D, AvgPool2D, Activation, Residual)


def _owned(a, b, body, shortcut, fresh_types, first=False):
    """The one of ``a`` (the body's result) and ``b`` (the shortcut's) that may take the sum in
    place: an array the path's end layer (its first layer for a gradient) has just made and
    does not keep. None (a new array) when neither is, e.g. for an identity shortcut (``b`` is
    the block's own input or output gradient) after a body ending in an activation, which keeps
    its output for backward."""
    for result, path in ((a, body), (b, shortcut)):
        if path and isinstance(path[0 if first else -1], fresh_types):
            return result
    return None


def _as_layers(value, what: str) -> list[Layer]:
    if isinstance(value, Layer):
        return [value]
    if not isinstance(value, (list, tuple)) and isinstance(getattr(value, "layers", None), list):
        value = value.layers                        # a Sequential-like block
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"Residual: {what} must be a layer, a list of layers or a Sequential, "
                        f"got {type(value).__name__}")
    for j, layer in enumerate(value):
        if not isinstance(layer, Layer):
            raise TypeError(f"Residual: {what} item {j} is {type(layer).__name__}, not a layer")
    return list(value)


def _path_shape(path, shape):
    for layer in path:
        shape = layer.output_shape(shape)
    return tuple(shape)


def _fmt_shape(shape) -> str:
    return "(N, " + ", ".join(map(str, shape)) + ")"


def _entry(layer: Layer) -> dict:
    return {"type": type(layer).__name__, "config": layer.config()}

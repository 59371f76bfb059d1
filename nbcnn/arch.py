"""Architecture strings and named presets.

An architecture is written as layers joined by ``-``, each a name with optional arguments::

    conv(8,3,same)-relu-maxpool(2)-flatten-dense(10)
    conv(1,2,stride=3)-flatten-dense(30)-leaky_relu-dense(20)-leaky_relu(0.1)-dense(10)

A pair is written with a colon, e.g. ``conv(16,(3:5))``, and so is a 4-tuple padding
(top:bottom:left:right); keyword arguments follow the positional ones::

    conv(16,3,same,dilation=2,groups=4)-relu-conv(16,3,(1:2:0:1),dilation=(2:1))
"""

from __future__ import annotations

import re

from . import layers as L
from .backends import Backend
from .model import Sequential

PRESETS = {
    "mnist-simple": "conv(8,3,same)-relu-maxpool(2)-flatten-dense(10)",
    "mnist-complex": ("conv(32,3,same)-relu-conv(32,3,same)-relu-maxpool(2)-conv(64,3,same)-relu-"
                      "conv(64,3,same)-relu-maxpool(2)-flatten-dense(128)-relu-dense(10)"),
    "mnist-tiny": "conv(8,3)-maxpool(2)-flatten-dense(10)",
    "mnist-strided": "conv(1,2,stride=3)-flatten-dense(30)-leaky_relu-dense(20)-leaky_relu-dense(10)",
    "lenet5": ("conv(6,5,same)-relu-maxpool(2)-conv(16,5)-relu-maxpool(2)-flatten-dense(120)-relu-"
               "dense(84)-relu-dense(10)"),
    # LeNet-5 closer to LeCun et al. 1998: tanh units and 2 x 2 average subsampling (the
    # original's subsampling also has a trainable coefficient and bias per map, its tanh is
    # scaled, 1.7159 tanh(2x/3), its C3 connects each map to only some of S2's, and its outputs
    # are RBF units; those are not here)
    "lenet5-tanh": ("conv(6,5,same)-tanh-avgpool(2)-conv(16,5)-tanh-avgpool(2)-flatten-"
                    "dense(120)-tanh-dense(84)-tanh-dense(10)"),
    "cifar-small": ("conv(32,3,same)-relu-maxpool(2)-conv(64,3,same)-relu-maxpool(2)-flatten-"
                    "dense(128)-relu-dense(10)"),
    # depthwise-separable (MobileNet-style) blocks: a depthwise 3x3 (groups == channels) and a
    # pointwise 1x1, each followed by batch norm and ReLU; 28x28 or 32x32 inputs end at 4x4
    "mobilenet-small": ("conv(16,3,same,bias=false)-batchnorm-relu-"
                        "conv(16,3,same,groups=16,bias=false)-batchnorm-relu-"
                        "conv(32,1,bias=false)-batchnorm-relu-"
                        "conv(32,3,same,stride=2,groups=32,bias=false)-batchnorm-relu-"
                        "conv(64,1,bias=false)-batchnorm-relu-"
                        "conv(64,3,same,stride=2,groups=64,bias=false)-batchnorm-relu-"
                        "conv(128,1,bias=false)-batchnorm-relu-"
                        "conv(128,3,same,stride=2,groups=128,bias=false)-batchnorm-relu-"
                        "conv(128,1,bias=false)-batchnorm-relu-flatten-dense(10)"),
    # The two 2-conv nets of the Fashion-MNIST benchmark table (github.com/zalandoresearch/
    # fashion-mnist, README, "Benchmark": submitted results, not checked by Zalando). Both
    # differ from ours in their initial weights (Glorot uniform, the Keras and tf.layers
    # default, where ours are He before ReLU) and in their inputs' scale (noted below).
    # "2 Conv+pooling", 0.916 test, submitted as "Tensorflow's doc", code benchmark/convnet.py
    # there: conv 5x5 32 'same' + ReLU, max pool 2, conv 5x5 64 'same' + ReLU, max pool 2, dense
    # 1024 + ReLU, dropout 0.4, dense 10 (3,274,634 parameters). Layer for layer the same here.
    # Its training (plain SGD, lr 0.001, batch 400, 100 x 2000 steps = 1333 epochs, the 10000
    # test images evaluated every 2000 steps, which of those evaluations gave 0.916 not said)
    # is not the one our study uses: see experiments/fashion_mnist_benchmark.toml. Inputs in
    # [0, 1], as ours.
    "fmnist-2conv": ("conv(32,5,same)-relu-maxpool(2)-conv(64,5,same)-relu-maxpool(2)-flatten-"
                     "dense(1024)-relu-dropout(0.4)-dense(10)"),
    # "2 Conv+pooling+BN", 0.934 test, by @khanguyen1207 (github.com/khanguyen1207/
    # My-Machine-Learning-Corner, "Zalando MNIST/fashion.ipynb", Keras): despite its name it has
    # four convolutions in two conv-conv-pool blocks: conv 5x5 32 'same' + ReLU twice, max pool 2,
    # dropout 0.25; conv 3x3 64 'same' + ReLU twice, max pool 2, dropout 0.25; dense 512 + ReLU,
    # batch norm over the 512 units, dropout 0.5, dense 10 (1,694,186 trainable parameters, as its
    # Keras summary says). Layer for layer the same here, Keras's BatchNormalization defaults
    # included (momentum 0.99, eps 1e-3: batchnorm(0.01,0.001) in PyTorch's convention, which
    # ours follows). Its training: RMSprop lr 0.001, rho 0.9, batch 512, 40 epochs,
    # and the learning rate halved by ReduceLROnPlateau on the accuracy of the TEST set (its
    # "validation_data"), which happened after epochs 15, 25 and 35; 0.934 is that run's test
    # accuracy (0.9333 at epoch 40, best 0.9348), inputs scaled to [0, 1/32]. See
    # experiments/fashion_mnist_benchmark.toml for the fixed schedule we use instead.
    "fmnist-2conv-bn": ("conv(32,5,same)-relu-conv(32,5,same)-relu-maxpool(2)-dropout(0.25)-"
                        "conv(64,3,same)-relu-conv(64,3,same)-relu-maxpool(2)-dropout(0.25)-"
                        "flatten-dense(512)-relu-batchnorm(0.01,0.001)-dropout(0.5)-dense(10)"),
}

#: spec name -> (layer class, positional argument names)
LAYER_NAMES = {
    "conv": (L.Conv2D, ("filters", "kernel_size", "padding")),
    "maxpool": (L.MaxPool2D, ("pool_size", "stride")),
    "avgpool": (L.AvgPool2D, ("pool_size", "stride")),
    "globalavgpool": (L.GlobalAvgPool2D, ()),
    "dense": (L.Dense, ("units",)),
    "relu": (L.ReLU, ()),
    "leaky_relu": (L.LeakyReLU, ("alpha",)),
    "sigmoid": (L.Sigmoid, ()),
    "tanh": (L.Tanh, ()),
    "flatten": (L.Flatten, ()),
    "dropout": (L.Dropout, ("p",)),
    "batchnorm": (L.BatchNorm2D, ("momentum", "eps")),
    "residual": (L.Residual, ("body", "shortcut")),    # arguments: architecture strings
}
_ALIASES = {"conv2d": "conv", "bn": "batchnorm", "linear": "dense", "fc": "dense",
            "leakyrelu": "leaky_relu", "maxpool2d": "maxpool", "avgpool2d": "avgpool",
            "gap": "globalavgpool"}
_TOKEN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$")


def resolve(arch: str) -> str:
    """A preset's architecture string, or ``arch`` itself when it is not a preset name."""
    return PRESETS.get(arch.strip().lower(), arch)


def parse(arch: str) -> list[L.Layer]:
    """New (unbuilt) layers for an architecture string or preset name.

    A residual block takes architecture strings as its arguments: its body and, optionally,
    its shortcut (the identity when left out); blocks nest::

        residual(conv(16,3,same)-batchnorm-relu-conv(16,3,same)-batchnorm)-relu
        residual(conv(32,3,1,stride=2)-batchnorm-relu-conv(32,3,same)-batchnorm, conv(32,1,stride=2)-batchnorm)

    A malformed string is a ValueError naming the character offset where it goes wrong
    (unbalanced parentheses, an empty layer, body or shortcut, a third argument).
    """
    if not isinstance(arch, str) or not arch.strip():
        raise ValueError(f"architecture must be a non-empty string, got {arch!r}")
    spec = resolve(arch)
    return _sequence(spec, 0, len(spec), _parentheses(spec))


def build(arch: str, input_shape, backend: str | Backend | None = None, seed: int = 0) -> Sequential:
    """A built Sequential from an architecture string or preset name."""
    return Sequential(*parse(arch), input_shape=input_shape, backend=backend, seed=seed)


def _parentheses(spec: str) -> dict[int, int]:
    """The offset of the ')' that closes each '(', by the offset of the '('; a ValueError
    naming the offset of the first parenthesis that has no partner."""
    opened, closing = [], {}
    for k, ch in enumerate(spec):
        if ch == "(":
            opened.append(k)
        elif ch == ")":
            if not opened:
                raise ValueError(f"architecture {spec!r}: unbalanced ')' at offset {k}")
            closing[opened.pop()] = k
    if opened:
        raise ValueError(f"architecture {spec!r}: unbalanced '(' at offset {opened[-1]} "
                         "(never closed)")
    return closing


def _split(spec: str, start: int, end: int, sep: str) -> list[tuple[int, int]]:
    """(start, end) offsets of the parts of spec[start:end] between ``sep`` characters outside
    parentheses (so the '-' of negative numbers and the ',' of arguments stay inside their
    layer, and a residual block's inner strings inside the block)."""
    parts, depth, begin = [], 0, start
    for k in range(start, end):
        ch = spec[k]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append((begin, k))
            begin = k + 1
    parts.append((begin, end))
    return parts


def _sequence(spec: str, start: int, end: int, closing: dict) -> list[L.Layer]:
    """The layers of spec[start:end], layers joined by '-'."""
    layers = []
    for a, b in _split(spec, start, end, "-"):
        if not spec[a:b].strip():
            raise ValueError(f"architecture {spec!r}: empty layer at offset {a} (two '-' in a "
                             "row, or a '-' at an end)")
        layers.append(_block_or_layer(spec, a, b, closing))
    return layers


_BLOCK = re.compile(r"\s*residual\b\s*(\()?", re.IGNORECASE)


def _block_or_layer(spec: str, start: int, end: int, closing: dict) -> L.Layer:
    """A residual block for spec[start:end] = 'residual(BODY[, SHORTCUT])', else one layer."""
    match = _BLOCK.match(spec, start, end)
    if not match:
        try:
            return _layer(spec[start:end], spec)
        except ValueError as exc:
            raise ValueError(f"{exc} (the layer at offset {start})") from None
    if not match.group(1):
        raise ValueError(f"architecture {spec!r}: residual at offset {start} needs its layers: "
                         "residual(BODY) or residual(BODY,SHORTCUT)")
    opening = match.end() - 1
    close = closing[opening]
    if spec[close + 1:end].strip():
        raise ValueError(f"architecture {spec!r}: unexpected text after residual(...) at offset "
                         f"{close + 1} (join layers with '-')")
    parts = _split(spec, opening + 1, close, ",")
    if len(parts) > 2:
        raise ValueError(f"architecture {spec!r}: residual at offset {start} takes a body and at "
                         f"most one shortcut, but a third argument starts at offset {parts[2][0]}")
    for (a, b), role in zip(parts, ("body", "shortcut")):
        if not spec[a:b].strip():
            hint = " (a trailing ',': leave the shortcut out for the identity)" \
                if role == "shortcut" else ""
            raise ValueError(f"architecture {spec!r}: empty {role} of the residual at offset "
                             f"{start}, at offset {a}{hint}")
    body = _sequence(spec, *parts[0], closing)
    shortcut = _sequence(spec, *parts[1], closing) if len(parts) == 2 else None
    return L.Residual(body, shortcut)


def _layer(token: str, spec: str) -> L.Layer:
    match = _TOKEN.match(token)
    if not match:
        raise ValueError(f"architecture {spec!r}: cannot read layer {token.strip()!r}; "
                         "expected name or name(args)")
    name = match.group(1).lower()
    name = _ALIASES.get(name, name)
    if name not in LAYER_NAMES:
        raise ValueError(f"architecture {spec!r}: unknown layer {match.group(1)!r}; known layers: "
                         f"{', '.join(LAYER_NAMES)}")
    cls, positional = LAYER_NAMES[name]
    args, kwargs = _arguments(match.group(2) or "", token, spec)
    if len(args) > len(positional):
        raise ValueError(f"architecture {spec!r}: {name} takes at most {len(positional)} "
                         f"positional arguments ({', '.join(positional) or 'none'}), got {token.strip()!r}")
    kwargs.update(zip(positional, args))
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"architecture {spec!r}: bad arguments in {token.strip()!r}: {exc}") from None


def _arguments(text: str, token: str, spec: str):
    args, kwargs = [], {}
    for raw in filter(None, (a.strip() for a in text.split(","))):
        key, eq, value = raw.partition("=")
        if eq:
            kwargs[key.strip()] = _value(value.strip())
        elif kwargs:
            raise ValueError(f"architecture {spec!r}: positional argument after a keyword in "
                             f"{token.strip()!r}")
        else:
            args.append(_value(raw))
    return args, kwargs


def _value(text: str):
    """'3' -> 3, '0.5' -> 0.5, 'true' -> True, '(3:5)' -> (3, 5), 'same' -> 'same'."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if text.startswith("(") and text.endswith(")"):
        return tuple(_value(v.strip()) for v in text[1:-1].split(":"))
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return low


def _cifar_resnet(blocks: int) -> str:
    """He et al. 2016's CIFAR ResNet-(6*blocks+2) (section 4.2): a 3x3 conv with 16 filters,
    batch norm and ReLU; three stages of ``blocks`` basic blocks (conv3x3-BN-ReLU-conv3x3-BN plus
    the shortcut, then ReLU) with 16, 32 and 64 channels, the first block of stages 2 and 3
    halving the maps with stride 2; global average pooling and dense(10). Convolutions carry no
    bias (batch norm's shift replaces it) and pad by 1, as the paper's. Where the shape changes
    the shortcut is a projection (1x1 stride-2 conv + BN, the paper's option B); the paper's
    CIFAR nets use option A there instead (parameter-free zero-padded identity shortcuts), so
    ours have 2,752 parameters more: 272,474 for ResNet-20 against its 269,722 ("0.27M")."""
    def block(c, stride=1):
        first = f"conv({c},3,1,stride=2,bias=false)" if stride == 2 else f"conv({c},3,1,bias=false)"
        body = f"{first}-batchnorm-relu-conv({c},3,1,bias=false)-batchnorm"
        shortcut = f",conv({c},1,stride=2,bias=false)-batchnorm" if stride == 2 else ""
        return f"residual({body}{shortcut})-relu"
    stages = [block(c, 2 if c > 16 and i == 0 else 1) for c in (16, 32, 64) for i in range(blocks)]
    return "-".join(["conv(16,3,1,bias=false)-batchnorm-relu", *stages, "globalavgpool-dense(10)"])


PRESETS["cifar-resnet20"] = _cifar_resnet(3)
PRESETS["cifar-resnet8"] = _cifar_resnet(1)          # the same with one block per stage: 78,042

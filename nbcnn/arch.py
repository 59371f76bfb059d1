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
}
_ALIASES = {"conv2d": "conv", "bn": "batchnorm", "linear": "dense", "fc": "dense",
            "leakyrelu": "leaky_relu", "maxpool2d": "maxpool", "avgpool2d": "avgpool",
            "gap": "globalavgpool"}
_TOKEN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$")


def resolve(arch: str) -> str:
    """A preset's architecture string, or ``arch`` itself when it is not a preset name."""
    return PRESETS.get(arch.strip().lower(), arch)


def parse(arch: str) -> list[L.Layer]:
    """New (unbuilt) layers for an architecture string or preset name."""
    if not isinstance(arch, str) or not arch.strip():
        raise ValueError(f"architecture must be a non-empty string, got {arch!r}")
    return [_layer(token, arch) for token in _split(resolve(arch))]


def build(arch: str, input_shape, backend: str | Backend | None = None, seed: int = 0) -> Sequential:
    """A built Sequential from an architecture string or preset name."""
    return Sequential(*parse(arch), input_shape=input_shape, backend=backend, seed=seed)


def _split(spec: str) -> list[str]:
    """Split on '-' outside parentheses (so negative numbers inside arguments survive)."""
    parts, depth, current = [], 0, ""
    for ch in spec:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"architecture {spec!r}: unbalanced ')'")
        if ch == "-" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if depth:
        raise ValueError(f"architecture {spec!r}: unbalanced '('")
    parts.append(current)
    if any(not p.strip() for p in parts):
        raise ValueError(f"architecture {spec!r}: empty layer (two '-' in a row, or a '-' at an end)")
    return parts


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

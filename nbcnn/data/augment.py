"""Data augmentation applied to each training batch on the fly: random crops, flips, shifts.

``Augment(crop=4, flip=True, translate=0)`` or the string ``"crop:4,flip"`` (also
``"translate:2"``, ``"none"``):

* ``crop=p``: zero-pad every image by ``p`` pixels on each side and cut a random window of the
  original size out of it; the same as shifting the image by (dy, dx), each drawn uniformly from
  -p..p, with zeros shifted in.
* ``flip``: mirror left-right with probability 1/2.
* ``translate=t``: shift by up to ``t`` pixels in each direction (zeros shifted in), after the
  crop when both are given.

The random numbers (one shift and one flip per image) are drawn on the host, once per epoch, from
a generator seeded by the model's seed and the epoch (``epoch_generator``), in the order the
epoch visits the images; the backend op ``augment(x, dy, dx, flip)`` then moves the pixels. So a
given seed sees the same augmented batches on every backend, and an interrupted run resumed at
epoch k draws what it would have drawn. Validation and evaluation never augment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def epoch_generator(seed: int, epoch: int) -> np.random.Generator:
    """The generator of epoch ``epoch``'s augmentation draws for a model seeded ``seed``: child 2
    of the model's ``SeedSequence`` (children 0 and 1 draw the weights and the shuffling), then
    grandchild ``epoch``."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(2, int(epoch))))


@dataclass(frozen=True)
class Augment:
    """Random crop after zero padding (``crop`` pixels), horizontal flip, random translation by
    up to ``translate`` pixels. See the module docstring."""

    crop: int = 0
    flip: bool = False
    translate: int = 0

    def __post_init__(self):
        for name in ("crop", "translate"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"Augment: {name} must be a whole number of pixels >= 0, "
                                 f"got {v!r}")
            object.__setattr__(self, name, int(v))
        if not isinstance(self.flip, (bool, np.bool_)):
            raise ValueError(f"Augment: flip must be True or False, got {self.flip!r}")
        object.__setattr__(self, "flip", bool(self.flip))

    @classmethod
    def parse(cls, text: str) -> "Augment":
        """``"crop:4,flip"``, ``"translate:2"``, ``"flip"``, ``"none"``; parts joined by commas."""
        kwargs: dict = {}
        for part in str(text).lower().replace(" ", "").split(","):
            if part in ("", "none"):
                continue
            name, colon, arg = part.partition(":")
            if name in kwargs:
                raise ValueError(f"augment {text!r}: {name} given twice")
            if name == "flip":
                if colon:
                    raise ValueError(f"augment {text!r}: flip takes no argument, got {part!r}")
                kwargs["flip"] = True
            elif name in ("crop", "translate"):
                if not arg.isdigit():
                    raise ValueError(f"augment {text!r}: {name} needs a whole number of pixels, "
                                     f"e.g. {name}:4, got {part!r}")
                kwargs[name] = int(arg)
            else:
                raise ValueError(f"augment {text!r}: unknown part {part!r}; expected crop:P, "
                                 "flip, translate:T or none, joined by commas")
        return cls(**kwargs)

    @property
    def active(self) -> bool:
        return bool(self.crop or self.flip or self.translate)

    def spec(self) -> str:
        """The string form ``parse`` reads back (``"none"`` when nothing is on)."""
        parts = ([f"crop:{self.crop}"] if self.crop else []) + (["flip"] if self.flip else []) \
            + ([f"translate:{self.translate}"] if self.translate else [])
        return ",".join(parts) or "none"

    def draw(self, rng: np.random.Generator, n: int) -> list[tuple]:
        """The random numbers for ``n`` images: one (dy, dx, flip) int32 triple of arrays per
        pass of the ``augment`` op (the crop, then the translation; the flip rides on the first)."""
        shifts = [s for s in (self.crop, self.translate) if s] or [0]
        flips = (rng.random(n) < 0.5).astype(np.int32) if self.flip else np.zeros(n, np.int32)
        passes = []
        for k, s in enumerate(shifts):
            dy = rng.integers(-s, s + 1, size=n).astype(np.int32)
            dx = rng.integers(-s, s + 1, size=n).astype(np.int32)
            passes.append((dy, dx, flips if k == 0 else np.zeros(n, np.int32)))
        return passes

    def apply(self, backend, x, passes, rows: slice):
        """``x`` (a backend batch) moved by the draws ``passes`` (from ``draw``) of ``rows``."""
        for dy, dx, flip in passes:
            x = backend.augment(x, dy[rows], dx[rows], flip[rows])
        return x

    def __str__(self):
        return self.spec()


def make_augment(value) -> Augment | None:
    """None for no augmentation; an ``Augment`` from an ``Augment``, a string or None."""
    if value is None:
        return None
    if isinstance(value, str):
        value = Augment.parse(value)
    if not isinstance(value, Augment):
        raise TypeError(f"augment must be an Augment, a string such as 'crop:4,flip' or None, "
                        f"got {type(value).__name__}")
    return value if value.active else None

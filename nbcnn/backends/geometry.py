"""The shape of one 2-D convolution, computed and checked once: ``ConvGeometry``.

Every backend's host code and the OpenCL tuner describe a convolution with it instead of long
tuples of sizes; the output size is worked out here only (``conv_output_size``, also the
pooling's floor-mode size).
"""

from __future__ import annotations

from dataclasses import dataclass


def conv_output_size(size: int, k: int, stride: int, pad_before: int, pad_after: int) -> int:
    """Output length of a convolution or pooling along one axis."""
    return (size + pad_before + pad_after - k) // stride + 1


@dataclass(frozen=True)
class ConvGeometry:
    """x (N, C, H, W) convolved with w (O, C/groups, KH, KW) at ``stride`` (SH, SW), zero
    padding (PT, PB, PL, PR) = (top, bottom, left, right) and ``dilation`` (DH, DW), giving
    y (N, O, OH, OW)."""

    n: int
    c: int
    h: int
    w: int
    o: int
    kh: int
    kw: int
    sh: int = 1
    sw: int = 1
    pt: int = 0
    pb: int = 0
    pl: int = 0
    pr: int = 0
    dh: int = 1
    dw: int = 1
    groups: int = 1

    @classmethod
    def of(cls, x_shape, w_shape, stride, padding, dilation=(1, 1), groups=1) -> "ConvGeometry":
        """The geometry of conv2d(x, w); ValueError naming the sizes when they do not fit."""
        n, c, h, w = (int(s) for s in x_shape)
        o, cg, kh, kw = (int(s) for s in w_shape)
        if groups == 1 and c != cg:
            raise ValueError(f"conv2d: input has {c} channels but the weight expects {cg}")
        if c != cg * groups or o % groups:
            raise ValueError(f"conv2d: input has {c} channels and the weight {o} filters of {cg} "
                             f"channels, which does not fit groups={groups} "
                             f"(expected {groups} * {cg} channels)")
        geo = cls(n, c, h, w, o, kh, kw, *(int(s) for s in stride), *(int(p) for p in padding),
                  *(int(d) for d in dilation), int(groups))
        if geo.oh <= 0 or geo.ow <= 0:
            raise ValueError(f"conv2d: kernel {kh}x{kw} does not fit input {h}x{w} with padding "
                             f"{tuple(padding)}")
        return geo

    @property
    def oh(self) -> int:
        return conv_output_size(self.h, (self.kh - 1) * self.dh + 1, self.sh, self.pt, self.pb)

    @property
    def ow(self) -> int:
        return conv_output_size(self.w, (self.kw - 1) * self.dw + 1, self.sw, self.pl, self.pr)

    @property
    def x_shape(self) -> tuple:
        return (self.n, self.c, self.h, self.w)

    @property
    def y_shape(self) -> tuple:
        return (self.n, self.o, self.oh, self.ow)

    @property
    def plain(self) -> bool:
        """No groups and no dilation: the backends' plain convolution kernels apply."""
        return self.groups == 1 and self.dh == 1 and self.dw == 1

    @property
    def multiply_adds(self) -> int:
        return self.n * self.o * (self.c // self.groups) * self.kh * self.kw * self.oh * self.ow

    def transposed(self) -> "ConvGeometry | None":
        """For stride 1: the geometry of the input gradient as a forward convolution of dy with
        the flipped kernel (dy padded by the span - 1 - padding, in and out channels swapped),
        or None where that padding would be negative or the stride is not 1."""
        span_h, span_w = (self.kh - 1) * self.dh + 1, (self.kw - 1) * self.dw + 1
        pads = (span_h - 1 - self.pt, span_h - 1 - self.pb, span_w - 1 - self.pl,
                span_w - 1 - self.pr)
        if self.sh != 1 or self.sw != 1 or min(pads) < 0:
            return None
        return ConvGeometry(self.n, self.o, self.oh, self.ow, self.c, self.kh, self.kw, 1, 1,
                            *pads, self.dh, self.dw, self.groups)

    def key(self) -> str:
        """The sizes a kernel's speed depends on, as the tuner's cache names them."""
        return ",".join(map(str, (self.n, self.c, self.h, self.w, self.o, self.kh, self.kw,
                                  self.sh, self.sw, self.groups)))

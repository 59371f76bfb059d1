"""``OpenCLBackend``: the op contract (nbcnn/backends/base.py) on pyopencl arrays.

One context and one in-order queue per backend. Every op enqueues kernels from ``kernels/*.cl``
and returns at once; nothing comes back to the host until ``to_numpy``, ``all_finite`` or the
loss (which reads two numbers: the batch's mean loss and its correct count). Arrays come from a
``pyopencl.tools.MemoryPool``, so the buffers of a training step are allocated on the first step
and reused by the following ones.
"""

from __future__ import annotations

import copy
import threading

import numpy as np

from ..base import Backend, _lowbias32, pool_geometry, pool_is_plain
from ..geometry import ConvGeometry
from .device import device_id, select_device
from .errors import INSTALL_HINT, OpenCLUnavailableError
from .program import ProgramCache
from . import tune

_ACTIVATIONS = {"relu": 0, "leaky_relu": 1, "sigmoid": 2, "tanh": 3}

#: the attributes of a pyopencl Array (pyopencl 2024-2026) that ``_empty`` copies from a template
_ARRAY_FIELDS = {"_flags", "allocator", "base_data", "context", "dtype", "events", "nbytes",
                 "offset", "queue", "shape", "size", "strides"}

#: build options per kernel file. Fast-math only where the kernels do plain multiply-adds and
#: comparisons (results stay within float32 rounding of numpy_ref); the files with exp, log,
#: sqrt or a NaN/infinity test are built IEEE-exact. Not -cl-fast-relaxed-math: it implies
#: -cl-finite-math-only, under which the compiler may drop a NaN (max pooling must keep it).
_FAST = ("-cl-unsafe-math-optimizations",)
_OPTIONS = {
    "conv": _FAST, "dense": _FAST, "pool": _FAST,
    "activations": (), "loss": (), "dropout": (), "batchnorm": (), "optim": (), "reduce": (),
    "augment": (), "elementwise": (),
}


def _floor_pow2(v: int) -> int:
    return 1 << (max(1, int(v)).bit_length() - 1)


def _round_up(v: int, m: int) -> int:
    return ((v + m - 1) // m) * m


class OpenCLBackend(Backend):
    """The op contract on one OpenCL device (see module docstring).

    ``OpenCLBackend()`` takes ``$NBCNN_OPENCL_DEVICE`` if set, else the first GPU of any platform,
    else the first CPU device; ``OpenCLBackend("P:D")`` takes device D of platform P.
    """

    name = "opencl"
    dtype = np.dtype(np.float32)

    def __init__(self, device: str | None = None, autotune: bool | None = None):
        import pyopencl as cl
        import pyopencl.array as cl_array
        import pyopencl.tools as cl_tools

        self._cl, self._cl_array = cl, cl_array
        self.device = select_device(device)
        try:
            self.context = cl.Context([self.device])
            self.queue = cl.CommandQueue(self.context)          # in-order
        except cl.Error as exc:
            raise OpenCLUnavailableError(
                f"cannot open OpenCL device {self.device.name.strip()!r}: {exc}. " + INSTALL_HINT) from exc
        self.device_id = device_id(self.device)
        self.allocator = cl_tools.MemoryPool(cl_tools.ImmediateAllocator(self.queue))
        self.programs = ProgramCache(self.context)
        self._kernels = {}                  # (file, kernel, defines) -> kernel, skips the options
        self._typed = set()                 # kernels whose scalar argument types are set
        self._scratch_arrays = threading.local()
        self._templates = {}                # (shape, dtype) -> metadata of an array (_empty)
        # pyopencl kernels hold their arguments: one launch at a time per backend
        self._lock = threading.RLock()

        is_gpu = bool(self.device.type & cl.device_type.GPU)
        self.is_gpu = is_gpu
        max_wg = int(self.device.max_work_group_size)
        cu = int(self.device.max_compute_units)
        #: work-group size of the reduction kernels
        self.reduce_ls = min(256 if is_gpu else 64, _floor_pow2(max_wg))
        #: enough work-items to keep the device busy (used to split conv's weight gradient)
        self.target_items = cu * (2048 if is_gpu else 32)
        #: blocking factors: conv channels per work-item, matmul tiles (auto-tuned when enabled)
        self.tuning = tune.Tuner(self, enabled=autotune)
        self._dummy = cl_array.zeros(self.queue, (1,), np.float32)
        self._flag = cl_array.zeros(self.queue, (1,), np.int32)

    # ---- programs -------------------------------------------------------------------------
    def _kernel(self, file: str, kernel: str, defines: dict | None = None):
        key = (file, kernel, tuple(sorted(defines.items())) if defines else None)
        k = self._kernels.get(key)
        if k is None:
            k = self._kernels[key] = self.programs.get(file, defines, _OPTIONS[file]).kernel(kernel)
        return k

    def _launch(self, knl, gsize, lsize, *args):
        """Enqueue ``knl`` on ``gsize`` work-items (work-groups of ``lsize``, None: the
        driver's choice): Python ints become int32, floats float32, arrays their buffers. The
        first launch of a kernel records its scalar argument types in it
        (``set_scalar_arg_dtypes``): pyopencl then packs the arguments itself, ~0.5 us a launch
        against ~35 us for its generic path, which tried each argument's type every time (a
        small layer's step is mostly launches on a CPU device)."""
        Array = self._cl_array.Array
        conv = []
        for a in args:
            if isinstance(a, Array):
                conv.append(a.base_data)
            elif isinstance(a, (bool, np.bool_)) or (isinstance(a, (int, np.integer))
                                                      and not isinstance(a, np.uint32)):
                conv.append(np.int32(a))
            elif isinstance(a, (float, np.floating)):
                conv.append(np.float32(a))
            else:
                conv.append(a)
        gsize = tuple(int(g) for g in gsize)
        lsize = None if lsize is None else tuple(lsize)
        with self._lock:
            if knl not in self._typed:
                knl.set_scalar_arg_dtypes([a.dtype if isinstance(a, np.generic) else None
                                           for a in conv])
                self._typed.add(knl)
            knl.set_args(*conv)
            self._cl.enqueue_nd_range_kernel(self.queue, knl, gsize, lsize)

    # ---- arrays ---------------------------------------------------------------------------
    def _empty(self, shape, dtype=np.float32):
        """A new device array from the memory pool. pyopencl's Array constructor takes ~20 us
        (it re-derives strides and flags every time), as much as a small kernel's launch, so
        an array of a (shape, dtype) seen before is a shallow copy of a template of that shape
        with a buffer of its own and no events: ~2 us. Only where the template's attributes are
        exactly those this was written for (``_ARRAY_FIELDS``); otherwise, or for an empty
        array, the constructor."""
        shape = tuple(int(s) for s in shape)
        key = (shape, dtype)
        template = self._templates.get(key)
        if template is None:
            a = self._cl_array.empty(self.queue, shape, dtype, allocator=self.allocator)
            if a.nbytes and set(vars(a)) == _ARRAY_FIELDS and a.offset == 0:
                template = copy.copy(a)
                template.base_data, template.events = None, []
                self._templates[key] = template
            return a
        a = copy.copy(template)
        a.base_data = self.allocator(template.nbytes)
        a.events = []
        return a

    def _scratch(self, key, shape, dtype=np.float32):
        """A device buffer that never leaves the op asking for it (a padded copy, re-laid-out
        weights, partial sums), kept per (key, shape, dtype) and per calling thread for the
        next call: the in-order queue runs that call's kernels after this one's, so reusing it
        is safe, and creating a pyopencl array costs ~20 us, a fifth of a small layer's
        launch on a CPU device."""
        arrays = getattr(self._scratch_arrays, "by_key", None)
        if arrays is None:
            arrays = self._scratch_arrays.by_key = {}
        k = (key, tuple(int(v) for v in shape), np.dtype(dtype).str)
        a = arrays.get(k)
        if a is None:
            if len(arrays) > 64:            # many shapes seen: start over
                arrays.clear()
            a = arrays[k] = self._empty(shape, dtype)
        return a

    def _in(self, a, dtype=np.float32):
        """``a`` as a contiguous device array of ``dtype`` with no offset (copying if needed)."""
        cl_array = self._cl_array
        if not isinstance(a, cl_array.Array):
            return self._to_device(np.asarray(a), dtype)
        if a.dtype != dtype:
            raise TypeError(f"OpenCL backend: expected a {np.dtype(dtype).name} array, got {a.dtype}")
        if a.context != self.context:
            return self._to_device(a.get(), dtype)
        if not a.flags.c_contiguous:
            raise ValueError("OpenCL backend: arrays must be C-contiguous")
        if a.offset:
            out = self._empty(a.shape, dtype)
            if a.nbytes:
                self._cl.enqueue_copy(self.queue, out.base_data, a.base_data,
                                      src_offset=a.offset, byte_count=a.nbytes)
            return out
        return a

    def _to_device(self, a: np.ndarray, dtype):
        host = np.ascontiguousarray(a, dtype=dtype)
        out = self._empty(host.shape, dtype)
        if host.nbytes:
            out.set(host, queue=self.queue)
        return out

    def from_numpy(self, a):
        a = np.asarray(a)
        if a.dtype.kind not in "fiub":
            raise TypeError(f"from_numpy: expected a numeric array, got dtype {a.dtype}")
        return self._to_device(a, np.float32)

    def labels_from_numpy(self, y):
        y = np.asarray(y)
        if y.dtype.kind not in "iu":
            raise TypeError(f"labels must be integers, got dtype {y.dtype}")
        if y.size and (y.min() < 0 or y.max() > np.iinfo(np.int32).max):
            raise ValueError("labels must be non-negative class indices")
        return self._to_device(y, np.int32)

    def to_numpy(self, a):
        if isinstance(a, np.ndarray):
            return a
        return a.get(queue=self.queue)

    def zeros(self, shape):
        out = self._empty(shape)
        if out.nbytes:
            self._cl.enqueue_fill_buffer(self.queue, out.base_data, np.float32(0), 0, out.nbytes)
        return out

    def copy_into(self, dst, src):
        if not isinstance(dst, self._cl_array.Array):
            raise TypeError("copy_into: dst must be an OpenCL array of this backend")
        if tuple(dst.shape) != tuple(np.shape(src)):
            raise ValueError(f"copy_into: shapes differ, dst {tuple(dst.shape)} src {tuple(np.shape(src))}")
        if isinstance(src, np.ndarray):
            dst.set(np.ascontiguousarray(src, dtype=dst.dtype), queue=self.queue)
            return
        src = self._in(src, dst.dtype)
        if dst.nbytes:
            self._cl.enqueue_copy(self.queue, dst.base_data, src.base_data,
                                  dst_offset=dst.offset, byte_count=dst.nbytes)

    def all_finite(self, a):
        a = self._in(a)
        n = a.size
        if n == 0:
            return True
        gsize = min(n, 64 * int(self.device.max_compute_units) * (64 if self.is_gpu else 4))
        with self._lock:
            flag = self._flag
            self._cl.enqueue_fill_buffer(self.queue, flag.base_data, np.int32(0), 0, 4)
            self._launch(self._kernel("reduce", "any_nonfinite"), (gsize,), None, a, flag, n)
            return int(flag.get(queue=self.queue)[0]) == 0

    def reshape(self, a, shape):
        return a.reshape(tuple(shape))

    def device_name(self) -> str:
        return f"{self.device.name.strip()} [{self.device.platform.name.strip()}, opencl:{self.device_id}]"

    def memory_available(self) -> int | None:
        """The device's global memory (OpenCL does not say how much of it is free)."""
        return int(self.device.global_mem_size)

    def synchronize(self) -> None:
        self.queue.finish()

    # ---- helpers --------------------------------------------------------------------------
    def _sum_axes02(self, x, A, B, Cn, out=None):
        """out[b] = sum over a, c of x viewed as (A, B, Cn)."""
        out = self._empty((B,)) if out is None else out
        ls = self.reduce_ls
        self._launch(self._kernel("reduce", "sum_axes02", {"LS": ls}), (B * ls,), (ls,),
                     x, out, A, B, Cn)
        return out

    # ---- convolution ----------------------------------------------------------------------
    def _conv_fwd(self, x, w, bias, y, g: ConvGeometry, flip=False, t=None):
        """Enqueue the blocked forward kernel: y = conv(x, w) (+ bias) for the plain geometry
        ``g``. With ``flip`` the weight is (C, O, KH, KW) read as w[c, o, kh-1-p, kw-1-q] (the
        stride-1 input gradient, ``g`` then being ``transposed()``). ``t``: blocking {"OB",
        "PX", "PAD"} or, for stride 1, {"OB", "PX", "PR"}, else the tuner's choice (which
        times this very launch). With PR, x is laid out as flattened zero-bordered planes
        (pad2d) for conv2d_fwd_plane; with PAD, x is first zero-padded (pad2d) and
        conv2d_fwd_padded runs without bounds tests; else conv2d_fwd tests the image's edges
        itself."""
        if t is None:
            t = self.tuning.conv_fwd(g, lambda cand: self._conv_fwd(x, w, bias, y, g, flip, cand))
        ob, px = t["OB"], t["PX"]
        defines = {k: t[k] for k in ("OB", "PX", "PR") if k in t}
        op = _round_up(g.o, ob)
        taps = g.c * g.kh * g.kw
        wt = self._scratch("wt", (taps, op))
        self._launch(self._kernel("conv", "conv2d_wtrans", defines), (op, taps), None,
                     w, wt, g.o, g.c, g.kh, g.kw, op, int(flip))
        has_b = bias is not None
        b_arg = bias if has_b else self._dummy
        if "PR" in t:
            # flattened planes: rows of wp values, long enough for the last block's loads
            hp, wp = g.oh + g.kh - 1, g.ow + g.kw - 1
            run = t["PR"] * px
            blocks = -(-((g.oh - 1) * wp + g.ow) // run)
            ls = max(hp * wp, blocks * run + (g.kh - 1) * wp + g.kw - 1)
            xf = self._scratch("xp", (g.n, g.c, ls))
            self._launch(self._kernel("conv", "pad2d", defines), (hp, g.n * g.c), None,
                         x, xf, g.h, g.w, hp, wp, g.pt, g.pl, ls)
            self._launch(self._kernel("conv", "conv2d_fwd_plane", defines), (blocks, op // ob, g.n),
                         None, xf, wt, b_arg, int(has_b), y, g.c, ls, wp, g.o, g.oh, g.ow, g.kh,
                         g.kw, op)
            return
        gsize = (g.oh * -(-g.ow // px), op // ob, g.n)
        if not t.get("PAD"):
            self._launch(self._kernel("conv", "conv2d_fwd", defines), gsize, None,
                         x, wt, b_arg, int(has_b), y,
                         g.c, g.h, g.w, g.o, g.oh, g.ow, g.kh, g.kw, g.sh, g.sw, g.pt, g.pl, op)
            return
        # rows and columns every block reads: the last block's PX columns of the last tap
        hp = (g.oh - 1) * g.sh + g.kh
        wp = (_round_up(g.ow, px) - 1) * g.sw + g.kw
        if g.pt == 0 and g.pl == 0 and hp <= g.h and wp <= g.w:
            xp, hp, wp = x, g.h, g.w
        else:
            xp = self._scratch("xp", (g.n, g.c, hp, wp))
            self._launch(self._kernel("conv", "pad2d", defines), (hp, g.n * g.c), None,
                         x, xp, g.h, g.w, hp, wp, g.pt, g.pl, hp * wp)
        self._launch(self._kernel("conv", "conv2d_fwd_padded", defines), gsize, None,
                     xp, wt, b_arg, int(has_b), y,
                     g.c, hp, wp, g.o, g.oh, g.ow, g.kh, g.kw, g.sh, g.sw, op)

    def conv2d_forward(self, x, w, b, stride, padding, dilation=(1, 1), groups=1):
        x, w = self._in(x), self._in(w)
        g = ConvGeometry.of(x.shape, w.shape, stride, padding, dilation, groups)
        y = self._empty(g.y_shape)
        bias = None if b is None else self._in(b)
        if g.plain:
            self._conv_fwd(x, w, bias, y, g)
        elif g.groups == g.c:
            self._depthwise_fwd(x, w, bias, y, g)
        else:
            self._grouped_fwd(x, w, bias, y, g, False)
        return y

    def _fwd_px(self, ow):
        """Output columns per work-item of the grouped and depthwise forward kernels."""
        return 4 if self.is_gpu or ow < 8 else 8

    @staticmethod
    def _geo_args(g: ConvGeometry):
        """The sizes the grouped, dilated and depthwise kernels take, in their order."""
        return (g.c, g.h, g.w, g.o, g.oh, g.ow, g.kh, g.kw, g.sh, g.sw, g.pt, g.pl, g.dh, g.dw)

    def _grouped_fwd(self, x, w, bias, y, g: ConvGeometry, flip):
        """Enqueue the grouped forward kernel: y = grouped conv(x, w) (+ bias) of geometry
        ``g``. With ``flip`` the weight (G*C, O/G, KH, KW) is read flipped, in/out swapped (the
        stride-1 input gradient). Not auto-tuned: OB filters x PX columns per work-item."""
        cg, og = g.c // g.groups, g.o // g.groups
        t = {"OB": 4 if og <= 4 else 8, "PX": self._fwd_px(g.ow)}
        op = _round_up(og, t["OB"])
        wt = self._scratch("wt", (g.groups, cg * g.kh * g.kw, op))
        self._launch(self._kernel("conv", "conv2d_grouped_wtrans", t),
                     (op, cg * g.kh * g.kw, g.groups), None, w, wt, og, cg, g.kh, g.kw, op, int(flip))
        has_b = bias is not None
        self._launch(self._kernel("conv", "conv2d_grouped_fwd", t),
                     (g.oh * -(-g.ow // t["PX"]), g.groups * (op // t["OB"]), g.n), None,
                     x, wt, bias if has_b else self._dummy, int(has_b), y, *self._geo_args(g),
                     g.groups, op)

    def _depthwise_fwd(self, x, w, bias, y, g: ConvGeometry):
        """Enqueue the depthwise forward kernel (groups == C): one filter's sliding window over
        its channel, PX columns per work-item."""
        px = self._fwd_px(g.ow)
        has_b = bias is not None
        self._launch(self._kernel("conv", "conv2d_depthwise_fwd", {"PX": px}),
                     (g.oh * -(-g.ow // px), g.o, g.n), None,
                     x, w, bias if has_b else self._dummy, int(has_b), y, *self._geo_args(g))

    def conv2d_backward(self, x, w, dy, stride, padding, with_bias, need_dx, dilation=(1, 1),
                        groups=1):
        x, w, dy = self._in(x), self._in(w), self._in(dy)
        g = ConvGeometry.of(x.shape, w.shape, stride, padding, dilation, groups)
        if tuple(dy.shape) != g.y_shape:
            raise ValueError(f"conv2d_backward: dy has shape {tuple(dy.shape)}, expected {g.y_shape}")
        if not g.plain:
            dx = self._grouped_dx(dy, w, g) if need_dx else None
            dw = self._grouped_dw(x, dy, g)
            db = self._sum_axes02(dy, g.n, g.o, g.oh * g.ow) if with_bias else None
            return dx, dw, db
        dx = None
        if need_dx:
            dx = self._empty(g.x_shape)
            # stride 1: dx is the forward convolution of dy (padded by k-1-pad) with the flipped
            # kernel, which runs on the fast forward kernel; otherwise one stride phase of dx
            # at a time, each a stride-1 correlation of dy with that phase's taps
            gt = g.transposed()
            if gt is not None:
                self._conv_fwd(dy, w, None, dx, gt, True)
            else:
                t = self._dx_phase_blocking(g)
                hq, wq = -(-g.h // g.sh), -(-g.w // g.sw)
                self._launch(self._kernel("conv", "conv2d_bwd_dx_phase", t),
                             (hq * -(-wq // t["PX"]), -(-g.c // t["OB"]), g.n * g.sh * g.sw), None,
                             dy, w, dx, *self._geo_args(g)[:12])
        dw, db = self._conv_dw(x, dy, g, with_bias)
        return dx, dw, db

    def _dx_phase_blocking(self, g: ConvGeometry) -> dict:
        """OB input channels x PX positions of a stride phase per work-item of
        conv2d_bwd_dx_phase: vectors as wide as a phase row allows."""
        wq = -(-g.w // g.sw)
        return {"OB": 8, "PX": 4 if self.is_gpu or wq < 8 else (16 if wq >= 16 else 8)}

    def _grouped_dx(self, dy, w, g: ConvGeometry):
        """Input gradient of a grouped, dilated or depthwise convolution: for stride 1 (not
        depthwise) the grouped forward of dy, padded by (k-1)*d - pad, with the flipped kernel;
        otherwise the gather kernel."""
        dx = self._empty(g.x_shape)
        gt = g.transposed()
        if g.groups != g.c and gt is not None:
            self._grouped_fwd(dy, w, None, dx, gt, True)
        else:
            self._launch(self._kernel("conv", "conv2d_grouped_bwd_dx", tune.GROUPED_DEFINES),
                         (g.h * g.w, g.c, g.n), None, dy, w, dx, *self._geo_args(g), g.groups)
        return dx

    def _split_images(self, n, items):
        """(S, images per chunk): the images split into S chunks of partial sums when ``items``
        work-items alone are too few for the device."""
        s = max(1, min(n, -(-self.target_items // items)))
        nper = -(-n // s)
        return -(-n // nper), nper

    def _grouped_dw(self, x, dy, g: ConvGeometry):
        """Weight gradient of a grouped, dilated or depthwise convolution, one weight per
        work-item; the images are split into S chunks (partial sums, then added) when the
        weights alone are too few work-items for the device."""
        per_filter = g.c // g.groups * g.kh * g.kw
        items = g.o * per_filter
        s, nper = self._split_images(g.n, items)
        dw = self._empty((g.o, g.c // g.groups, g.kh, g.kw))
        target = dw if s == 1 else self._scratch("parts", (s, items))
        self._launch(self._kernel("conv", "conv2d_grouped_bwd_dw", tune.GROUPED_DEFINES),
                     (per_filter, g.o, s), None,
                     x, dy, target, g.n, nper, *self._geo_args(g), g.groups)
        if s > 1:
            self._launch(self._kernel("reduce", "sum_parts"), (items,), None, target, dw, s, items)
        return dw

    def _conv_dw(self, x, dy, g: ConvGeometry, with_bias, t=None):
        """(dw, db or None) of the plain geometry ``g``; ``t``: the kernel's blocking (a
        ``conv2d_bwd_dw_vec`` one when it has "VO"), else the tuner's choice."""
        if t is None:
            t = self.tuning.conv_dw(g, lambda cand: self._conv_dw(x, dy, g, with_bias, cand))
        if "VO" in t:
            return self._conv_dw_vec(x, dy, g, with_bias, t)
        if "RX" in t:
            return self._conv_dw_rows(x, dy, g, with_bias, t)
        groups = g.c * g.kh * -(-g.kw // t["QB"])
        obs = -(-g.o // t["DOB"])
        s, nper = self._split_images(g.n, groups * obs)
        size = g.o * g.c * g.kh * g.kw
        dw = self._empty((g.o, g.c, g.kh, g.kw))
        target = dw if s == 1 else self._scratch("parts", (s, size))
        self._launch(self._kernel("conv", "conv2d_bwd_dw", t), (groups, obs, s), None,
                     x, dy, target, g.n, nper, *self._geo_args(g)[:12])
        if s > 1:
            self._launch(self._kernel("reduce", "sum_parts"), (size,), None, target, dw, s, size)
        db = self._sum_axes02(dy, g.n, g.o, g.oh * g.ow) if with_bias else None
        return dw, db

    def _dw_parts(self, g: ConvGeometry, with_bias, s):
        """(dw, db or None) and the buffers a weight-gradient kernel writes its S partial sums
        to (dw and db themselves when S == 1)."""
        size = g.o * g.c * g.kh * g.kw
        dw = self._empty((g.o, g.c, g.kh, g.kw))
        target = dw if s == 1 else self._scratch("parts", (s, size))
        db = self._empty((g.o,)) if with_bias else None
        dbt = (db if s == 1 else self._scratch("db_parts", (s, g.o))) if with_bias else self._dummy
        return dw, db, target, dbt

    def _sum_dw_parts(self, g: ConvGeometry, s, dw, db, target, dbt):
        """Adds the S partial sums of dw (and db) into them (nothing to do when S == 1)."""
        if s == 1:
            return
        size = g.o * g.c * g.kh * g.kw
        if db is not None:
            self._launch(self._kernel("reduce", "sum_parts_two"), (size + g.o,), None,
                         target, dw, size, dbt, db, g.o, s)
        else:
            self._launch(self._kernel("reduce", "sum_parts"), (size,), None, target, dw, s, size)

    def _conv_dw_rows(self, x, dy, g: ConvGeometry, with_bias, t):
        """Weight (and bias) gradient of a stride-1 convolution on conv2d_bwd_dw_rows: x laid out
        as flattened zero-bordered planes, dy read as it is (NCHW), DOB filters x TB taps per
        work-item."""
        hp, wp = g.oh + g.kh - 1, g.ow + g.kw - 1
        ls = hp * wp + t["RX"]
        xf = self._scratch("xp", (g.n, g.c, ls))
        self._launch(self._kernel("conv", "pad2d", t), (hp, g.n * g.c), None,
                     x, xf, g.h, g.w, hp, wp, g.pt, g.pl, ls)
        blocks = g.c * -(-(g.kh * g.kw) // t["TB"])
        obs = -(-g.o // t["DOB"])
        s, nper = self._split_images(g.n, blocks * obs)
        dw, db, target, dbt = self._dw_parts(g, with_bias, s)
        self._launch(self._kernel("conv", "conv2d_bwd_dw_rows", t), (blocks, obs, s), None,
                     xf, dy, target, dbt, int(with_bias), g.n, nper, g.c, ls, wp,
                     g.o, g.oh, g.ow, g.kh, g.kw)
        self._sum_dw_parts(g, s, dw, db, target, dbt)
        return dw, db

    def _conv_dw_vec(self, x, dy, g: ConvGeometry, with_bias, t):
        """Weight (and bias) gradient on conv2d_bwd_dw_vec: dy laid out channels-last, x
        zero-padded so that every tap is inside, VO filters x TB taps per work-item."""
        vo, tb = t["VO"], t["TB"]
        op = _round_up(g.o, vo)
        plane = g.oh * g.ow
        dyt = self._scratch("dyt", (g.n, plane, op))
        self._launch(self._kernel("conv", "nchw_to_nhwc", t), (op, plane, g.n), None,
                     dy, dyt, g.o, plane, op)
        hp, wp = (g.oh - 1) * g.sh + g.kh, (g.ow - 1) * g.sw + g.kw
        if (hp, wp, g.pt, g.pl) == (g.h, g.w, 0, 0):
            xp = x
        else:
            xp = self._scratch("xp", (g.n, g.c, hp, wp))
            self._launch(self._kernel("conv", "pad2d", t), (hp, g.n * g.c), None,
                         x, xp, g.h, g.w, hp, wp, g.pt, g.pl, hp * wp)
        blocks = g.c * -(-(g.kh * g.kw) // tb)
        s, nper = self._split_images(g.n, blocks * (op // vo))
        dw, db, target, dbt = self._dw_parts(g, with_bias, s)
        self._launch(self._kernel("conv", "conv2d_bwd_dw_vec", t), (blocks, op // vo, s), None,
                     xp, dyt, target, dbt, int(with_bias), g.n, nper, g.c, hp, wp,
                     g.o, g.oh, g.ow, g.kh, g.kw, g.sh, g.sw, op)
        self._sum_dw_parts(g, s, dw, db, target, dbt)
        return dw, db

    # ---- pooling --------------------------------------------------------------------------
    @staticmethod
    def _pool_geometry(x_shape, kernel, stride, padding, output_size):
        """(n, c, h, w, kh, kw, sh, sw, oh, ow, plain): plain when the unpadded kernels apply."""
        n, c, h, w = x_shape
        oh, ow = pool_geometry(x_shape, kernel, stride, padding, output_size)
        plain = pool_is_plain(x_shape, kernel, stride, padding, (oh, ow))
        return n, c, h, w, kernel[0], kernel[1], stride[0], stride[1], oh, ow, plain

    def maxpool2d_forward(self, x, kernel, stride, padding=(0, 0, 0, 0), output_size=None):
        x = self._in(x)
        n, c, h, w, kh, kw, sh, sw, oh, ow, plain = self._pool_geometry(
            tuple(x.shape), kernel, stride, padding, output_size)
        y = self._empty((n, c, oh, ow))
        arg = self._empty((n, c, oh, ow), np.int32)
        if plain and (kh, kw, sh, sw) == (2, 2, 2, 2):
            self._launch(self._kernel("pool", "maxpool2x2_fwd"), (-(-ow // 8), oh, n * c), None,
                         x, y, arg, h, w, oh, ow)
        elif plain:
            self._launch(self._kernel("pool", "maxpool2d_fwd"), (ow, oh, n * c), None,
                         x, y, arg, h, w, oh, ow, kh, kw, sh, sw)
        else:
            self._launch(self._kernel("pool", "maxpool2d_fwd_padded"), (ow, oh, n * c), None,
                         x, y, arg, h, w, oh, ow, kh, kw, sh, sw, padding[0], padding[2])
        return y, (arg, tuple(x.shape), (kh, kw), (sh, sw), tuple(padding))

    def maxpool2d_backward(self, dy, state):
        arg, x_shape, kernel, stride, padding = state
        dy = self._in(dy)
        n, c, h, w, kh, kw, sh, sw, oh, ow, plain = self._pool_geometry(
            x_shape, kernel, stride, padding, tuple(dy.shape[2:]))
        top, _, left, _ = padding
        pads = {"PAD_T": top, "PAD_L": left} if top or left else None    # compile-time
        dx = self._empty(x_shape)
        if plain and (kh, kw, sh, sw) == (2, 2, 2, 2):
            self._launch(self._kernel("pool", "maxpool2x2_bwd"), (-(-w // 16), -(-h // 2), n * c),
                         None, dy, arg, dx, h, w, oh, ow)
        elif (kh, kw) == (sh, sw):            # windows tile the input: one work-item per window
            self._launch(self._kernel("pool", "maxpool2d_bwd_tiled", pads),
                         (-(-(w + left) // kw), -(-(h + top) // kh), n * c), None,
                         dy, arg, dx, h, w, oh, ow, kh, kw)
        else:
            self._launch(self._kernel("pool", "maxpool2d_bwd", pads), (w, h, n * c), None,
                         dy, arg, dx, h, w, oh, ow, kh, kw, sh, sw)
        return dx

    def avgpool2d_forward(self, x, kernel, stride, padding=(0, 0, 0, 0), output_size=None,
                          count_include_pad=True):
        x = self._in(x)
        n, c, h, w, kh, kw, sh, sw, oh, ow, plain = self._pool_geometry(
            tuple(x.shape), kernel, stride, padding, output_size)
        y = self._empty((n, c, oh, ow))
        if plain:                           # every divisor is kh*kw, with or without padding
            self._launch(self._kernel("pool", "avgpool2d_fwd"), (ow, oh, n * c), None,
                         x, y, h, w, oh, ow, kh, kw, sh, sw)
        else:
            self._launch(self._kernel("pool", "avgpool2d_fwd_padded"), (ow, oh, n * c), None,
                         x, y, h, w, oh, ow, kh, kw, sh, sw, *padding,
                         int(bool(count_include_pad)))
        return y

    def avgpool2d_backward(self, dy, x_shape, kernel, stride, padding=(0, 0, 0, 0),
                           count_include_pad=True):
        dy = self._in(dy)
        x_shape = tuple(x_shape)
        n, c, h, w, kh, kw, sh, sw, oh, ow, plain = self._pool_geometry(
            x_shape, kernel, stride, padding, tuple(dy.shape[2:]))
        dx = self._empty(x_shape)
        if plain:
            self._launch(self._kernel("pool", "avgpool2d_bwd"), (w, h, n * c), None,
                         dy, dx, h, w, oh, ow, kh, kw, sh, sw)
        else:
            self._launch(self._kernel("pool", "avgpool2d_bwd_padded"), (w, h, n * c), None,
                         dy, dx, h, w, oh, ow, kh, kw, sh, sw, *padding,
                         int(bool(count_include_pad)))
        return dx

    def global_avgpool2d_forward(self, x):
        x = self._in(x)
        if len(x.shape) != 4:
            raise ValueError(f"global average pooling expects x (N, C, H, W), got shape {tuple(x.shape)}")
        n, c, h, w = x.shape
        y = self._empty((n, c))
        if y.size:
            self._launch(self._kernel("pool", "global_avgpool2d_fwd"), (n * c,), None,
                         x, y, n * c, h * w)
        return y

    def global_avgpool2d_backward(self, dy, x_shape):
        dy = self._in(dy)
        n, c, h, w = x_shape
        if tuple(dy.shape) != (n, c):
            raise ValueError(f"global_avgpool2d_backward: dy has shape {tuple(dy.shape)}, "
                             f"expected {(n, c)}")
        dx = self._empty((n, c, h, w))
        if dx.size:
            self._launch(self._kernel("pool", "global_avgpool2d_bwd"), (dx.size,), None,
                         dy, dx, dx.size, h * w)
        return dx

    # ---- dense ----------------------------------------------------------------------------
    def _gemm(self, a, sam, sak, b, sbk, sbn, bias, m, n, k, t=None):
        """C (m, n) = A(m, k) @ B(k, n) (+ bias[n]) with strided A and B; ``t``: the kernel
        ("KIND": dot, rows, simple or tiled) and its blocking, else the tuner's choice for the
        strides' layout (dot: both contiguous along k; rows: B contiguous along n)."""
        if t is None:
            layout = "dot" if sak == 1 and sbk == 1 else "rows" if sbn == 1 else "any"
            t = self.tuning.gemm_tiles((m, n, k), layout, lambda cand: self._gemm(
                a, sam, sak, b, sbk, sbn, bias, m, n, k, cand))
        out = self._empty((m, n))
        has_b = bias is not None
        b_arg = bias if has_b else self._dummy
        kind = t.get("KIND", "tiled")
        defines = {key: v for key, v in t.items() if key != "KIND"} or None
        if kind == "dot":
            self._launch(self._kernel("dense", "gemm_dot", defines),
                         (-(-n // t["RN"]), -(-m // t["RM"])), None,
                         a, sam, b, sbn, b_arg, int(has_b), out, m, n, k)
        elif kind == "rows":
            self._launch(self._kernel("dense", "gemm_rows", defines),
                         (-(-n // t["VN"]), -(-m // t["RM"])), None,
                         a, sam, sak, b, sbk, b_arg, int(has_b), out, m, n, k)
        elif kind == "simple":
            self._launch(self._kernel("dense", "gemm_simple"), (n, m), None,
                         a, sam, sak, b, sbk, sbn, b_arg, int(has_b), out, m, n, k)
        else:
            lx, ly = t["TN"] // t["RN"], t["TM"] // t["RM"]
            gsize = (-(-n // t["TN"]) * lx, -(-m // t["TM"]) * ly)
            self._launch(self._kernel("dense", "gemm", defines), gsize, (lx, ly),
                         a, sam, sak, b, sbk, sbn, b_arg, int(has_b), out, m, n, k)
        return out

    def dense_forward(self, x, w, b):
        x, w = self._in(x), self._in(w)
        n, fin = x.shape
        fout, fin2 = w.shape
        if fin != fin2:
            raise ValueError(f"dense: input has {fin} features but the weight expects {fin2}")
        return self._gemm(x, fin, 1, w, 1, fin, None if b is None else self._in(b), n, fout, fin)

    def dense_backward(self, x, w, dy, with_bias, need_dx):
        x, w, dy = self._in(x), self._in(w), self._in(dy)
        n, fin = x.shape
        fout = w.shape[0]
        if tuple(dy.shape) != (n, fout):
            raise ValueError(f"dense_backward: dy has shape {tuple(dy.shape)}, expected {(n, fout)}")
        dw = self._gemm(dy, 1, fout, x, fin, 1, None, fout, fin, n)           # dy.T @ x
        db = self._sum_axes02(dy, n, fout, 1) if with_bias else None
        dx = self._gemm(dy, fout, 1, w, fin, 1, None, n, fin, fout) if need_dx else None  # dy @ w
        return dx, dw, db

    # ---- element-wise sum ------------------------------------------------------------------
    def add(self, a, b, out=None):
        a, b = self._in(a), self._in(b)
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(f"add: shapes {tuple(a.shape)} and {tuple(b.shape)} differ")
        if out is None:
            out = self._empty(a.shape)
        elif tuple(self._require_device(out, "add's out").shape) != tuple(a.shape):
            raise ValueError(f"add: out has shape {tuple(out.shape)}, expected {tuple(a.shape)}")
        if a.size >= 2 ** 31:
            raise ValueError("add: more than 2**31 elements in one array")
        if a.size:
            self._launch(self._kernel("elementwise", "add"), (a.size,), None, a, b, out, a.size)
        return out

    # ---- activations ----------------------------------------------------------------------
    @staticmethod
    def _act_kind(kind):
        try:
            return _ACTIVATIONS[kind]
        except KeyError:
            raise ValueError(f"unknown activation {kind!r}; expected one of {', '.join(_ACTIVATIONS)}") from None

    def activation_forward(self, kind, x, alpha):
        k = self._act_kind(kind)
        x = self._in(x)
        y = self._empty(x.shape)
        if x.size:
            self._launch(self._kernel("activations", "act_fwd", {"KIND": k}),
                         (-(-x.size // 16),), None, x, y, x.size, float(alpha or 0.0))
        return y

    def activation_backward(self, kind, x, y, dy, alpha):
        k = self._act_kind(kind)
        dy = self._in(dy)
        # relu/leaky_relu read x, sigmoid/tanh read y; the other may be None
        x = self._in(x) if x is not None else self._dummy
        y = self._in(y) if y is not None else self._dummy
        if k <= 1 and x is self._dummy or k >= 2 and y is self._dummy:
            raise ValueError(f"activation_backward({kind!r}) needs the forward's "
                             f"{'input x' if k <= 1 else 'output y'}")
        dx = self._empty(dy.shape)
        if dy.size:
            self._launch(self._kernel("activations", "act_bwd", {"KIND": k}),
                         (-(-dy.size // 16),), None, x, y, dy, dx, dy.size, float(alpha or 0.0))
        return dx

    # ---- loss -----------------------------------------------------------------------------
    def softmax_cross_entropy(self, logits, labels, label_smoothing=0.0):
        logits = self._in(logits)
        labels = self._in(labels, np.int32) if isinstance(labels, self._cl_array.Array) \
            else self.labels_from_numpy(labels)
        n, k = logits.shape
        if tuple(labels.shape) != (n,):
            raise ValueError(f"softmax_cross_entropy: {n} rows of logits but labels of shape {tuple(labels.shape)}")
        dlogits = self._empty((n, k))
        out = self._empty((2,))
        ls = self.reduce_ls
        self._launch(self._kernel("loss", "softmax_xent", {"LS": ls}), (ls,), (ls,),
                     logits, labels, dlogits, out, n, k, float(label_smoothing))
        loss, correct = out.get(queue=self.queue)
        return float(loss), dlogits, int(round(float(correct)))

    # ---- dropout --------------------------------------------------------------------------
    def dropout_forward(self, x, p, seed):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        x = self._in(x)
        if x.size >= 2 ** 31:
            raise ValueError("dropout: more than 2**31 elements in one array")
        y, mask = self._empty(x.shape), self._empty(x.shape)
        seed_hash = _lowbias32(np.asarray([int(seed) & 0xFFFFFFFF], dtype=np.uint32))[0]
        if x.size:
            self._launch(self._kernel("dropout", "dropout_fwd"), (x.size,), None,
                         x, y, mask, x.size, np.uint32(seed_hash), np.float32(p),
                         np.float32(1.0 / (1.0 - p)))
        return y, mask

    def dropout_backward(self, dy, mask):
        dy, mask = self._in(dy), self._in(mask)
        dx = self._empty(dy.shape)
        if dy.size:
            self._launch(self._kernel("dropout", "dropout_bwd"), (dy.size,), None, dy, mask, dx, dy.size)
        return dx

    # ---- augmentation ---------------------------------------------------------------------
    def augment(self, x, dy, dx, flip):
        x = self._in(x)
        if len(x.shape) != 4:
            raise ValueError(f"augment: expected an NCHW batch, got shape {tuple(x.shape)}")
        n, c, h, w = (int(s) for s in x.shape)
        if any(np.shape(a) != (n,) for a in (dy, dx, flip)):
            raise ValueError(f"augment: dy, dx and flip need one value per image ({n}), "
                             f"got shapes {[np.shape(a) for a in (dy, dx, flip)]}")
        draws = np.stack([np.asarray(a, dtype=np.int32) for a in (dy, dx, flip)])
        if x.size >= 2 ** 31:
            raise ValueError("augment: more than 2**31 elements in one batch")
        y = self._empty(x.shape)
        if x.size:
            self._launch(self._kernel("augment", "shift_flip"), (x.size,), None,
                         x, y, self._to_device(draws, np.int32), n, c, h, w)
        return y

    # ---- batch normalisation --------------------------------------------------------------
    def _require_device(self, a, what):
        if not isinstance(a, self._cl_array.Array) or a.offset or a.dtype != np.float32:
            raise TypeError(f"{what} must be a float32 OpenCL array of this backend (updated in place)")
        return a

    def batchnorm2d_forward_train(self, x, gamma, beta, running_mean, running_var, momentum, eps):
        x, gamma, beta = self._in(x), self._in(gamma), self._in(beta)
        rm = self._require_device(running_mean, "running_mean")
        rv = self._require_device(running_var, "running_var")
        n, c, h, w = x.shape
        hw, m = h * w, n * h * w
        mean, inv_std = self._empty((c,)), self._empty((c,))
        stats = (n, c, hw, float(momentum), float(eps), float(m / max(m - 1, 1)))
        x_hat, y = self._empty(x.shape), self._empty(x.shape)
        if not self.is_gpu:             # CPU devices: a channel / a plane per work-item
            self._launch(self._kernel("batchnorm", "bn_stats_channel"), (c,), None,
                         x, mean, inv_std, rm, rv, *stats)
            if x.size:
                self._launch(self._kernel("batchnorm", "bn_apply_train_plane"), (c, n), None,
                             x, mean, inv_std, gamma, beta, x_hat, y, c, hw)
            return y, (x_hat, inv_std)
        ls = self.reduce_ls
        self._launch(self._kernel("batchnorm", "bn_stats", {"LS": ls}), (c * ls,), (ls,),
                     x, mean, inv_std, rm, rv, *stats)
        if x.size:
            self._launch(self._kernel("batchnorm", "bn_apply_train"), (x.size,), None,
                         x, mean, inv_std, gamma, beta, x_hat, y, c, hw, x.size)
        return y, (x_hat, inv_std)

    def batchnorm2d_forward_eval(self, x, gamma, beta, running_mean, running_var, eps):
        x, gamma, beta = self._in(x), self._in(gamma), self._in(beta)
        rm, rv = self._in(running_mean), self._in(running_var)
        n, c, h, w = x.shape
        y = self._empty(x.shape)
        if not x.size:
            return y
        if not self.is_gpu:             # CPU devices: a plane per work-item
            self._launch(self._kernel("batchnorm", "bn_eval_plane"), (c, n), None,
                         x, rm, rv, gamma, beta, y, c, h * w, float(eps))
        else:
            self._launch(self._kernel("batchnorm", "bn_eval"), (x.size,), None,
                         x, rm, rv, gamma, beta, y, c, h * w, x.size, float(eps))
        return y

    def batchnorm2d_backward(self, dy, state, gamma):
        x_hat, inv_std = state
        dy, gamma = self._in(dy), self._in(gamma)
        n, c, h, w = dy.shape
        hw = h * w
        dgamma, dbeta = self._empty((c,)), self._empty((c,))
        dx = self._empty(dy.shape)
        if not self.is_gpu:             # CPU devices: a channel / a plane per work-item
            self._launch(self._kernel("batchnorm", "bn_bwd_reduce_channel"), (c,), None,
                         dy, x_hat, dgamma, dbeta, n, c, hw)
            if dy.size:
                self._launch(self._kernel("batchnorm", "bn_bwd_dx_plane"), (c, n), None,
                             dy, x_hat, gamma, inv_std, dgamma, dbeta, dx, c, hw, float(n * hw))
            return dx, dgamma, dbeta
        ls = self.reduce_ls
        self._launch(self._kernel("batchnorm", "bn_bwd_reduce", {"LS": ls}), (c * ls,), (ls,),
                     dy, x_hat, dgamma, dbeta, n, c, hw)
        if dy.size:
            self._launch(self._kernel("batchnorm", "bn_bwd_dx"), (dy.size,), None,
                         dy, x_hat, gamma, inv_std, dgamma, dbeta, dx, c, hw, dy.size,
                         float(n * hw))
        return dx, dgamma, dbeta

    # ---- optimizer steps ------------------------------------------------------------------
    def sgd_step(self, param, grad, velocity, lr, momentum, nesterov, weight_decay):
        param = self._require_device(param, "param")
        grad = self._in(grad)
        has_v = velocity is not None
        vel = self._require_device(velocity, "velocity") if has_v else self._dummy
        if param.size:
            self._launch(self._kernel("optim", "sgd_step"), (param.size,), None,
                         param, grad, vel, param.size, float(lr), float(momentum or 0.0),
                         int(bool(nesterov)), float(weight_decay or 0.0), int(has_v))

    def adam_step(self, param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay, decoupled):
        param = self._require_device(param, "param")
        grad = self._in(grad)
        m, v = self._require_device(m, "m"), self._require_device(v, "v")
        wd = float(weight_decay or 0.0)
        decay = 1.0 - lr * wd if (wd and decoupled) else 1.0
        l2 = 0.0 if decoupled else wd
        if param.size:
            self._launch(self._kernel("optim", "adam_step"), (param.size,), None,
                         param, grad, m, v, param.size, float(lr), float(beta1), float(beta2),
                         float(eps), float(1.0 - beta1 ** step), float(1.0 - beta2 ** step),
                         l2, float(decay))

    def rmsprop_step(self, param, grad, square_avg, buf, lr, alpha, eps, momentum, weight_decay):
        param = self._require_device(param, "param")
        grad = self._in(grad)
        sq = self._require_device(square_avg, "square_avg")
        has_m = bool(momentum)
        b = self._require_device(buf, "buf") if has_m else self._dummy
        if param.size:
            self._launch(self._kernel("optim", "rmsprop_step"), (param.size,), None,
                         param, grad, sq, b, param.size, float(lr), float(alpha), float(eps),
                         float(momentum or 0.0), float(weight_decay or 0.0), int(has_m))

    def adagrad_step(self, param, grad, state_sum, lr, lr_decay, eps, step, weight_decay):
        param = self._require_device(param, "param")
        grad = self._in(grad)
        state_sum = self._require_device(state_sum, "state_sum")
        if param.size:
            self._launch(self._kernel("optim", "adagrad_step"), (param.size,), None,
                         param, grad, state_sum, param.size,
                         float(lr / (1 + (step - 1) * lr_decay)), float(eps),
                         float(weight_decay or 0.0))

    def adadelta_step(self, param, grad, square_avg, acc_delta, lr, rho, eps, weight_decay):
        param = self._require_device(param, "param")
        grad = self._in(grad)
        sq = self._require_device(square_avg, "square_avg")
        acc = self._require_device(acc_delta, "acc_delta")
        if param.size:
            self._launch(self._kernel("optim", "adadelta_step"), (param.size,), None,
                         param, grad, sq, acc, param.size, float(lr), float(rho), float(eps),
                         float(weight_decay or 0.0))

    # ---- gradient clipping ----------------------------------------------------------------
    def sum_of_squares(self, arrays):
        """Each array reduces into a few partial sums on the device (a fixed number per size,
        so the result does not vary from call to call), the partials into one number, and only
        that number is read back."""
        arrays = [self._in(a) for a in arrays]
        ls = self.reduce_ls
        groups = [max(1, min(64, -(-a.size // (ls * 16)))) for a in arrays]
        if not arrays:
            return 0.0
        parts = self._empty((sum(groups),))
        offset = 0
        for a, g in zip(arrays, groups):
            self._launch(self._kernel("reduce", "sum_squares_parts", {"LS": ls}), (g * ls,),
                         (ls,), a, parts, a.size, offset)
            offset += g
        out = self._empty((1,))
        self._launch(self._kernel("reduce", "sum_all", {"LS": ls}), (ls,), (ls,),
                     parts, out, offset)
        return float(out.get(queue=self.queue)[0])

    def scale_(self, a, factor):
        a = self._require_device(a, "a")
        if a.size:
            self._launch(self._kernel("optim", "scale"), (a.size,), None, a, a.size,
                         float(factor))

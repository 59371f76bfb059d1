"""Optimizers (SGD, Adam, RMSprop, Adagrad, Adadelta), gradient clipping and learning-rate
schedules.

An optimizer keeps its per-parameter state (velocity, moments, accumulators) on the model's
backend, in ``_state`` (one tuple of backend arrays per parameter) and ``steps`` (optimizer steps
taken), and asks the backend to update every parameter in place. The learning rate of a batch is
``lr`` times the schedule's factor; schedules compose by multiplication::

    optim.SGD(lr=0.1, momentum=0.9, schedule=optim.Warmup(2) * optim.CosineDecay(30))

Most schedules move once per epoch; ``OneCycle`` moves every batch (``Schedule.per_step``).
``clip_grad_norm=MAX`` on any optimizer rescales all gradients together before each step when
their total L2 norm exceeds MAX (PyTorch's ``clip_grad_norm_``).
"""

from __future__ import annotations

import bisect
import math
import numbers

import numpy as np

from . import settings as registry

#: each optimizer's keyword defaults (``nbcnn.settings``, PyTorch's), e.g. _D["sgd"]["lr"]
_D = {name: registry.optimizer_defaults(name) for name in registry.OPTIMIZERS}


def _setting(owner: str, name: str, value, lo=None, hi=None, lo_open=False, hi_open=False):
    """``value`` as a float once it is checked to be a finite real number (Python or numpy) in
    the range [lo, hi] (``lo_open`` / ``hi_open``: the bound itself excluded); otherwise an error
    naming ``owner`` (the optimizer or schedule), the setting and the value."""
    try:
        return registry.Number(lo, hi, lo_open, hi_open)(value)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{owner}: {name} {exc}") from None


# ---- schedules -----------------------------------------------------------------------------
class Schedule:
    """Maps a position in training to a factor on the base learning rate.

    Most schedules move once per epoch: ``factor(epoch)`` (0-based). A per-step schedule
    (``per_step = True``, e.g. ``OneCycle``) moves every batch; ``fit`` asks every schedule for
    ``step_factor(epoch, step, steps_per_epoch)`` before each batch, which for per-epoch
    schedules is ``factor(epoch)``.
    """

    #: True when the factor changes from one batch to the next within an epoch
    per_step = False

    def factor(self, epoch: int) -> float:
        raise NotImplementedError

    def step_factor(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        """The factor for batch ``step`` (0-based) of ``epoch`` (0-based) when an epoch has
        ``steps_per_epoch`` batches; per-epoch schedules ignore the step."""
        return self.factor(epoch)

    def __mul__(self, other: "Schedule") -> "Schedule":
        return Product(self, other)


class Constant(Schedule):
    def factor(self, epoch):
        return 1.0

    def __repr__(self):
        return "Constant()"


class StepDecay(Schedule):
    """Multiply by ``gamma`` every ``step_size`` epochs."""

    def __init__(self, step_size: int, gamma: float = 0.1):
        if step_size < 1:
            raise ValueError(f"StepDecay: step_size must be >= 1, got {step_size}")
        self.step_size, self.gamma = step_size, gamma

    def factor(self, epoch):
        return self.gamma ** (epoch // self.step_size)

    def __repr__(self):
        return f"StepDecay({self.step_size}, gamma={self.gamma})"


class MultiStep(Schedule):
    """Multiply by ``gamma`` at each of the ``milestones`` (epochs, 0-based): the factor of epoch
    ``e`` is ``gamma ** (number of milestones <= e)``, PyTorch's ``MultiStepLR`` stepped once per
    epoch. He et al.'s CIFAR schedule (lr / 10 after 82 and 123 epochs) is
    ``MultiStep((82, 123))``: epochs 0-81 at the base rate, 82-122 at a tenth, then a hundredth.
    Milestones are whole numbers >= 1, strictly increasing."""

    def __init__(self, milestones, gamma: float = 0.1):
        milestones = tuple(milestones)
        if not milestones:
            raise ValueError("MultiStep: milestones must name at least one epoch")
        for m in milestones:
            if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1:
                raise ValueError(f"MultiStep: milestones must be whole epochs >= 1, got {m!r} "
                                 f"in {milestones!r}")
        if any(b <= a for a, b in zip(milestones, milestones[1:])):
            raise ValueError(f"MultiStep: milestones must be strictly increasing, got {milestones!r}")
        self.milestones = tuple(int(m) for m in milestones)
        self.gamma = _setting("MultiStep", "gamma", gamma, 0, lo_open=True)

    def factor(self, epoch):
        return self.gamma ** bisect.bisect_right(self.milestones, epoch)

    def __repr__(self):
        return f"MultiStep({self.milestones}, gamma={self.gamma})"


class ExponentialDecay(Schedule):
    """Multiply by ``gamma`` every epoch."""

    def __init__(self, gamma: float):
        self.gamma = gamma

    def factor(self, epoch):
        return self.gamma ** epoch

    def __repr__(self):
        return f"ExponentialDecay({self.gamma})"


class CosineDecay(Schedule):
    """Half a cosine from 1 down to ``min_factor`` over ``epochs`` epochs, then flat."""

    def __init__(self, epochs: int, min_factor: float = 0.0):
        if epochs < 1:
            raise ValueError(f"CosineDecay: epochs must be >= 1, got {epochs}")
        self.epochs, self.min_factor = epochs, min_factor

    def factor(self, epoch):
        t = min(epoch, self.epochs) / self.epochs
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * t))

    def __repr__(self):
        return f"CosineDecay({self.epochs}, min_factor={self.min_factor})"


class Warmup(Schedule):
    """Linear ramp from 1/(epochs+1) to 1 over the first ``epochs`` epochs."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def factor(self, epoch):
        return min(1.0, (epoch + 1) / (self.epochs + 1))

    def __repr__(self):
        return f"Warmup({self.epochs})"


class OneCycle(Schedule):
    """PyTorch's ``OneCycleLR`` (cosine annealing; the learning rate only, momentum is not
    cycled), counted in batches over ``epochs`` epochs, the optimizer's ``lr`` being the peak.

    Over the first ``pct_start`` of the T = epochs * steps_per_epoch batches the factor rises by
    half a cosine from 1/div_factor to 1, then falls by half a cosine to
    1/(div_factor * final_div_factor) at batch T-1, and stays there if training goes on. The
    phase boundaries are PyTorch's: the warm-up ends at batch pct_start*T - 1. ``factor(epoch)``
    alone (no batches) counts one step per epoch.
    """

    per_step = True

    def __init__(self, epochs: int, pct_start: float = 0.3, div_factor: float = 25.0,
                 final_div_factor: float = 1e4):
        if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
            raise ValueError(f"OneCycle: epochs must be a whole number >= 1, got {epochs!r}")
        self.epochs = int(epochs)
        self.pct_start = _setting("OneCycle", "pct_start", pct_start, 0, 1)
        self.div_factor = _setting("OneCycle", "div_factor", div_factor, 0, lo_open=True)
        self.final_div_factor = _setting("OneCycle", "final_div_factor", final_div_factor, 0,
                                         lo_open=True)

    def factor(self, epoch):
        return self.step_factor(epoch, 0, 1)

    def step_factor(self, epoch, step, steps_per_epoch):
        total = self.epochs * steps_per_epoch
        t = min(epoch * steps_per_epoch + step, total - 1)     # flat after the last batch
        low = 1.0 / self.div_factor                            # the start of the warm-up
        final = low / self.final_div_factor                    # the end of the annealing
        warm_end = self.pct_start * total - 1                  # last batch of the warm-up
        if t <= warm_end:
            start, end, pct = low, 1.0, t / warm_end if warm_end > 0 else 1.0
        else:
            start, end, pct = 1.0, final, (t - warm_end) / (total - 1 - warm_end)
        return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)

    def __repr__(self):
        return (f"OneCycle({self.epochs}, pct_start={self.pct_start}, "
                f"div_factor={self.div_factor}, final_div_factor={self.final_div_factor})")


class Product(Schedule):
    def __init__(self, *parts: Schedule):
        self.parts = parts
        self.per_step = any(p.per_step for p in parts)

    def factor(self, epoch):
        return math.prod(p.factor(epoch) for p in self.parts)

    def step_factor(self, epoch, step, steps_per_epoch):
        return math.prod(p.step_factor(epoch, step, steps_per_epoch) for p in self.parts)

    def __repr__(self):
        return " * ".join(map(repr, self.parts))


def parse_schedule(text: str, epochs: int):
    """A schedule from a string: ``constant``, ``cosine`` (over the run's epochs), ``cosine:T``,
    ``cosine:T:MIN``, ``step:S`` / ``step:S:GAMMA``, ``multistep:M1:M2...`` /
    ``multistep:M1:M2...:gamma=G`` (times G, default 0.1, at each milestone epoch),
    ``exp:GAMMA``, ``warmup:W``, ``onecycle`` / ``onecycle:PCT`` / ``onecycle:PCT:DIV`` /
    ``onecycle:PCT:DIV:FINAL_DIV`` (per batch, over the run's epochs); combined with ``*``, e.g.
    ``warmup:2*cosine`` or ``multistep:82:123``."""
    parts = []
    for piece in str(text).lower().replace(" ", "").split("*"):
        name, *args = piece.split(":")
        if name == "multistep":
            parts.append(_multistep(text, args))
            continue
        try:
            nums = [float(a) for a in args]
        except ValueError:
            raise ValueError(f"schedule {text!r}: arguments of {name!r} must be numbers") from None

        def n_args(lo, hi):
            if not lo <= len(nums) <= hi:
                raise ValueError(f"schedule {text!r}: {name} takes {lo} to {hi} arguments, "
                                 f"got {len(nums)}")

        def whole(x):
            if x != int(x) or x < 1:
                raise ValueError(f"schedule {text!r}: {name} needs a whole number of epochs >= 1")
            return int(x)

        if name in ("constant", "none"):
            n_args(0, 0)
            parts.append(Constant())
        elif name == "cosine":
            n_args(0, 2)
            parts.append(CosineDecay(whole(nums[0]) if nums else max(int(epochs), 1),
                                           nums[1] if len(nums) > 1 else 0.0))
        elif name == "step":
            n_args(1, 2)
            parts.append(StepDecay(whole(nums[0]), nums[1] if len(nums) > 1 else 0.1))
        elif name in ("exp", "exponential"):
            n_args(1, 1)
            parts.append(ExponentialDecay(nums[0]))
        elif name == "warmup":
            n_args(1, 1)
            parts.append(Warmup(whole(nums[0])))
        elif name == "onecycle":
            n_args(0, 3)
            keys = ("pct_start", "div_factor", "final_div_factor")
            try:
                parts.append(OneCycle(max(int(epochs), 1), **dict(zip(keys, nums))))
            except ValueError as exc:
                raise ValueError(f"schedule {text!r}: {exc}") from None
        else:
            raise ValueError(f"unknown schedule {name!r} in {text!r}; expected constant, cosine, "
                             "cosine:T[:MIN], step:S[:GAMMA], multistep:M1:M2...[:gamma=G], "
                             "exp:GAMMA, warmup:W, onecycle[:PCT[:DIV[:FINAL_DIV]]], "
                             "joined by '*'")
    out = parts[0]
    for p in parts[1:]:
        out = out * p
    return out


def _multistep(text: str, args: list) -> MultiStep:
    """``multistep:M1:M2...[:gamma=G]``'s schedule (``args``: the parts after the name)."""
    gamma = 0.1
    if args and args[-1].startswith("gamma="):
        try:
            gamma = float(args[-1][len("gamma="):])
        except ValueError:
            raise ValueError(f"schedule {text!r}: multistep's gamma must be a number, got "
                             f"{args[-1]!r}") from None
        args = args[:-1]
    if not args:
        raise ValueError(f"schedule {text!r}: multistep needs at least one milestone epoch, "
                         "e.g. multistep:82:123 or multistep:15:25:gamma=0.5")
    milestones = []
    for a in args:
        if not a.isdigit():
            raise ValueError(f"schedule {text!r}: multistep's milestones must be whole epochs "
                             f">= 1 (and gamma=G comes last), got {a!r}")
        milestones.append(int(a))
    try:
        return MultiStep(milestones, gamma)
    except ValueError as exc:
        raise ValueError(f"schedule {text!r}: {exc}") from None


# ---- optimizers ----------------------------------------------------------------------------
def clip_grad_norm(backend, grads, max_norm: float) -> float:
    """PyTorch's ``clip_grad_norm_`` on backend arrays: the total L2 norm of all ``grads``
    together, and when ``max_norm / (norm + 1e-6) < 1`` every gradient is scaled in place by that
    factor. Returns the norm before clipping. Only the norm comes back to the host."""
    grads = list(grads)
    norm = math.sqrt(backend.sum_of_squares(grads))
    coef = max_norm / (norm + 1e-6)
    if coef < 1:
        for g in grads:
            backend.scale_(g, coef)
    return norm


class Optimizer:
    """Base: holds the learning rate, the schedule, the optional gradient clipping and the
    per-parameter state."""

    def __init__(self, lr: float, weight_decay: float = 0.0, schedule: Schedule | None = None,
                 clip_grad_norm: float | None = None):
        self.lr = self._check("lr", lr)
        self.weight_decay = self._check("weight_decay", weight_decay)
        if schedule is not None and not isinstance(schedule, Schedule):
            raise TypeError(f"{type(self).__name__}: schedule must be an optim.Schedule (or "
                            f"optim.parse_schedule of a string), got {type(schedule).__name__}")
        self.schedule = schedule or Constant()
        self.clip_grad_norm = None if clip_grad_norm is None else \
            self._check("clip_grad_norm", clip_grad_norm)
        self.current_lr = self.lr
        self.steps = 0
        self._state: dict[int, tuple] = {}

    def _check(self, name, value):
        """``value`` of setting ``name`` checked as ``nbcnn.settings`` says, or an error naming
        this optimizer, the setting and the value."""
        try:
            return registry.get(name).check(value)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{type(self).__name__}: {name} {exc}") from None

    def start_epoch(self, epoch: int) -> None:
        """Set the learning rate for ``epoch`` (0-based) from the schedule."""
        self.current_lr = self.lr * self.schedule.factor(epoch)

    def start_step(self, epoch: int, step: int, steps_per_epoch: int) -> None:
        """Set the learning rate for batch ``step`` (0-based) of ``epoch`` (0-based), an epoch
        having ``steps_per_epoch`` batches; for a per-epoch schedule this is ``start_epoch``."""
        self.current_lr = self.lr * self.schedule.step_factor(epoch, step, steps_per_epoch)

    def step(self, backend, params_and_grads) -> None:
        """Update each (param, grad) pair in place (after clipping the gradients together, if
        ``clip_grad_norm`` is set); ``steps`` counts calls (for Adam and Adagrad)."""
        pairs = list(params_and_grads)
        if self.clip_grad_norm is not None:
            clip_grad_norm(backend, [g for _, g in pairs], self.clip_grad_norm)
        self.steps += 1
        for i, (param, grad) in enumerate(pairs):
            if i not in self._state:
                self._state[i] = self._new_state(backend, param)
            self._update(backend, param, grad, self._state[i])

    def _new_state(self, backend, param) -> tuple:
        return ()

    def _update(self, backend, param, grad, state) -> None:
        raise NotImplementedError

    def state_dict(self, backend) -> dict:
        """What continues this optimizer exactly: the step count, the current learning rate
        and every parameter's state as numpy arrays (None kept where a state slot is unused),
        keyed by the parameter's position in ``step``'s list."""
        return {"steps": self.steps, "current_lr": self.current_lr,
                "state": {i: [None if a is None else backend.to_numpy(a).copy() for a in slots]
                          for i, slots in self._state.items()}}

    def load_state_dict(self, state: dict, backend) -> None:
        """Continue from ``state_dict``'s output, with the arrays moved onto ``backend``."""
        self.steps = int(state["steps"])
        self.current_lr = float(state["current_lr"])
        self._state = {int(i): tuple(None if a is None else backend.from_numpy(a) for a in slots)
                       for i, slots in state["state"].items()}

    def config(self) -> dict:
        return {"name": type(self).__name__.lower(), "lr": self.lr,
                "weight_decay": self.weight_decay, "schedule": repr(self.schedule),
                "clip_grad_norm": self.clip_grad_norm}


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay."""

    def __init__(self, lr: float = _D["sgd"]["lr"], momentum: float = _D["sgd"]["momentum"],
                 nesterov: bool = _D["sgd"]["nesterov"],
                 weight_decay: float = _D["sgd"]["weight_decay"], schedule: Schedule | None = None,
                 clip_grad_norm: float | None = None):
        super().__init__(lr, weight_decay, schedule, clip_grad_norm)
        self.momentum = self._check("momentum", momentum)
        self.nesterov = self._check("nesterov", nesterov)
        if self.nesterov and self.momentum == 0:
            raise ValueError("SGD: nesterov needs momentum > 0")

    def _new_state(self, backend, param):
        return (backend.zeros(param.shape) if self.momentum else None,)

    def _update(self, backend, param, grad, state):
        backend.sgd_step(param, grad, state[0], self.current_lr, self.momentum, self.nesterov,
                         self.weight_decay)

    def config(self):
        return {**super().config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction counted in steps; ``decoupled=True`` is AdamW."""

    def __init__(self, lr: float = _D["adam"]["lr"], beta1: float = _D["adam"]["beta1"],
                 beta2: float = _D["adam"]["beta2"], eps: float = _D["adam"]["eps"],
                 weight_decay: float = _D["adam"]["weight_decay"],
                 decoupled: bool = _D["adam"]["decoupled"],
                 schedule: Schedule | None = None, clip_grad_norm: float | None = None):
        super().__init__(lr, weight_decay, schedule, clip_grad_norm)
        self.beta1 = self._check("beta1", beta1)
        self.beta2 = self._check("beta2", beta2)
        self.eps = self._check("eps", eps)
        self.decoupled = self._check("decoupled", decoupled)

    def _new_state(self, backend, param):
        return (backend.zeros(param.shape), backend.zeros(param.shape))

    def _update(self, backend, param, grad, state):
        m, v = state
        backend.adam_step(param, grad, m, v, self.current_lr, self.beta1, self.beta2, self.eps,
                          self.steps, self.weight_decay, self.decoupled)

    def config(self):
        return {**super().config(), "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
                "decoupled": self.decoupled}


class RMSprop(Optimizer):
    """RMSprop (Hinton) as in PyTorch, with optional momentum."""

    def __init__(self, lr: float = _D["rmsprop"]["lr"], alpha: float = _D["rmsprop"]["alpha"],
                 eps: float = _D["rmsprop"]["eps"], momentum: float = _D["rmsprop"]["momentum"],
                 weight_decay: float = _D["rmsprop"]["weight_decay"],
                 schedule: Schedule | None = None, clip_grad_norm: float | None = None):
        super().__init__(lr, weight_decay, schedule, clip_grad_norm)
        self.alpha = self._check("alpha", alpha)
        self.eps = self._check("eps", eps)
        self.momentum = self._check("momentum", momentum)

    def _new_state(self, backend, param):
        return (backend.zeros(param.shape), backend.zeros(param.shape) if self.momentum else None)

    def _update(self, backend, param, grad, state):
        backend.rmsprop_step(param, grad, state[0], state[1], self.current_lr, self.alpha,
                             self.eps, self.momentum, self.weight_decay)

    def config(self):
        return {**super().config(), "alpha": self.alpha, "eps": self.eps, "momentum": self.momentum}


class Adagrad(Optimizer):
    """Adagrad (Duchi, Hazan & Singer) as in PyTorch: each element's step is divided by the root
    of the sum of its squared gradients (which starts at ``initial_accumulator_value``), and the
    learning rate decays as lr / (1 + (step - 1) * lr_decay)."""

    def __init__(self, lr: float = _D["adagrad"]["lr"],
                 lr_decay: float = _D["adagrad"]["lr_decay"],
                 weight_decay: float = _D["adagrad"]["weight_decay"],
                 initial_accumulator_value: float = _D["adagrad"]["initial_accumulator_value"],
                 eps: float = _D["adagrad"]["eps"],
                 schedule: Schedule | None = None, clip_grad_norm: float | None = None):
        super().__init__(lr, weight_decay, schedule, clip_grad_norm)
        self.lr_decay = self._check("lr_decay", lr_decay)
        self.initial_accumulator_value = self._check(
            "initial_accumulator_value", initial_accumulator_value)
        self.eps = self._check("eps", eps)

    def _new_state(self, backend, param):
        if not self.initial_accumulator_value:
            return (backend.zeros(param.shape),)
        return (backend.from_numpy(np.full(tuple(param.shape), self.initial_accumulator_value)),)

    def _update(self, backend, param, grad, state):
        backend.adagrad_step(param, grad, state[0], self.current_lr, self.lr_decay, self.eps,
                             self.steps, self.weight_decay)

    def config(self):
        return {**super().config(), "lr_decay": self.lr_decay,
                "initial_accumulator_value": self.initial_accumulator_value, "eps": self.eps}


class Adadelta(Optimizer):
    """Adadelta (Zeiler) as in PyTorch: steps scaled by the ratio of running root mean squares
    of past updates and of gradients (decay ``rho``), times ``lr`` (1.0 in the paper)."""

    def __init__(self, lr: float = _D["adadelta"]["lr"], rho: float = _D["adadelta"]["rho"],
                 eps: float = _D["adadelta"]["eps"],
                 weight_decay: float = _D["adadelta"]["weight_decay"],
                 schedule: Schedule | None = None,
                 clip_grad_norm: float | None = None):
        super().__init__(lr, weight_decay, schedule, clip_grad_norm)
        self.rho = self._check("rho", rho)
        self.eps = self._check("eps", eps)

    def _new_state(self, backend, param):
        return (backend.zeros(param.shape), backend.zeros(param.shape))

    def _update(self, backend, param, grad, state):
        square_avg, acc_delta = state
        backend.adadelta_step(param, grad, square_avg, acc_delta, self.current_lr, self.rho,
                              self.eps, self.weight_decay)

    def config(self):
        return {**super().config(), "rho": self.rho, "eps": self.eps}


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "rmsprop": RMSprop, "adagrad": Adagrad,
              "adadelta": Adadelta}


def make(name: str, **settings) -> Optimizer:
    """An optimizer by name ('sgd', 'adam', 'rmsprop', 'adagrad', 'adadelta') with keyword
    settings (the others at their defaults, ``nbcnn.settings``; ``settings.make_optimizer``
    builds one from a run's settings)."""
    try:
        cls = OPTIMIZERS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}") from None
    return cls(**settings)

"""Optimizers (SGD, Adam, RMSprop) and learning-rate schedules.

An optimizer keeps its per-parameter state (velocity, moments) on the model's backend and asks the
backend to update every parameter in place. The learning rate of an epoch is ``lr`` times the
schedule's factor; schedules compose by multiplication::

    optim.SGD(lr=0.1, momentum=0.9, schedule=optim.Warmup(2) * optim.CosineDecay(30))
"""

from __future__ import annotations

import math


# ---- schedules -----------------------------------------------------------------------------
class Schedule:
    """Maps an epoch (0-based) to a factor on the base learning rate."""

    def factor(self, epoch: int) -> float:
        raise NotImplementedError

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


class Product(Schedule):
    def __init__(self, *parts: Schedule):
        self.parts = parts

    def factor(self, epoch):
        return math.prod(p.factor(epoch) for p in self.parts)

    def __repr__(self):
        return " * ".join(map(repr, self.parts))


def parse_schedule(text: str, epochs: int):
    """A schedule from a string: ``constant``, ``cosine`` (over the run's epochs), ``cosine:T``,
    ``cosine:T:MIN``, ``step:S`` / ``step:S:GAMMA``, ``exp:GAMMA``, ``warmup:W``; combined with
    ``*``, e.g. ``warmup:2*cosine``."""
    parts = []
    for piece in str(text).lower().replace(" ", "").split("*"):
        name, *args = piece.split(":")
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
        else:
            raise ValueError(f"unknown schedule {name!r} in {text!r}; expected constant, cosine, "
                             "cosine:T[:MIN], step:S[:GAMMA], exp:GAMMA, warmup:W, joined by '*'")
    out = parts[0]
    for p in parts[1:]:
        out = out * p
    return out


# ---- optimizers ----------------------------------------------------------------------------
class Optimizer:
    """Base: holds the learning rate, the schedule and per-parameter state."""

    def __init__(self, lr: float, weight_decay: float = 0.0, schedule: Schedule | None = None):
        if not lr > 0:
            raise ValueError(f"{type(self).__name__}: lr must be > 0, got {lr!r}")
        if weight_decay < 0:
            raise ValueError(f"{type(self).__name__}: weight_decay must be >= 0, got {weight_decay!r}")
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.schedule = schedule or Constant()
        self.current_lr = self.lr
        self.steps = 0
        self._state: dict[int, tuple] = {}

    def start_epoch(self, epoch: int) -> None:
        """Set the learning rate for ``epoch`` (0-based) from the schedule."""
        self.current_lr = self.lr * self.schedule.factor(epoch)

    def step(self, backend, params_and_grads) -> None:
        """Update each (param, grad) pair in place; ``steps`` counts calls (for Adam)."""
        self.steps += 1
        for i, (param, grad) in enumerate(params_and_grads):
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
                "weight_decay": self.weight_decay, "schedule": repr(self.schedule)}


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay."""

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, schedule: Schedule | None = None):
        super().__init__(lr, weight_decay, schedule)
        if not 0 <= momentum < 1:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {momentum!r}")
        if nesterov and momentum == 0:
            raise ValueError("SGD: nesterov needs momentum > 0")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)

    def _new_state(self, backend, param):
        return (backend.zeros(param.shape) if self.momentum else None,)

    def _update(self, backend, param, grad, state):
        backend.sgd_step(param, grad, state[0], self.current_lr, self.momentum, self.nesterov,
                         self.weight_decay)

    def config(self):
        return {**super().config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction counted in steps; ``decoupled=True`` is AdamW."""

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0, decoupled: bool = False,
                 schedule: Schedule | None = None):
        super().__init__(lr, weight_decay, schedule)
        for name, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0 <= beta < 1:
                raise ValueError(f"Adam: {name} must be in [0, 1), got {beta!r}")
        self.beta1, self.beta2, self.eps, self.decoupled = beta1, beta2, eps, bool(decoupled)

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

    def __init__(self, lr: float = 1e-3, alpha: float = 0.99, eps: float = 1e-8,
                 momentum: float = 0.0, weight_decay: float = 0.0,
                 schedule: Schedule | None = None):
        super().__init__(lr, weight_decay, schedule)
        if not 0 <= alpha < 1:
            raise ValueError(f"RMSprop: alpha must be in [0, 1), got {alpha!r}")
        self.alpha, self.eps, self.momentum = alpha, eps, momentum

    def _new_state(self, backend, param):
        return (backend.zeros(param.shape), backend.zeros(param.shape) if self.momentum else None)

    def _update(self, backend, param, grad, state):
        backend.rmsprop_step(param, grad, state[0], state[1], self.current_lr, self.alpha,
                             self.eps, self.momentum, self.weight_decay)

    def config(self):
        return {**super().config(), "alpha": self.alpha, "eps": self.eps, "momentum": self.momentum}


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "rmsprop": RMSprop}


def make(name: str, **settings) -> Optimizer:
    """An optimizer by name ('sgd', 'adam', 'rmsprop') with keyword settings."""
    try:
        cls = OPTIMIZERS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}") from None
    return cls(**settings)

"""The fault-injection harness of the S6 tests (``test_reliability_faults.py``): ``make_world``
(a step that mutates a nested Module, a Ref argument and a closure Variable, then calls a fault),
the faults (in the body, at trace time, at run time), the injections (compile, dispatch,
execution, write-back), and ``_variables`` / ``_broken`` (Variables left holding deleted arrays
or tracers).
"""

import contextlib
from unittest import mock

import jax
import jax.numpy as jnp
import oracle
from flax import nnx
from hijaxc.runtime import donation as hx_donation
from hijaxc.runtime import steady_state as hx_steady
from hijaxc.runtime import writeback as hx_writeback
from user_code import _Opaque

import hijaxc

try:
    from jax._src import compiler as _jax_compiler
except ImportError:  # pragma: no cover
    _jax_compiler = None


class Sub(nnx.Module):
    def __init__(self):
        self.b = hijaxc.Param(jnp.arange(2.0))


class Model(nnx.Module):
    def __init__(self):
        self.w = hijaxc.Param(jnp.ones(3))
        self.n = hijaxc.Variable(jnp.array(0))
        self.frozen = hijaxc.Variable(jnp.array(7.0), mutable=False)
        self.sub = Sub()


#: A Variable the compiled function does not name: only a helper writes it, through its own
#: globals; the step learns it while tracing (context.view) and threads it, so when the trace then
#: fails the Variable must keep its value.
_FOREIGN = hijaxc.Variable(jnp.array(5.0))
#: Armed by the execution-stage injection: the host callback inside the step raises while set.
_ARMED = [False]
X_GOOD = jnp.arange(3.0)  # warm-up / recovery input
X_BAD = jnp.arange(4.0)  # a new shape: retraces, and trips the trace-time faults below


def _no_fault(m, x):
    pass


def _shape_fault(m, x):
    return m.w[...] @ x  # (3,) @ (4,): a shape error at trace time


def _value_fault(m, x):
    if x.shape[0] == 4:
        raise ValueError("injected user error")


def _interrupt_fault(m, x):
    if x.shape[0] == 4:
        raise KeyboardInterrupt


def _immutable_fault(m, x):
    if x.shape[0] == 4:
        m.frozen[...] = 1.0


def _invalid_value_fault(m, x):  # found when the trace collects the state (after the body)
    if x.shape[0] == 4:
        m.n.value = _Opaque()


def _structural_fault(m, x):
    if x.shape[0] == 4:
        m.extra = hijaxc.Variable(jnp.zeros(2))
        m.sub.c = hijaxc.Param(jnp.ones(1))
        m.sub = Sub()
        raise ValueError("injected user error after structural changes")


def _foreign_fault(m, x):
    if x.shape[0] == 4:
        _FOREIGN[...] += 1.0
        raise ValueError("injected user error after writing an unthreaded Variable")


def _fail_if_armed(n):
    if _ARMED[0]:
        raise RuntimeError("injected runtime failure")


def _runtime_fault(m, x):
    jax.debug.callback(_fail_if_armed, m.n[...])


def make_world(fault):
    """A step that mutates a Module (nested), a Ref argument and a closure Variable, then calls
    ``fault``; and fresh caller state for it."""
    m, r, c = Model(), hijaxc.Ref(jnp.zeros(2)), hijaxc.Variable(jnp.array(100.0))

    def step(m, r, x):
        m.w[...] = m.w[...] * 2 + x[:3]
        m.n[...] += 1
        m.sub.b[...] -= 1.0
        r[...] += 1.0
        c[...] += 10.0
        fault(m, x)
        return m.w[...].sum() + c[...]

    return step, {"m": m, "r": r, "c": c, "foreign": _FOREIGN}


@contextlib.contextmanager
def _inject_compile_failure(jf):
    with mock.patch.object(
        _jax_compiler, "compile_or_get_cached", side_effect=RuntimeError("injected compile failure")
    ):
        yield


def _armed_wrapper(real, armed):
    def call(*args, **kwargs):
        if armed[0]:
            raise RuntimeError("injected dispatch failure")
        return real(*args, **kwargs)

    return call


@contextlib.contextmanager
def _inject_dispatch_failure(jf):
    """Every jitted pure step (cached ones and any ``jax.jit`` hijaxc makes now) raises when called,
    before running."""
    armed = [True]

    class JaxProxy:
        def __getattr__(self, name):
            return getattr(jax, name)

        @staticmethod
        def jit(*a, **k):
            return _armed_wrapper(jax.jit(*a, **k), armed)

    for entry in jf.step.cache.values():
        for mask, compiled in list(entry.jitted.items()):
            entry.jitted[mask] = compiled._replace(jitted=_armed_wrapper(compiled.jitted, armed))
    try:
        with mock.patch.object(hx_donation, "jax", JaxProxy()):
            yield
    finally:
        armed[0] = False


@contextlib.contextmanager
def _inject_runtime_failure(jf):
    """A real execution-time failure: the host callback compiled into the step raises."""
    _ARMED[0] = True
    try:
        yield
    finally:
        _ARMED[0] = False


@contextlib.contextmanager
def _inject_writeback_failure(jf):
    """The write-back raises at its third Variable write, after two succeeded (slow path: inside
    ``WriteBack.apply``; steady state: the fast path's direct writes)."""
    n = [0]
    real_state_set, real_call_set = hx_writeback._set_raw, hx_steady._set_raw

    def failing(real):
        def set_raw(v, x):
            n[0] += 1
            if n[0] >= 3:
                raise RuntimeError("injected write-back failure")
            real(v, x)

        return set_raw

    real_apply = hx_writeback.WriteBack.apply

    def apply(self, objects, leaves):  # only the write-back itself, not merge during the trace
        with mock.patch.object(hx_writeback, "_set_raw", failing(real_state_set)):
            return real_apply(self, objects, leaves)

    def scatter(objects, values):  # the steady state's write pass, one Variable at a time
        for o, x in zip(objects, values):
            failing_call_set(o, x)

    failing_call_set = failing(real_call_set)
    with (
        mock.patch.object(hx_writeback.WriteBack, "apply", apply),
        mock.patch.object(hx_steady, "_set_raw", failing_call_set),
        mock.patch.object(hx_steady, "_scatter", scatter),
    ):
        yield


@contextlib.contextmanager
def _inject_apply_failure(jf):
    with mock.patch.object(
        hx_writeback.WriteBack, "apply", side_effect=RuntimeError("injected write-back failure")
    ):
        yield


def _nothing(jf):
    return contextlib.nullcontext()


def _variables(world):
    """(path, Variable or Ref) for everything reachable from ``world``."""
    out, seen = [], set()

    def walk(x, path):
        if id(x) in seen:
            return
        if isinstance(x, (nnx.Variable, hijaxc.Ref)):
            seen.add(id(x))
            out.append((path, x))
        elif isinstance(x, oracle.PYTREE):
            seen.add(id(x))
            for k, c in vars(x).items():
                if not k.startswith("_"):
                    walk(c, f"{path}.{k}")
        elif isinstance(x, dict):
            for k, c in x.items():
                walk(c, f"{path}[{k!r}]")

    walk(world, "world")
    return out


def _broken(v):
    """'deleted' / 'tracer' when a Variable or Ref holds a deleted array or a leaked tracer."""
    raw = v._value if isinstance(v, hijaxc.Ref) else v.get_raw_value()
    if isinstance(raw, hijaxc.Ref):
        raw = raw._value
    for a in jax.tree.leaves(raw):
        if isinstance(a, jax.core.Tracer):
            return "tracer"
        if isinstance(a, jax.Array) and a.is_deleted():
            return "deleted"
    return None

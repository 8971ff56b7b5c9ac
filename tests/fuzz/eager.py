"""The eager reference of a generated program (S7): lax control flow runs as Python control flow,
nested jits as plain calls, and ``jax.grad`` / ``jax.value_and_grad`` of a loss that writes state
compute the gradient with JAX's own ``grad`` (on the loss as written), put every Variable and Ref
the loss can reach back as it was (that pass stored tracers), and then run the loss once more on
the primal values: the mutation is applied once, with the primal values, as S7 asks."""
import contextlib
import copy
import functools
import types

import jax
import oracle
from flax import nnx
from flax.nnx import tracers

import hijaxc

#: extra roots of the eager run (the case's arguments and state), set by the runner
ROOTS = []

_REAL = {"grad": jax.grad, "value_and_grad": jax.value_and_grad}


def _code_names(code, out):
    out.update(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            _code_names(c, out)
    return out


def reachable_state(roots):
    """Every Variable and Ref reachable from ``roots``: containers, graph nodes, bound methods,
    partials and the closure cells and globals of the generated program's functions."""
    found, seen = [], set()

    def walk(x, depth):
        if id(x) in seen or depth > 20:
            return
        seen.add(id(x))
        if isinstance(x, (hijaxc.Ref, nnx.Variable)):
            found.append(x)
            return
        if oracle._is_node(x):
            for v in vars(x).values():
                walk(v, depth + 1)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v, depth + 1)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v, depth + 1)
        elif isinstance(x, types.MethodType):
            walk(x.__self__, depth + 1)
            walk(x.__func__, depth + 1)
        elif isinstance(x, functools.partial):
            walk((x.func, x.args, x.keywords), depth + 1)
        elif isinstance(x, types.FunctionType) and x.__module__.startswith("hxfuzz_"):
            for cell in x.__closure__ or ():
                try:
                    walk(cell.cell_contents, depth + 1)
                except ValueError:  # an empty cell
                    pass
            g = x.__globals__
            for name in sorted(_code_names(x.__code__, set())):
                if name in g and not isinstance(g[name], types.ModuleType):
                    walk(g[name], depth + 1)

    walk(roots, 0)
    return found


def _save(state):
    saved = []
    for v in state:
        if isinstance(v, hijaxc.Ref):
            saved.append(v[...])
        elif isinstance(v, hijaxc.Variable):
            raw = v.get_raw_value()
            raw = raw[...] if isinstance(raw, hijaxc.Ref) else raw
            saved.append(copy.copy(raw) if isinstance(raw, (dict, list)) else raw)
        else:
            saved.append(v.value)
    return saved


def _restore(state, saved):
    for v, old in zip(state, saved):
        if isinstance(v, hijaxc.Ref):
            v[...] = old
        elif isinstance(v, hijaxc.Variable):
            if v.mutable:
                v.set_value(old)
        else:
            v.value = old


def _py_value_and_grad(fun, argnums=0, has_aux=False, **kw):
    @functools.wraps(fun)
    def wrapped(*args, **kwargs):
        state = reachable_state([ROOTS, fun, args, kwargs])
        saved = _save(state)
        # flax refuses writes to its Variables from inside a transform it did not start: let the
        # gradient pass write (tracers, put back right after)
        valid = tracers.TraceState.is_valid
        tracers.TraceState.is_valid = lambda self: True
        try:
            _, grads = _REAL["value_and_grad"](fun, argnums=argnums, has_aux=has_aux, **kw)(
                *args, **kwargs)
        finally:
            tracers.TraceState.is_valid = valid
            _restore(state, saved)
        return fun(*args, **kwargs), grads  # the mutation, once, with the primal values

    return wrapped


def _py_grad(fun, argnums=0, has_aux=False, **kw):
    vg = _py_value_and_grad(fun, argnums=argnums, has_aux=has_aux, **kw)

    @functools.wraps(fun)
    def wrapped(*args, **kwargs):
        out, grads = vg(*args, **kwargs)
        return (grads, out[1]) if has_aux else grads

    return wrapped


@contextlib.contextmanager
def python_reference():
    """Python control flow (the oracle's) plus the grad reference above."""
    from oracle import python_control_flow  # the Python reference control flow (S7)

    saved = jax.grad, jax.value_and_grad
    with python_control_flow():
        jax.grad, jax.value_and_grad = _py_grad, _py_value_and_grad
        try:
            yield
        finally:
            jax.grad, jax.value_and_grad = saved

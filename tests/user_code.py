"""User code for the reliability tests: the functions the S10 bad-input table
(``test_reliability_inputs.py``) compiles, which the concurrency tests transform too.  Error
messages must cite their ``file:line``: ``HERE`` is this file, and the lines are found by text
(``line_of``: the ``# <- ...`` markers), not hard-coded.  ``_G`` is never rebound (the rebinding
in ``_rebind_global`` is rejected at transform time), so a test that imports it reads the object
the functions here use.
"""

import inspect

import jax.numpy as jnp

import hijaxc

HERE = __file__


def line_of(fn, text):
    """The line (in this file) of the first line of ``fn``'s source that contains ``text``."""
    lines, start = inspect.getsourcelines(fn)
    for i, line in enumerate(lines):
        if text in line:
            return start + i
    raise AssertionError(f"{text!r} not in {fn.__name__}")


def def_line(fn):
    return fn.__code__.co_firstlineno


def var(x, **kw):
    return hijaxc.Variable(x if isinstance(x, (dict, list)) else jnp.asarray(x), **kw)


class _Opaque:
    pass


def _gen_fn(v):
    v[...] += 1
    yield v[...]


async def _async_fn(v):
    v[...] += 1


def _yield_inside(v):
    v[...] += 1
    if v.shape == (3,):
        return v[...]
    yield v[...]  # <- yield here


def _store_str(v):
    v[...] += 1
    v[...] = "not an array"  # <- store str


def _store_object(v):
    v[...] += 1
    v.value = _Opaque()  # <- store object


def _store_str_in_dict(d):
    d["k"] = "not an array"  # <- store in dict


def _write_immutable(v):
    v[...] = v[...] + 1  # <- immutable write


def _two(a, b):
    a[...] += 1
    return b[...]


def _call_aliased(v):
    return hijaxc.jit(_two, aliasing="error")(v, v)  # <- aliased call


_G = var(jnp.zeros(3))


def _rebind_global(x):
    global _G
    _G[...] += x
    _G = var(jnp.ones(3))  # <- rebinds the global


def _ref_immutable():
    return hijaxc.Variable(jnp.zeros(3), ref=True, mutable=False)  # <- ref + immutable


def _call_exec_function(fn, v):
    return hijaxc.jit(fn)(v, jnp.ones(3))  # <- call of the exec'd function

"""Reliability, S10 (and S3, S4): the bad-input table (error type, the object named, the user's
``file:line``), functions without source, and Variables changing dtype and shape between calls.
The user functions the table compiles are in ``user_code.py``, whose lines the messages must cite.

Tests marked ``xfail(strict=True)`` assert the *correct* behaviour and fail today; their reason
says what goes wrong.
"""

import warnings

import jax.numpy as jnp
import numpy as np
import oracle
import pytest
from user_code import (
    _G,
    HERE,
    _async_fn,
    _call_aliased,
    _call_exec_function,
    _gen_fn,
    _rebind_global,
    _ref_immutable,
    _store_object,
    _store_str,
    _store_str_in_dict,
    _two,
    _write_immutable,
    _yield_inside,
    def_line,
    line_of,
    var,
)

import hijaxc

# ==================================================================================================
# 2. Bad input table (S3, S4, S10): error type, the object named, the user's file:line
# ==================================================================================================
_ROW_BUGS = {}


def _rows():
    """name -> (make(v) -> run, error type, names the message may use, lines it may cite)."""
    jit_call = lambda fn, *a: lambda: hijaxc.jit(fn)(*a)  # noqa: E731
    return {
        "generator": (
            lambda v: jit_call(_gen_fn, v),
            hijaxc.UnsupportedSyntaxError,
            ("_gen_fn",),
            (def_line(_gen_fn), line_of(_gen_fn, "yield")),
        ),
        "async_def": (
            lambda v: jit_call(_async_fn, v),
            hijaxc.UnsupportedSyntaxError,
            ("_async_fn",),
            (def_line(_async_fn),),
        ),
        "yield_inside": (
            lambda v: jit_call(_yield_inside, v),
            hijaxc.UnsupportedSyntaxError,
            ("_yield_inside", "yield"),
            (line_of(_yield_inside, "<- yield here"),),
        ),
        "store_str_via_setitem": (
            lambda v: jit_call(_store_str, v),
            hijaxc.InvalidValueError,
            ("Variable", "args[0]"),
            (line_of(_store_str, "<- store str"),),
        ),
        "store_object_via_value": (
            lambda v: jit_call(_store_object, v),
            hijaxc.InvalidValueError,
            ("Variable", "args[0]"),
            (line_of(_store_object, "<- store object"),),
        ),
        "store_str_in_dict_variable": (
            lambda v: jit_call(_store_str_in_dict, var({"k": jnp.zeros(())})),
            hijaxc.InvalidValueError,
            ("Variable", "args[0]"),
            (line_of(_store_str_in_dict, "<- store in dict"),),
        ),
        "immutable_eager": (
            lambda v: lambda: _write_immutable(var(1.0, mutable=False)),
            hijaxc.ImmutableVariableError,
            ("Variable", "args[0]"),
            (line_of(_write_immutable, "<- immutable write"),),
        ),
        "immutable_inside": (
            lambda v: jit_call(_write_immutable, var(1.0, mutable=False)),
            hijaxc.ImmutableVariableError,
            ("Variable", "args[0]"),
            (line_of(_write_immutable, "<- immutable write"),),
        ),
        "aliasing_error": (
            lambda v: lambda: _call_aliased(v),
            hijaxc.AliasingError,
            ("args[0]",),
            (line_of(_call_aliased, "<- aliased call"), def_line(_two)),
        ),
        "global_rebinding": (
            lambda v: jit_call(_rebind_global, jnp.ones(3)),
            hijaxc.UnsupportedSyntaxError,
            ("_G",),
            (line_of(_rebind_global, "<- rebinds the global"),),
        ),
        "ref_and_immutable": (
            lambda v: _ref_immutable,
            hijaxc.InvalidValueError,
            ("Variable", "ref"),
            (line_of(_ref_immutable, "<- ref + immutable"),),
        ),
    }


ROWS = _rows()


@pytest.mark.parametrize(
    "row",
    [
        pytest.param(
            r, marks=[pytest.mark.xfail(strict=True, reason=_ROW_BUGS[r])] if r in _ROW_BUGS else []
        )
        for r in ROWS
    ],
)
def test_bad_input(row):
    make, exc, names, lines = ROWS[row]
    v = var(jnp.arange(3.0))
    g_before = np.asarray(_G[...])
    run = make(v)
    with pytest.raises(exc) as e:
        run()
    assert isinstance(e.value, hijaxc.HijaxcError), type(e.value).__mro__
    msg = str(e.value)
    assert any(n in msg for n in names), f"the message names none of {names}: {msg}"
    cited = [f"{HERE}:{ln}" for ln in lines]
    assert any(c in msg for c in cited), f"the message cites none of {cited}: {msg}"
    # S6: the failed call changed nothing
    np.testing.assert_array_equal(v[...], np.arange(3.0))
    np.testing.assert_array_equal(_G[...], g_before)
    if row == "aliasing_error":
        assert "args[1]" in msg, msg


def test_bad_input_nested_generator_helper_is_not_rejected():
    """A generator *helper* defined inside the body is ordinary Python that traces fine: only the
    compiled function itself being a generator is unsupported."""

    def f(vs):
        def each():
            for v in vs:
                yield v

        for v in each():
            v[...] += 1.0
        return sum(v[...] for v in each())

    oracle.check_eager(lambda: (f, ([var(1.0), var(2.0)],)), calls=2)


_EXEC_SRC = "def ex(v, x):\n    v[...] += x\n    return v[...] * 2\n"


def test_source_unavailable_warns_at_the_call_and_still_threads_arguments():
    ns = {}
    exec(_EXEC_SRC, {"jnp": jnp}, ns)
    v = var(jnp.arange(3.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = _call_exec_function(ns["ex"], v)
    np.testing.assert_allclose(v[...], [1.0, 2.0, 3.0])  # the write to the argument is kept
    np.testing.assert_allclose(out, [2.0, 4.0, 6.0])
    mine = [w for w in caught if "ex" in str(w.message) and "source" in str(w.message)]
    assert len(mine) == 1, [str(w.message) for w in caught]
    w = mine[0]
    assert issubclass(w.category, UserWarning)
    assert "<string>" in str(w.message)
    where = (w.filename, w.lineno)
    assert where == (HERE, line_of(_call_exec_function, "<- call of the exec'd function")), (
        f"the warning is attributed to {where[0]}:{where[1]}, not to the user's call"
    )


def test_variable_dtype_and_shape_change_between_calls_retraces_and_stays_correct():
    v = var(jnp.zeros(3, jnp.float32))

    @hijaxc.jit
    def f(v):
        v[...] = v[...] * 2 + 1
        return v[...].sum()

    seq = [
        jnp.zeros(3, jnp.float32),
        jnp.zeros(3, jnp.int32),
        jnp.zeros((2, 2), jnp.float32),
        jnp.zeros(3, jnp.float32),
        jnp.zeros(5, jnp.bfloat16),
        jnp.zeros((2, 2), jnp.float32),
    ]
    for value in seq:
        v.value = value
        for k in range(3):
            out = f(v)
            expected = np.full(value.shape, 2 ** (k + 1) - 1)
            assert v[...].dtype == value.dtype and v[...].shape == value.shape
            np.testing.assert_allclose(np.asarray(v[...], np.float32), expected)
            np.testing.assert_allclose(float(out), expected.sum())
    assert f.step.stats["traces"] <= 2 * 4  # one per (dtype, shape) and donation mask, not per call

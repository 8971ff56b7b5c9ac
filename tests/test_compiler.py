"""The compiler's public surface (SPEC "Public API", S8 transform caching, S10): ``hijaxc.jit``'s
forms and methods, ``show``, ``make_jaxpr``, ``python -m hijaxc show``, unsupported syntax, the
no-source fallback, tracebacks that point at the user's code, and leaked tracers."""

import ast
import functools
import linecache
import re
import traceback
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import hijaxc
from hijaxc import cache as hx_cache
from hijaxc import parse as hx_parse


def var(x, **kw):
    return hijaxc.Variable(jnp.asarray(x), **kw)


def line_of(fn, text):
    """The line number in this file of the first line of ``fn`` containing ``text``."""
    import inspect

    lines, start = inspect.getsourcelines(fn)
    for i, line in enumerate(lines):
        if text in line:
            return start + i
    raise AssertionError(f"{text!r} not in {fn.__name__}")


# --------------------------------------------------------------------------------------------------
# hijaxc.jit: forms, methods, caching
# --------------------------------------------------------------------------------------------------
def bump(v, x):
    v[...] += x
    return v[...] * 2


def test_bare_and_configured_decorator():
    @hijaxc.jit
    def f(v):
        v[...] += 1

    @hijaxc.jit(static_argnames="n", donate="auto", aliasing="share")
    def g(v, n=2):
        for _ in range(n):
            v[...] *= 2

    v = var(1)
    f(v)
    g(v, n=3)
    assert int(v[...]) == 16
    assert f.__wrapped__.__name__ == "f" and f.__name__ == "f"


def test_lower_eval_shape_trace_do_not_touch_state():
    jf = hijaxc.jit(bump)
    v, x = var([1.0, 2.0]), jnp.array([1.0, 1.0])
    held = v.get_value()
    text = jf.lower(v, x).as_text()
    assert "func" in text or "module" in text
    shape = jf.eval_shape(v, x)
    assert shape.shape == (2,) and shape.dtype == jnp.float32
    if hasattr(jax.jit(lambda a: a), "trace"):
        assert jf.trace(v, x) is not None
    assert v.get_value() is held  # introspection never writes back


def test_jit_of_partial_and_of_jit():
    v = var(0.0)
    p = hijaxc.jit(functools.partial(bump, v))
    np.testing.assert_allclose(p(jnp.array(2.0)), 4.0)
    jj = hijaxc.jit(hijaxc.jit(bump))
    jj(v, jnp.array(1.0))
    assert float(v[...]) == 3.0


class Acc(nnx.Module):
    def __init__(self, start):
        self.total = var(start)

    @hijaxc.jit
    def add(self, x):
        self.total[...] += x
        return self.total[...]


def test_method_decorator_per_instance():
    a, b = Acc(0.0), Acc(100.0)
    a.add(jnp.array(1.0))
    b.add(jnp.array(2.0))
    a.add(jnp.array(1.0))
    assert float(a.total[...]) == 2.0 and float(b.total[...]) == 102.0
    assert Acc.add.step.stats["traces"] <= 2


def test_transform_once_per_code_object():
    def make(v):
        def f(x):
            v[...] += x
            return v[...]

        return f

    a, b = var(0.0), var(10.0)
    fa, fb = make(a), make(b)
    parses, transforms = hx_parse.PARSE_COUNT[0], hx_cache.TRANSFORMS[0]
    hijaxc.jit(fa)(jnp.array(1.0))
    assert hx_parse.PARSE_COUNT[0] == parses + 1 and hx_cache.TRANSFORMS[0] == transforms + 1
    hijaxc.jit(fb)(jnp.array(1.0))  # same code, other closure cells: no new transform
    jfa = hijaxc.jit(fa)
    for _ in range(3):
        jfa(jnp.array(1.0))
    assert hx_parse.PARSE_COUNT[0] == parses + 1 and hx_cache.TRANSFORMS[0] == transforms + 1
    assert float(a[...]) == 4.0 and float(b[...]) == 11.0


G_LATE = None


def _reads_late_global(x):
    G_LATE[...] += x
    return G_LATE[...]


def test_globals_resolved_at_call_time():
    global G_LATE
    jf = hijaxc.jit(_reads_late_global)  # decorated while the global is still None
    G_LATE = var(1.0)
    jf(jnp.array(1.0))
    assert float(G_LATE[...]) == 2.0
    first = G_LATE
    G_LATE = var(10.0)  # rebinding outside is seen by the next call
    jf(jnp.array(1.0))
    assert float(G_LATE[...]) == 11.0 and float(first[...]) == 2.0


def test_subscript_forms_rewritten():
    def f(m, d, idx):
        m[0, 1] += 1.0
        m[::2, 0] = jnp.array([7.0, 8.0])
        m[idx, 2] *= 10.0
        d["k"][1] = 5.0
        d["k"][...] += 1.0
        return m[...]

    m = var(jnp.ones((3, 3)))
    d = {"k": var(jnp.zeros(2))}
    hijaxc.jit(f)(m, d, jnp.array([1, 2]))
    np.testing.assert_allclose(m[...], [[7, 2, 1], [1, 1, 10], [8, 1, 10]])
    np.testing.assert_allclose(d["k"][...], [1, 6])


def test_annotations_and_defaults_kept():
    def f(v: hijaxc.Variable, x: jax.Array = jnp.array(2.0), *, k: int = 3) -> jax.Array:  # noqa: B008 - the default is under test
        v[...] += x * k
        return v[...]

    v = var(0.0)
    hijaxc.jit(f)(v)
    hijaxc.jit(f)(v, jnp.array(1.0), k=1)
    assert float(v[...]) == 7.0


# --------------------------------------------------------------------------------------------------
# S10: unsupported syntax
# --------------------------------------------------------------------------------------------------
def _rejects(fn, *args):
    """Unsupported syntax may be reported at decoration or at the first call: accept either."""
    with pytest.raises(hijaxc.UnsupportedSyntaxError) as e:
        hijaxc.jit(fn)(*args)
    return str(e.value)


def test_unsupported_syntax_error_types():
    assert issubclass(hijaxc.UnsupportedSyntaxError, SyntaxError)
    assert issubclass(hijaxc.UnsupportedSyntaxError, hijaxc.HijaxcError)


def test_generator_rejected():
    def gen(v):
        v[...] += 1
        yield v[...]

    msg = _rejects(gen, var(0))
    assert __file__ in msg, msg


def test_yield_from_rejected():
    def gen(v):
        yield from [v[...]]

    assert __file__ in _rejects(gen, var(0))


def test_async_rejected():
    async def coro(v):
        v[...] += 1

    assert __file__ in _rejects(coro, var(0))


G_VAR = var(0)


def _rebinds_global():
    global G_VAR
    G_VAR = var(1)


def _mutates_global_in_place():
    global G_VAR
    G_VAR[...] += 1


def test_global_rebinding_of_threaded_variable_rejected():
    msg = _rejects(_rebinds_global)
    assert f"{__file__}:{line_of(_rebinds_global, 'G_VAR = var(1)')}" in msg, msg
    assert "G_VAR" in msg


def test_global_declaration_with_in_place_mutation_works():
    before = int(G_VAR[...])
    hijaxc.jit(_mutates_global_in_place)()
    assert int(G_VAR[...]) == before + 1


def test_nonlocal_declaration_with_in_place_mutation_works():
    v = var(0)

    def f():
        nonlocal v
        v[...] += 2

    hijaxc.jit(f)()
    assert int(v[...]) == 2


def test_nonlocal_rebinding_of_threaded_variable_rejected():
    v = var(0)

    def f():
        nonlocal v
        v = var(5)

    msg = _rejects(f)
    assert f"{__file__}:{line_of(f, 'v = var(5)')}" in msg, msg
    assert int(v[...]) == 0


# --------------------------------------------------------------------------------------------------
# show, make_jaxpr, python -m hijaxc show
# --------------------------------------------------------------------------------------------------
def test_show_is_valid_python_with_origin_comments():
    text = hijaxc.show(bump)
    ast.parse(text)
    line = line_of(bump, "v[...] += x")
    assert f"# {__file__}:{line}" in text, text
    assert f"# {__file__}:{line + 1}" in text, text
    comments = re.findall(r"# (.+):(\d+)$", text, flags=re.M)
    assert comments and all(c[0] == __file__ for c in comments)


def test_show_with_arguments_lists_threaded_objects():
    counter = var(0)

    def f(model, x):
        counter[...] += 1
        return model(x)

    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    text = hijaxc.show(hijaxc.jit(f), model, jnp.ones((1, 2)))
    ast.parse(text)
    assert "counter" in text and "model" in text
    assert "Linear" in text and "Variable" in text
    assert int(counter[...]) == 0  # show runs nothing


def test_show_lambda_and_method():
    f = lambda v: v.set_value(v[...] + 1)  # noqa: E731
    text = hijaxc.show(f)
    ast.parse(text)
    assert f"# {__file__}:" in text
    text = hijaxc.show(Acc.add)
    ast.parse(text)
    assert f"# {__file__}:{line_of(Acc.add.__wrapped__, 'self.total[...] += x')}" in text


def test_make_jaxpr_shows_threaded_state():
    v = var(jnp.zeros(2))
    closed = hijaxc.make_jaxpr(bump)(v, jnp.ones(2))
    jaxpr = closed.jaxpr
    assert len(jaxpr.invars) == 2  # v's value and x
    assert len(jaxpr.outvars) == 2  # v's new value and the output
    assert "add" in str(closed)
    assert float(jnp.sum(v[...])) == 0.0  # nothing written back


def test_make_jaxpr_closure_state_is_an_input():
    c = var(jnp.zeros(3))

    def f(x):
        c[...] = c[...] + x

    closed = hijaxc.make_jaxpr(f)(jnp.ones(3))
    assert len(closed.jaxpr.invars) == 2 and len(closed.jaxpr.outvars) == 1
    pure = hijaxc.make_jaxpr(lambda x: x * 2)(jnp.ones(3))
    assert len(pure.jaxpr.invars) == 1 and len(pure.jaxpr.outvars) == 1


def test_command_line_show(tmp_path, capsys):
    src = tmp_path / "user_mod.py"
    src.write_text(
        "import hijaxc\n\n\n@hijaxc.jit\ndef step(v, x):\n    v[...] += x\n    return v[...]\n"
    )
    from hijaxc.__main__ import main

    assert main(["show", f"{src}:step"]) == 0
    out = capsys.readouterr().out
    ast.parse(out)
    assert f"# {src}:6" in out


# --------------------------------------------------------------------------------------------------
# No source: fallback with a warning
# --------------------------------------------------------------------------------------------------
def _exec_factory():
    ns = {}
    exec(
        "def make(v):\n"
        "    def f(w, x):\n"
        "        v[...] += x\n"
        "        w[...] = w[...] * 2\n"
        "        return v[...]\n"
        "    return f\n",
        ns,
    )
    return ns["make"]


def test_no_source_falls_back_with_warning_and_threads_closure():
    v, w = var(jnp.zeros(2)), var(jnp.ones(2))
    f = _exec_factory()(v)
    jf = hijaxc.jit(f)
    with pytest.warns(UserWarning, match="source"):
        out = jf(w, jnp.array([1.0, 2.0]))
    np.testing.assert_allclose(out, [1, 2])
    np.testing.assert_allclose(v[...], [1, 2])  # closure Variable threaded and written back
    np.testing.assert_allclose(w[...], [2, 2])
    jf(w, jnp.array([1.0, 2.0]))
    np.testing.assert_allclose(v[...], [2, 4])
    assert "source" in hijaxc.show(f)


# --------------------------------------------------------------------------------------------------
# Errors from user code, linecache, leaked tracers
# --------------------------------------------------------------------------------------------------
class UserError(Exception):
    pass


def _raises_inside(v):
    v[...] += 1
    raise UserError("raised by user code")


def test_user_exception_traceback_shows_user_file_and_line():
    try:
        hijaxc.jit(_raises_inside)(var(0))
    except UserError:
        tb = traceback.format_exc()
    else:
        pytest.fail("no exception")
    line = line_of(_raises_inside, "raise UserError")
    assert __file__ in tb
    assert f"line {line}" in tb or f"{__file__}:{line}" in tb, tb
    assert 'raise UserError("raised by user code")' in tb


def test_user_error_inside_nested_function_traceback():
    def f(v):
        def inner():
            return v[...] @ jnp.ones(5)  # shape error

        return inner()

    with pytest.raises(TypeError):
        try:
            hijaxc.jit(f)(var(jnp.ones(3)))
        except TypeError:
            tb = traceback.format_exc()
            raise
    assert __file__ in tb and "v[...] @ jnp.ones(5)" in tb, tb


def test_generated_code_registered_in_linecache():
    def f(v):
        v[...] += 3

    hijaxc.jit(f)(var(0))
    names = [
        k
        for k in linecache.cache
        if k.startswith("<hijaxc generated")
        and ".f " in k
        and "test_generated_code_registered_in_linecache" in k
    ]
    assert names, [k for k in linecache.cache if "hijaxc" in k]
    text = "".join(linecache.getlines(names[-1]))
    ast.parse(text)
    assert "__hx.setitem" in text or "setitem" in text


class _Box:
    pass


_BOX = _Box()


def _leaks(x):
    _BOX.val = x * 2
    return x


def test_leaked_tracer_reported():
    with pytest.raises(hijaxc.TracerLeakError) as e:
        hijaxc.jit(_leaks)(jnp.ones(2))
    assert __file__ in str(e.value)
    assert not isinstance(getattr(_BOX, "val", None), jax.core.Tracer)


def test_immutable_error_inside_jit_names_generated_line_as_user_line():
    def f(v):
        v[...] = v[...] + 1

    with pytest.raises(hijaxc.ImmutableVariableError) as e:
        hijaxc.jit(f)(var(0, mutable=False))
    assert f"{__file__}:{line_of(f, 'v[...] = v[...] + 1')}" in str(e.value)
    assert "hijaxc generated" not in str(e.value)


def test_warnings_from_fallback_do_not_repeat_per_call():
    f = _exec_factory()(var(0.0))
    jf = hijaxc.jit(f)
    with pytest.warns(UserWarning):
        jf(var(1.0), jnp.array(1.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jf(var(1.0), jnp.array(1.0))
    assert not [w for w in caught if "source" in str(w.message)]

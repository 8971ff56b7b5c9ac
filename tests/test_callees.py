"""Calls from compiled code into the user's other functions (runtime/callees.py,
hijaxc/passes/callees.py).

A Module method or a helper that runs a JAX transform over state it reaches must thread that state
as if the transform were written in the decorated function itself (S7); the eager run (lax control
flow as Python loops) is the oracle.
"""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hijaxc.runtime import callees
from oracle import check_cf, python_control_flow

import hijaxc
from hijaxc import api, parse

X3 = jnp.array([0.5, -1.0, 2.0])


class Counter(nnx.Module):
    def __init__(self):
        self.w = hijaxc.Variable(jnp.zeros(3))
        self.n = hijaxc.Variable(jnp.array(0, jnp.int32))

    def bump(self, x):
        def body(i, c):
            self.w[...] += x * (i + 1)
            self.n[...] += 1
            return c + 1.0

        return jax.lax.fori_loop(0, 3, body, 0.0)


def test_method_running_fori_loop_over_self_called_directly():
    def make():
        m = Counter()

        def f(x):
            return m.bump(x) * 2.0

        return f, (X3,), (m,)

    check_cf(make, calls=2)


def test_method_running_fori_loop_called_inside_a_compiled_loop_body():
    def f(m, x):
        def body(i, c):
            return c + m.bump(x)

        return jax.lax.fori_loop(0, 2, body, 0.0)

    check_cf(lambda: (f, (Counter(), X3)), calls=2)


class Stacked(nnx.Module):
    """Layers stacked on a leading axis, applied with ``jax.lax.scan`` inside ``__call__``."""

    def __init__(self, n, d):
        self.w = hijaxc.Param(jnp.stack([jnp.eye(d) * (0.5 + 0.1 * k) for k in range(n)]))
        self.calls = hijaxc.Variable(jnp.array(0, jnp.int32))
        self.seen = hijaxc.Variable(jnp.zeros(n))

    def __call__(self, x):
        def layer(h, w):
            self.calls[...] += 1
            return jnp.tanh(h @ w), jnp.sum(h)

        h, sums = jax.lax.scan(layer, x, self.w[...])
        self.seen[...] = sums
        return h


class Outer(nnx.Module):
    def __init__(self):
        self.body = Stacked(4, 3)
        self.head = hijaxc.Param(jnp.ones(3))

    def __call__(self, x):
        return self.body(x) @ self.head[...]


def test_module_call_with_scan_over_self_nested_two_modules_deep():
    def make():
        model = Outer()

        def f(x):
            return model(x)

        return f, (X3,), (model,)

    check_cf(make, calls=3)


def _loss_with_stats(model, x):
    # a helper defined at module level (not in the compiled function): its grad must thread the
    # statistics the forward pass updates
    def loss(head):
        y = model.body(x)
        return jnp.sum((y * head) ** 2)

    return jax.value_and_grad(loss)(model.head[...])


def test_helper_running_grad_that_updates_module_state():
    def make():
        model = Outer()

        def step(x):
            value, g = _loss_with_stats(model, x)
            model.head[...] -= 0.1 * g
            return value

        return step, (X3,), (model,)

    check_cf(make, calls=2)


class Base(nnx.Module):
    def __init__(self):
        self.acc = hijaxc.Variable(jnp.zeros(3))
        self.__scale = 2.0  # a private (mangled) attribute

    def add(self, x):
        def body(i, c):
            self.acc[...] += x * self.__scale
            return c

        return jax.lax.fori_loop(0, 2, body, 0)


class Child(Base):
    def add(self, x):
        super().add(x)  # zero-argument super(): needs the class cell outside the class body
        return self.__private_helper(x)

    def __private_helper(self, x):
        return jax.lax.cond(x[0] > 0, lambda: self.acc[...], lambda: -self.acc[...])


def test_super_and_private_names_in_converted_methods():
    check_cf(lambda: (lambda m, x: m.add(x), (Child(), X3)), calls=2)


def test_super_and_private_names_in_a_compiled_method():
    class Jitted(Child):
        @hijaxc.jit
        def add(self, x):
            super().add(x)
            return self._Child__private_helper(x) + self.__twice()

        def __twice(self):
            return self.acc[...] * 2.0

    m, ref = Jitted(), Child()
    out = m.add(X3)
    with python_control_flow():  # the eager reference: lax control flow as Python loops
        with_ref = Child.add(ref, X3)
    np.testing.assert_allclose(m.acc[...], ref.acc[...])
    np.testing.assert_allclose(out, with_ref + 2.0 * ref.acc[...])


def _counting(fn):  # a user-defined decorator: the wrapper is converted, then the function
    @functools.wraps(fn)
    def wrapper(*args):
        return fn(*args)

    return wrapper


@_counting
def _decorated_bump(v, x):
    def body(i, c):
        v[...] += x
        return c

    return jax.lax.fori_loop(0, 2, body, 0)


def test_decorated_helper_and_partial_are_converted():
    def make():
        v = hijaxc.Variable(jnp.zeros(3))
        w = hijaxc.Variable(jnp.ones(3))

        def f(x):
            _decorated_bump(v, x)
            functools.partial(_decorated_bump, w)(x * 2)
            return v[...] + w[...]

        return f, (X3,), (v, w)

    check_cf(make, calls=2)


def test_library_code_and_generated_code_are_not_converted():
    lin = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    assert callees.convert(lin) is lin  # flax's own __call__
    assert callees.convert(jnp.sin) is jnp.sin
    assert callees.convert(print) is print
    assert callees.convert(Counter) is Counter  # constructing a class: __init__ runs as written
    m = Counter()
    converted = callees.convert(m.bump)
    assert converted.__self__ is m and converted.__func__ is not Counter.bump
    assert converted.__func__.__code__.co_filename.startswith("<hijaxc generated")
    assert callees.convert(converted) is converted  # generated code is never converted again
    assert "__hx.fori_loop" in api.converted_source(Counter.bump)


def test_callees_are_converted_once_per_code_object():
    @hijaxc.jit
    def f(m, x):
        return m.bump(x)

    m = Counter()
    f(m, X3)
    before = parse.PARSE_COUNT[0]
    f(m, jnp.ones(3))  # fast path
    f(m, jnp.ones((3,), jnp.float32) * 2)
    f(Counter(), jnp.ones(3, jnp.bfloat16))  # a new dtype: retrace, converted code reused
    assert parse.PARSE_COUNT[0] == before


def test_unconvertible_callee_is_called_as_it_is():
    ns = {}
    exec("import jax.numpy as jnp\ndef helper(v, x):\n    return jnp.sin(x) + v[...]\n", ns)
    helper = ns["helper"]  # no source file: cannot be converted; pure code still works
    v = hijaxc.Variable(jnp.ones(3))

    @hijaxc.jit
    def f(x):
        return helper(v, x)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(f(X3), jnp.sin(X3) + 1.0, rtol=1e-6)


def test_error_in_a_converted_callee_names_the_users_line():
    class Bad(nnx.Module):
        def __init__(self):
            self.w = hijaxc.Variable(jnp.zeros(3), mutable=False)

        def poke(self):
            def body(i, c):
                self.w[...] += 1.0  # immutable: the error must point here
                return c

            return jax.lax.fori_loop(0, 2, body, 0)

    m = Bad()

    @hijaxc.jit
    def f():
        return m.poke()

    with pytest.raises(hijaxc.ImmutableVariableError) as e:
        f()
    assert "test_callees.py:" in str(e.value)
    line = int(str(e.value).split("test_callees.py:")[1].split()[0].strip("):,;"))
    assert "immutable: the error must point here" in open(__file__).read().splitlines()[line - 1]
    np.testing.assert_array_equal(m.w[...], np.zeros(3))


# --- state a callee reaches through its *own* globals / closure cells (context.view) -------------
_STEPS = hijaxc.Variable(jnp.array(0, jnp.int32))
_SCALE = hijaxc.Variable(jnp.array(2.0))
_SHARED = Counter()


def _log_step():
    _STEPS[...] += 1


def _scaled(x):
    return x * _SCALE[...]  # a read: must see the value of each call, not of the first trace


def _loop_on_shared(x):
    return _SHARED.bump(x)


def test_helper_writes_its_own_global_variable():
    @hijaxc.jit
    def f(x):
        _log_step()
        _log_step()
        return _scaled(x)

    _STEPS[...] = 0
    _SCALE[...] = 2.0
    np.testing.assert_allclose(f(X3), X3 * 2.0)
    assert int(_STEPS[...]) == 2
    traces = f.step.stats["traces"]
    _SCALE[...] = 3.0  # a new value, same structure: no retrace, and the new value is used
    np.testing.assert_allclose(f(X3), X3 * 3.0)
    np.testing.assert_allclose(f(X3), X3 * 3.0)
    assert int(_STEPS[...]) == 6
    assert f.step.stats["traces"] == traces and f.step.stats["fast_calls"] >= 1
    assert not any(isinstance(leaf, jax.core.Tracer) for leaf in [_STEPS[...], _SCALE[...]])


def test_helper_global_rebound_between_calls_uses_the_new_object():
    global _STEPS
    old = _STEPS

    @hijaxc.jit
    def f(x):
        _log_step()
        return x

    try:
        f(X3)
        _STEPS = hijaxc.Variable(jnp.array(100, jnp.int32))
        f(X3)
        assert int(_STEPS[...]) == 101
        before = int(old[...])
        f(X3)
        assert int(old[...]) == before and int(_STEPS[...]) == 102
    finally:
        _STEPS = old


def test_helper_closure_cell_state_and_aliasing_with_an_argument():
    def make_logger():
        seen = hijaxc.Variable(jnp.zeros(3))

        def log(x):
            seen[...] += x

        return log, seen

    log, seen = make_logger()

    @hijaxc.jit
    def f(m, x):
        log(x)
        _loop_on_shared(x)  # _SHARED is also the argument m: one object, one copy
        m.w[...] *= 2.0
        return m.w[...]

    with python_control_flow():
        ref = Counter()
        ref.w[...] = _SHARED.w[...]
        ref.n[...] = _SHARED.n[...]
        ref.bump(X3)
        ref.w[...] *= 2.0
    out = f(_SHARED, X3)
    np.testing.assert_allclose(out, ref.w[...])
    np.testing.assert_allclose(_SHARED.w[...], ref.w[...])
    np.testing.assert_allclose(seen[...], X3)
    f(_SHARED, X3)
    np.testing.assert_allclose(seen[...], 2 * X3)


def test_loop_body_reaching_a_helpers_global_module():
    def f(x):
        def body(i, c):
            return c + _loop_on_shared(x)

        return jax.lax.fori_loop(0, 2, body, 0.0)

    # _SHARED is a module global: run eagerly, note the results, put the values back, compile
    # (by hand: the oracle's deep-copy form restores through nnx.update, which flax 0.10 refuses
    # for hijaxc Variables)
    saved = (_SHARED.w[...], _SHARED.n[...])
    with python_control_flow():
        eager = [f(X3) for _ in range(2)]
    expected = (_SHARED.w[...], _SHARED.n[...])
    _SHARED.w[...], _SHARED.n[...] = saved
    jitted = hijaxc.jit(f)
    for e in eager:
        np.testing.assert_allclose(jitted(X3), e, rtol=1e-6)
    np.testing.assert_allclose(_SHARED.w[...], expected[0], rtol=1e-6)
    assert int(_SHARED.n[...]) == int(expected[1])


def test_introspection_learns_helper_state_too():
    @hijaxc.jit
    def f(x):
        _log_step()
        return _scaled(x)

    jaxpr = hijaxc.make_jaxpr(f)(X3)
    assert len(jaxpr.jaxpr.invars) == 3  # x, and the two globals the helpers reach
    assert f.lower(X3) is not None
    before = int(_STEPS[...])
    f.eval_shape(X3)
    assert int(_STEPS[...]) == before


class _Logger(nnx.Module):
    """Its method writes a module global the compiled function never names."""

    def __init__(self):
        self.scale = hijaxc.Variable(jnp.array(0.5))

    def log(self, x):
        _STEPS[...] += 1
        return x * self.scale[...]


def test_transform_bodies_learn_state_a_method_reaches_through_its_globals():
    """Found only while the body is traced: the loop / branch / grad captures it and retraces."""

    def run(f, *args):
        _STEPS[...] = 0
        with python_control_flow():
            eager = f(*args)
        steps = int(_STEPS[...])
        _STEPS[...] = 0
        out = hijaxc.jit(f)(*args)
        np.testing.assert_allclose(out, eager, rtol=1e-6)
        assert int(_STEPS[...]) == steps > 0

    lg = _Logger()

    def loops(x):
        def inner(i, c):
            return c + lg.log(x)

        def outer(c, _):
            return jax.lax.fori_loop(0, 2, inner, c), None

        c, _ = jax.lax.scan(outer, jnp.zeros(3), None, length=3)
        return c

    def branches(x):
        return jax.lax.cond(x[0] > 0, lambda: lg.log(x), lambda: -lg.log(x))

    def gradient(x):
        return jax.grad(lambda y: jnp.sum(lg.log(y) ** 2))(x)

    for f in (loops, branches, gradient):
        run(f, X3)


class CountingLayer(Counter):
    """``Counter`` as a layer: its ``__call__`` runs ``bump``'s lax loop over ``self``'s state."""

    def __call__(self, x):
        return x + self.bump(x)


def test_layers_called_by_nnx_sequential_are_converted():
    """``nnx.Sequential.__call__`` is library code that only calls the user's layers: it is
    converted like user code (runtime/callees.py: LIBRARY_COMBINATORS), so a layer it calls can
    run a JAX transform over its own state."""

    def f(seq, x):
        return seq(x).sum()

    check_cf(lambda: (f, (nnx.Sequential(CountingLayer(), CountingLayer()), X3)), calls=2)

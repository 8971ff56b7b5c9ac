"""S1: ``hijaxc.jit(f)`` returns what ``f`` returns eagerly and leaves every reachable Variable, Ref
and Module in the same state (values, structure, identity), checked by ``oracle.check_eager``.

Every case is a factory ``make()`` that builds fresh state (arguments, closure cells, module
globals), so the eager run and the compiled run never share an object.  Shared models and helpers
are in ``eager_models.py``.

This module: where the state comes from and how the function is called: closures, module
globals, nested functions, methods, ``functools.partial``, lambdas, static arguments.
"""

import functools

import jax.numpy as jnp
from eager_models import X2, X3, Counter, Linear, method_case, var
from flax import nnx
from oracle import Case, check_eager

import hijaxc


# --------------------------------------------------------------------------------------------------
# Closures, module globals, nested functions, methods, partial, lambdas
# --------------------------------------------------------------------------------------------------
def test_closure_variable():
    def make():
        counter = var(0)
        total = var(jnp.zeros(3))

        def f(x):
            counter[...] += 1
            total[...] += x * counter[...]
            return total[...]

        return f, (X3,), (counter, total)

    check_eager(make, calls=3)


def test_closure_module():
    def make():
        model = Linear(3, 2, rngs=nnx.Rngs(0))
        seen = var(0)

        def f(x):
            seen[...] += 1
            y = model(x[None])
            model.bias.value = model.bias.value + y[0]
            return y

        return f, (X3,), (model, seen)

    check_eager(make, calls=3)


G_COUNT = None
G_MODEL = None
G_STATS = None


def _uses_globals(x):
    G_COUNT[...] += 1
    y = G_MODEL(x[None])[0]
    G_STATS["sum"][...] += y.sum()
    G_STATS["last"] = hijaxc.Variable(y)
    return y * G_COUNT[...]


def test_module_globals():
    def make():
        global G_COUNT, G_MODEL, G_STATS
        G_COUNT = var(0)
        G_MODEL = Linear(3, 2, rngs=nnx.Rngs(1))
        G_STATS = {"sum": var(0.0)}
        return _uses_globals, (X3,), (G_COUNT, G_MODEL, G_STATS)

    check_eager(make, calls=3)


def test_nested_def_mutates_argument():
    def f(v, x):
        def bump(k):
            v[...] += k * x

        bump(1.0)
        bump(2.0)
        return v[...]

    check_eager(lambda: (f, (var(jnp.zeros(3)), X3)), calls=2)


def test_nested_def_mutates_outer_closure():
    def make():
        acc = var(jnp.zeros(2))

        def outer(x):
            def inner(y):
                acc[...] += y
                return acc[...] * 2

            z = inner(x)
            return inner(z)

        return outer, (X2,), (acc,)

    check_eager(make, calls=2)


def test_lambda_inside():
    def f(v, x):
        scale = lambda a: a * v[...]  # noqa: E731
        v[...] = scale(x) + 1
        return scale(x)

    check_eager(lambda: (f, (var([2.0, 3.0]), X2)), calls=2)


def test_method_decorated_with_jit():
    check_eager(lambda: method_case(Counter(), "step", X2), calls=3)


def test_bound_method_jit():
    def make():
        m = Counter()
        return Case(m.plain, (X2,), state=(m,), jitted=hijaxc.jit(m.plain))

    check_eager(make, calls=2)


def test_partial_positional():
    def f(v, w, x):
        v[...] += x
        w[...] = w[...] * v[...]
        return w[...]

    def make():
        v, w = var([1.0, 2.0]), var([3.0, 4.0])
        return functools.partial(f, v, w), (X2,), (v, w)

    check_eager(make, calls=2)


def test_partial_keyword():
    def f(x, *, v, k):
        v[...] = v[...] * k + x
        return v[...]

    def make():
        v = var([1.0, 2.0])
        return functools.partial(f, v=v, k=3.0), (X2,), (v,)

    check_eager(make, calls=2)


def test_lambda_function():
    check_eager(lambda: (lambda v, x: v.set_value(v[...] + x), (var([1.0, 2.0]), X2)), calls=3)


def test_lambda_module_batchnorm():
    def make():
        bn = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
        return (lambda m, x: m(x)), (bn, jnp.arange(12.0).reshape(4, 3))

    check_eager(make, calls=3)


# --------------------------------------------------------------------------------------------------
# Static arguments
# --------------------------------------------------------------------------------------------------
def test_static_argnums():
    def f(v, n, x):
        for _ in range(n):
            v[...] = v[...] * 2 + x
        return n * v[...]

    check_eager(lambda: (f, (var([1.0, 0.0]), 3, X2)), calls=2, jit={"static_argnums": 1})


def test_static_argnames():
    def f(v, x, mode="add"):
        if mode == "add":
            v[...] += x
        else:
            v[...] *= x
        return v[...]

    check_eager(
        lambda: (f, (var([1.0, 2.0]), X2), {"mode": "mul"}, ()),
        calls=2,
        jit={"static_argnames": "mode"},
    )

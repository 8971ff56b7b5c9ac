"""S1: ``hijaxc.jit(f)`` returns what ``f`` returns eagerly and leaves every reachable Variable, Ref
and Module in the same state (values, structure, identity), checked by ``oracle.check_eager``.

Every case is a factory ``make()`` that builds fresh state (arguments, closure cells, module
globals), so the eager run and the compiled run never share an object.  Shared models and helpers
are in ``eager_models.py``.

This module: identity and structure: returned objects (S5), aliasing (S4), and dynamic structure
(new attributes, Variables, submodules, deleted attributes).
"""

import jax.numpy as jnp
import numpy as np
from eager_models import X2, Counter, Linear, Shared, var
from flax import nnx
from oracle import check_eager, data

import hijaxc


# --------------------------------------------------------------------------------------------------
# Returns (S5)
# --------------------------------------------------------------------------------------------------
def test_return_tuple_and_dict():
    def f(v, x):
        v[...] += x
        return {"y": v[...] * 2, "pair": (x, v[...].sum()), "list": [x, 1.0]}

    check_eager(lambda: (f, (var([0.0, 1.0]), X2)), calls=2)


def test_return_new_variable():
    def f(v, x):
        new = hijaxc.Variable(v[...] + x)
        new[...] *= 2
        return new, hijaxc.Param(x)

    eager, jitted, _, _ = check_eager(lambda: (f, (var([1.0, 2.0]), X2)), calls=2)
    assert isinstance(jitted[0][0], hijaxc.Variable) and jitted[0][0] is not jitted[1][0]


def test_return_new_module():
    def f(x):
        m = Linear(2, 3, rngs=nnx.Rngs(0))
        m.bias.value = m.bias.value + x.sum()
        return m

    _, jitted, _, _ = check_eager(lambda: (f, (X2,)))
    np.testing.assert_allclose(jitted[0](X2[None]).shape, (1, 3))


def test_return_input_identity():
    def f(v, m, x):
        v[...] += 1
        m.count[...] += 1
        return v, m, x

    _, jitted, _, case = check_eager(lambda: (f, (var(0.0), Counter(), X2)), calls=2)
    v, m, _ = case.args
    assert jitted[0][0] is v and jitted[0][1] is m and jitted[1][0] is v


def test_return_input_and_new_objects():
    def f(m):
        m.count[...] += 1
        child = Counter()
        child.count[...] = m.count[...] * 10
        return m, child, [m.w, child.w]

    _, jitted, _, case = check_eager(lambda: (f, (Counter(),)))
    assert jitted[0][0] is case.args[0] and jitted[0][2][0] is case.args[0].w


def test_return_closure_object_identity():
    def make():
        v = var([1.0])

        def f():
            v[...] -= 1
            return v

        return f, (), (v,)

    _, jitted, _, case = check_eager(make, calls=2)
    assert jitted[0] is case.state[0]


# --------------------------------------------------------------------------------------------------
# Aliasing (S4)
# --------------------------------------------------------------------------------------------------
def test_alias_same_variable_twice():
    def f(a, b):
        a[...] += 1
        b[...] *= 3
        return a[...] + b[...]

    def make():
        v = var([1.0, 2.0])
        return f, (v, v)

    check_eager(make, calls=2)


def test_alias_module_attribute():
    def g(m, x):
        m.a[...] += x
        m.c[...] = m.b[...].sum()
        return m.b[...]

    check_eager(lambda: (g, (Shared(), X2)), calls=2)


def test_alias_module_passed_twice():
    def f(m1, m2):
        m1.count[...] += 1
        m2.count[...] *= 5
        m2.w[...] = m1.w[...] + m2.count[...]

    def make():
        m = Counter()
        return f, (m, m)

    check_eager(make, calls=2)


def test_alias_argument_and_closure():
    def make():
        v = var([1.0, 2.0])

        def f(a, x):
            a[...] += x
            v[...] *= 2
            return a[...]

        return f, (v, X2), (v,)

    check_eager(make, calls=2)


def test_alias_in_list_and_dict():
    def f(vs, d):
        for v in vs:
            v[...] += 1
        d["k"][...] *= 2

    def make():
        v = var(1.0)
        return f, ([v, v, var(5.0)], {"k": v})

    check_eager(make, calls=2)


def test_alias_shared_submodule():
    class Two(nnx.Module):
        def __init__(self):
            self.first = Linear(2, 2, rngs=nnx.Rngs(0))
            self.second = self.first

    def f(t, x):
        t.first.bias.value = t.first.bias.value + x
        return t.second(x[None])

    check_eager(lambda: (f, (Two(), X2)), calls=2)


# --------------------------------------------------------------------------------------------------
# Dynamic structure
# --------------------------------------------------------------------------------------------------
def test_new_module_attribute_variable():
    def f(m, x):
        m.extra = hijaxc.Variable(x * 2)
        m.extra[...] += m.count[...]
        return m.extra[...]

    check_eager(lambda: (f, (Counter(), X2)))


def test_new_variable_in_dict_argument():
    def f(d, x):
        d["new"] = hijaxc.Variable(x)
        d["old"][...] += 1
        d["plain"] = x * 3

    check_eager(lambda: (f, ({"old": var(0.0)}, X2)))


def test_list_of_variables():
    def f(vs, x):
        total = 0.0
        for v in vs:
            v[...] += x
            total = total + v[...].sum()
        vs.append(hijaxc.Variable(total * jnp.ones(2)))
        return total

    check_eager(lambda: (f, ([var([1.0, 0.0]), var([2.0, 2.0])], X2)), calls=2)


def test_replace_variable_attribute():
    def f(m):
        old = m.w
        m.w = hijaxc.Param(old[...] * 2)
        old[...] = jnp.zeros_like(old[...])
        return old

    check_eager(lambda: (f, (Counter(),)), calls=2)


def test_new_static_attribute():
    class Scaled(nnx.Module):
        def __init__(self):
            self.scale = 2.0
            self.v = hijaxc.Variable(jnp.array([1.0, 2.0]))

    def f(m):
        m.v[...] = m.v[...] * m.scale
        m.scale = m.scale + 1.0
        m.tag = "seen"

    check_eager(lambda: (f, (Scaled(),)), calls=3)


def test_new_submodule():
    def f(m, x):
        m.sub = Linear(2, 2, rngs=nnx.Rngs(3))
        m.sub.bias.value = m.sub.bias.value + m.count[...]
        return m.sub(x[None])

    check_eager(lambda: (f, (Counter(), X2)))


def test_delete_attribute():
    def f(m):
        m.count[...] += 5
        del m.w

    check_eager(lambda: (f, (Counter(),)))


def test_module_with_list_attribute():
    class Stack(nnx.Module):
        def __init__(self):
            self.layers = data([hijaxc.Variable(jnp.ones(2)), hijaxc.Variable(jnp.zeros(2))])

    def f(s, x):
        for i, layer in enumerate(s.layers):
            layer[...] = layer[...] * (i + 2) + x
        return s.layers[0][...] + s.layers[1][...]

    check_eager(lambda: (f, (Stack(), X2)), calls=2)

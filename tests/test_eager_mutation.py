"""S1: ``hijaxc.jit(f)`` returns what ``f`` returns eagerly and leaves every reachable Variable, Ref
and Module in the same state (values, structure, identity), checked by ``oracle.check_eager``.

Every case is a factory ``make()`` that builds fresh state (arguments, closure cells, module
globals), so the eager run and the compiled run never share an object.  Shared models and helpers
are in ``eager_models.py``.

This module: mutation patterns (``[...]``, ``.value``, setitem, dict values, operators, loops,
read after write, Refs, dtypes, immutable Variables, keyword arguments).
"""

import jax.numpy as jnp
from eager_models import X2, X3, Counter, inc, var
from flax import nnx
from oracle import check_eager

import hijaxc


# --------------------------------------------------------------------------------------------------
# Mutation patterns
# --------------------------------------------------------------------------------------------------
def test_augassign_ellipsis():
    check_eager(lambda: (inc, (var(0),)), calls=3)


def test_assign_ellipsis():
    def f(v, x):
        v[...] = x * 2 + v[...]
        return v[...].sum()

    check_eager(lambda: (f, (var([1.0, 1.0, 1.0]), X3)), calls=2)


def test_setitem_index_and_slice():
    def f(v, m, x):
        v[1] = x[0]
        v[0] += 10.0
        v[1:3] = v[0:2] * 2
        m[0, :] = x
        m[:, 1] *= -1
        return v[2]

    check_eager(lambda: (f, (var(jnp.arange(4.0)), var(jnp.ones((2, 3))), X3)), calls=2)


def test_dict_value_augassign():  # seed 000: inc_and_double
    def inc_and_double(v):
        v["a"] += 1
        v["b"] *= 2

    check_eager(
        lambda: (inc_and_double, (hijaxc.Variable({"a": jnp.array(0), "b": jnp.array(2)}),)),
        calls=3,
    )


def test_dict_value_new_key():  # seed 000: dynamic state structure
    def linear(x, w, metrics):
        y = x @ w
        metrics["y_mean"] = jnp.mean(y)
        metrics["y_max"] = jnp.max(y)
        return y

    check_eager(
        lambda: (linear, (jnp.ones((4, 5)), jnp.arange(15.0).reshape(5, 3), hijaxc.Variable({})))
    )


def test_value_property_assign():
    def f(v):
        v.value = v.value * 2 + 1
        return v.value

    check_eager(lambda: (f, (var([1.0, 2.0]),)), calls=3)


def test_value_property_augassign():
    def f(v, x):
        v.value += x
        v.value *= 2

    check_eager(lambda: (f, (var([1.0, 2.0]), X2)), calls=2)


def test_set_value_get_value():
    def f(v, w):
        v.set_value(v.get_value() * 3)
        w.set_value(w.get_value() + w.get_value(index=0) + v.get_value())
        return w.get_value()

    check_eager(lambda: (f, (var(2.0), var([5.0, 6.0]))), calls=2)


def test_attribute_augassign_through_module():
    def f(m, x):
        m.w[...] *= 2
        m.count[...] += x.shape[0]
        m.w[0, 0] -= 1
        return m.w[...]

    check_eager(lambda: (f, (Counter(), X2)), calls=3)


def test_variable_operators():
    def f(v, w):
        a = -(v + 1) * 2 / (v.value + 3) - (w @ w).sum(0)
        b = jnp.where(v > 1.5, v**2, abs(v))
        v[...] = a + b + (3 - v) + (2 * v) % 3
        return v <= 0, len(w), [x * 2 for x in w]

    check_eager(lambda: (f, (var([1.0, 2.0]), var([[1.0, 0.5], [0.0, 2.0]]))), calls=2)


def test_list_value_variable():
    def f(v):
        v[0] = v[0] + v[1]
        v[1] *= 3
        return len(v)

    check_eager(lambda: (f, (hijaxc.Variable([jnp.array(1.0), jnp.array([2.0, 3.0])]),)), calls=2)


def test_tuple_target_swap():
    def swap(a, b):
        a[...], b[...] = b[...], a[...]

    check_eager(lambda: (swap, (var([1.0, 2.0]), var([3.0, 4.0]))), calls=3)


def test_python_loop_mutation():
    def f(v, x):
        for i in range(3):
            v[...] += i * x
            if i == 1:
                v[...] = v[...] / 2
        return v[...]

    check_eager(lambda: (f, (var(jnp.zeros(3)), X3)), calls=2)


def test_read_after_write():
    def f(v, x):
        before = v[...]
        v[...] = x
        after = v[...] + 1
        v[...] += before
        return before, after, v.value

    check_eager(lambda: (f, (var([1.0, 2.0, 3.0]), X3)), calls=2)


def test_ref_closure_and_ref_variable():
    def make():
        r = hijaxc.Ref(jnp.zeros(2))

        def f(v, x):
            r[...] += x
            v[...] = v[...] + r[...]
            return r[...]

        return f, (hijaxc.Variable(jnp.ones(2), ref=True), X2), (r,)

    check_eager(make, calls=3)


def test_flax_variable_value():
    def f(v, p, x):
        v.value = v.value + x
        p.value = p.value * 2
        return v.value + p.value

    check_eager(lambda: (f, (nnx.Variable(jnp.zeros(2)), nnx.Param(jnp.ones(2)), X2)), calls=2)


def test_int_and_bool_dtypes():
    def f(counter, flag, x):
        counter[...] += 1
        flag[...] = counter[...] > 2
        return jnp.where(flag[...], x, -x)

    check_eager(lambda: (f, (var(0), var(False), X2)), calls=3)


def test_immutable_read_only():
    def f(p, v, x):
        v[...] = p[...] * x + v[...]
        return p[...] + v[...]

    check_eager(lambda: (f, (var([2.0, 3.0], mutable=False), var([0.0, 1.0]), X2)), calls=2)


def test_keyword_arguments():
    def f(x, *, v, scale=2.0):
        v[...] = v[...] * scale + x
        return v[...]

    check_eager(lambda: (f, (X2,), {"v": var([1.0, 1.0]), "scale": 3.0}, ()), calls=2)

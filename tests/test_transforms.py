"""S7: state threaded through nested control flow and transforms, against Python-loop oracles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import hijaxc


def test_cond_inside_scan_inside_grad():
    calls = hijaxc.Variable(jnp.array(0))
    stat = hijaxc.Variable(jnp.zeros(()))

    @hijaxc.jit
    def step(w, xs):
        def loss(w):
            def body(c, x):
                calls[...] += 1
                y = jax.lax.cond(x > 0, lambda: c + w * x, lambda: c - w)
                stat[...] = 0.5 * stat[...] + 0.5 * jax.lax.stop_gradient(y)
                return y, y

            total, _ = jax.lax.scan(body, 0.0, xs)
            return total**2

        return jax.value_and_grad(loss)(w)

    xs = jnp.array([1.0, -2.0, 3.0])
    value, g = step(2.0, xs)

    # Python-loop oracle
    def total(w):
        c = 0.0
        for x in [1.0, -2.0, 3.0]:
            c = c + w * x if x > 0 else c - w
        return c

    t = total(2.0)
    assert np.isclose(value, t**2)
    assert np.isclose(g, 2 * t * (1.0 - 1.0 + 3.0))  # d total/dw = 1 - 1 + 3
    assert int(calls[...]) == 3
    s, c = 0.0, 0.0
    for x in [1.0, -2.0, 3.0]:
        c = c + 2.0 * x if x > 0 else c - 2.0
        s = 0.5 * s + 0.5 * c
    assert np.isclose(stat[...], s)


def test_while_loop_and_switch_mutate_captured_state():
    v = hijaxc.Variable(jnp.array(1.0))
    hits = hijaxc.Variable(jnp.zeros(3, jnp.int32))

    @hijaxc.jit
    def run(limit):
        def cond(c):
            return v[...] < limit

        def body(c):
            v[...] = v[...] * 2
            i = c % 3
            jax.lax.switch(
                i,
                [
                    lambda: hits.__setitem__(0, hits[0] + 1),
                    lambda: hits.__setitem__(1, hits[1] + 1),
                    lambda: hits.__setitem__(2, hits[2] + 1),
                ],
            )
            return c + 1

        return jax.lax.while_loop(cond, body, 0)

    n = run(100.0)
    assert int(n) == 7 and float(v[...]) == 128.0
    np.testing.assert_array_equal(hits[...], [3, 2, 2])


def test_nested_jit_and_checkpoint_thread_state():
    v = hijaxc.Variable(jnp.zeros(2))

    @hijaxc.jit
    def outer(x):
        @jax.jit
        def inner(y):
            v[...] += y
            return v[...].sum()

        a = inner(x)
        b = jax.checkpoint(lambda y: inner(y) * 2)(x)
        return a, b

    a, b = outer(jnp.ones(2))
    np.testing.assert_allclose(v[...], [2.0, 2.0])
    assert float(a) == 2.0 and float(b) == 8.0


def test_nested_hijaxc_jit():
    v = hijaxc.Variable(jnp.array(0))

    @hijaxc.jit
    def inner(v, k):
        v[...] += k

    @hijaxc.jit
    def outer(v):
        inner(v, 1)
        inner(v, 10)
        return v[...]

    assert int(outer(v)) == 11 and int(v[...]) == 11
    assert int(outer(v)) == 22


def test_vmap_builds_a_stack_and_rejects_captured_writes():
    counter = hijaxc.Variable(jnp.array(0))

    @hijaxc.jit
    def make(keys):
        return jax.vmap(lambda k: hijaxc.Param(jax.random.normal(k, (2,))))(keys)

    stack = make(jax.random.split(jax.random.key(0), 4))
    assert isinstance(stack, hijaxc.Param) and stack[...].shape == (4, 2)

    @hijaxc.jit
    def bad(x):
        def f(xi):
            counter[...] += 1
            return xi

        return jax.vmap(f)(x)

    with pytest.raises(hijaxc.HijaxcError, match="vmap"):
        bad(jnp.ones(3))
    assert int(counter[...]) == 0


def test_grad_through_immutable_module_and_batchnorm_stats():
    model = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
    lin = nnx.Linear(2, 3, rngs=nnx.Rngs(1))

    @hijaxc.jit
    def step(lin, bn, x):
        def loss(lin):
            return (bn(lin(x)) ** 2).mean()

        return jax.grad(loss)(hijaxc.vars_as(lin, mutable=False))

    x = jnp.arange(8.0).reshape(4, 2)
    g = step(lin, model, x)
    assert g.kernel[...].shape == (2, 3)
    # BatchNorm (captured by the loss) updated its running mean once, with primal values
    h = lin(x)
    np.testing.assert_allclose(
        model.mean[...], (1 - model.momentum) * h.mean(0), rtol=1e-5, atol=1e-6
    )


@pytest.mark.skipif(
    not hasattr(nnx, "var_defaults"), reason="this flax has no native hijax Variables"
)
def test_flax_native_hijax_variables_are_read_and_written_through_flax():
    v = nnx.Variable(jnp.array(0), hijax=True)

    @hijaxc.jit
    def inc(v):
        v[...] += 1
        return v[...] * 2

    assert int(inc(v)) == 2 and int(v[...]) == 1
    assert int(inc(v)) == 4 and int(v[...]) == 2


def test_hijaxc_jit_of_a_function_defined_inside_a_compiled_function():
    """Found by fuzzing: the inner function's code comes from generated code (it closes over the
    runtime alias), and compiling it again must not declare that alias twice."""
    o = hijaxc.Variable(jnp.zeros(3))

    @hijaxc.jit
    def outer(x):
        def inner(z):
            o[...] += z
            return z

        return hijaxc.jit(inner)(x)

    outer(jnp.ones(3))
    outer(jnp.ones(3))
    np.testing.assert_allclose(o[...], [2.0, 2.0, 2.0])

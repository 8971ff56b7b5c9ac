"""Regression found by benchmarks/fuzz.py (seeds 33, 37, 144; minimized by hand): a Variable that a
loss under ``jax.grad`` / ``jax.value_and_grad`` writes, and that is *also* passed to the transform
as a non-differentiated argument, loses the write under ``hijaxc.jit`` (eagerly the write happens
once, with the primal values; S7); written through the argument, the write is kept but the
captured alias inside the loss still reads the old value (S4).
"""
import jax
import jax.numpy as jnp
import numpy as np

import hijaxc


def _run(through_param):
    v = hijaxc.Variable(jnp.array(-0.3))

    def f(p, x):
        def loss(a, w):
            if through_param:
                a[...] += 1.0
            else:
                v[...] += 1.0
            return (w * v[...]) * 2.0

        return jax.value_and_grad(loss, argnums=1)(p, x)

    out = hijaxc.jit(f)(v, jnp.float32(1.0))
    np.testing.assert_allclose(v[...], 0.7, rtol=1e-6)  # eagerly: -0.3 + 1.0
    np.testing.assert_allclose(out[1], 1.4, rtol=1e-6)  # d/dw (w * v) * 2 with v = 0.7


def test_write_through_capture():
    _run(through_param=False)


def test_write_through_param():
    _run(through_param=True)

"""Regression found by benchmarks/fuzz.py (minimized by hand).

A Module method that runs ``jax.lax.fori_loop`` over ``self``'s Variables was not rewritten (it is
not the decorated function): called directly from the ``hijaxc.jit`` function the write raised
``TracerLeakError``; called from inside a lax body that hijaxc did rewrite, JAX's own
``UnexpectedTracerError`` escaped.  Fixed by converting the user functions that compiled code calls
(``runtime/callees.py``): both now give the eager result.
"""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import hijaxc


class M(nnx.Module):
    def __init__(self):
        self.w = hijaxc.Variable(jnp.zeros(3))

    def bump(self):
        def body(i, c):
            self.w[...] += 1.0
            return c

        return jax.lax.fori_loop(0, 2, body, 0.0)


def nested(m, x):
    def body(i, c):
        m.bump()
        return c + 1.0

    return jax.lax.fori_loop(0, 2, body, x)


def direct(m, x):
    m.bump()
    return x


def _check(fn):
    m = M()
    out = hijaxc.jit(fn)(m, jnp.float32(0.0))
    # the eager result: the loops run as Python loops
    np.testing.assert_allclose(m.w[...], np.full(3, 4.0 if fn is nested else 2.0))
    np.testing.assert_allclose(out, 2.0 if fn is nested else 0.0)


def test_direct():
    _check(direct)


def test_inside_rewritten_loop():
    _check(nested)

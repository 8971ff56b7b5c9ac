"""Regression found by benchmarks/fuzz.py (seeds 14, 38, 49, 177; minimized by hand):
a ``static_argnames`` argument passed *positionally* is traced, so Python control flow on it
(``if n > 1``, ``range(n)``) fails under ``hijaxc.jit`` (TracerBoolConversionError); passed by
keyword (also keyword-only), and ``static_argnums``, work.
"""
import jax.numpy as jnp
import numpy as np

import hijaxc


def f(x, n):
    v = x
    for _ in range(n):
        v = v * 2.0
    if n > 1:
        v = v + 1.0
    return v


def test_static_argnums():
    np.testing.assert_allclose(hijaxc.jit(f, static_argnums=(1,))(jnp.ones(3), 2), [5.0] * 3)


def test_static_argnames_by_keyword():
    np.testing.assert_allclose(hijaxc.jit(f, static_argnames=("n",))(jnp.ones(3), n=2), [5.0] * 3)


def g(x, *, n):  # keyword-only
    return f(x, n)


def test_static_argnames_keyword_only():
    np.testing.assert_allclose(hijaxc.jit(g, static_argnames=("n",))(jnp.ones(3), n=2), [5.0] * 3)


def test_static_argnames_positional():
    np.testing.assert_allclose(hijaxc.jit(f, static_argnames=("n",))(jnp.ones(3), 2), [5.0] * 3)

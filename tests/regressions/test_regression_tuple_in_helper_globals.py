"""Regression found by benchmarks/fuzz.py (seed 152; minimized by hand): state behind a tuple or
namedtuple in the *globals* of a helper defined outside the compiled function is not mapped: the
helper's write is lost (or leaks a tracer).  The same tuple reached from the compiled function
itself works.
"""
import collections

import jax.numpy as jnp
import numpy as np

import hijaxc

Pair = collections.namedtuple("Pair", "a b")
G = None


def helper(z):
    G[0][...] *= 0.5
    return z


def through_helper(x):
    return helper(x)


def directly(x):
    G[0][...] *= 0.5
    return x


def _run(fn, pair):
    global G
    G = pair((hijaxc.Variable(jnp.ones(3)), hijaxc.Variable(jnp.zeros(3))))
    hijaxc.jit(fn)(jnp.ones(3))
    np.testing.assert_allclose(G[0][...], [0.5] * 3)


def test_namedtuple_in_helper_globals():
    _run(through_helper, lambda t: Pair(*t))


def test_tuple_in_helper_globals():
    _run(through_helper, tuple)


def test_namedtuple_in_own_globals():
    _run(directly, lambda t: Pair(*t))

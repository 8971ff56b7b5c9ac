"""Found by benchmarks/fuzz.py (seed 247, minimized by hand): ``jax.grad`` of a loss over a Module
that ties one Variable to two attributes.

JAX's own ``jax.grad`` of a pytree Module (flax 0.11+) flattens it into one leaf per path, so each
path gets its own partial derivative (here 1x and 2x the tanh derivative).  Under ``hijaxc.jit``
the tied Variable is one object inside the step (S4), so it gets its total derivative, on both
paths — what ``nnx.grad`` gives, and what an optimizer updating the one Variable needs.  This is
a deliberate difference from eager ``jax.grad`` (README, Limitations); the fuzzer leaves the
pattern out (``fuzz.generator.DEVIATIONS``).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import hijaxc


class Tied(nnx.Module):
    def __init__(self):
        self.a = hijaxc.Param(jnp.array([0.1, 0.2, 0.3]))
        self.b = self.a  # weight tying


def loss(t):
    return (jnp.tanh(t.a[...]) + 2.0 * jnp.tanh(t.b[...])).sum()


def grads(m):
    g = jax.grad(loss)(hijaxc.vars_as(m, mutable=False))
    return g.a[...], g.b[...]


def _modules_are_pytrees():
    m = Tied()
    return jax.tree.leaves(m)[0] is not m


@pytest.mark.skipif(not _modules_are_pytrees(), reason="flax 0.10: Modules are not pytrees, so "
                    "jax.grad cannot take one (eagerly or not)")
def test_tied_weight_gets_its_total_derivative_like_nnx_grad():
    total = 3.0 * (1.0 - np.tanh(np.array([0.1, 0.2, 0.3])) ** 2)
    a, b = hijaxc.jit(grads)(Tied())
    np.testing.assert_allclose(a, total, rtol=1e-5)
    np.testing.assert_allclose(b, total, rtol=1e-5)
    np.testing.assert_allclose(nnx.grad(loss)(Tied())["a"][...], total, rtol=1e-5)

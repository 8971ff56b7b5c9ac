"""Regression found by benchmarks/fuzz.py (seed 405655, minimized by hand): a helper defined
outside the compiled function adds a Variable to a Module it reaches through its own globals, and
that Module holds no Variable yet.  The step did not learn the Module (it held no state), so the
helper wrote to the caller's own Module inside the trace (flax: TraceContextError).  A caller's
Module is state even while empty: the step learns it, traces again, and writes the new attribute
back.  On flax 0.10 an empty Module is not learnt (README, Limitations)."""
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import hijaxc


class Empty(nnx.Module):
    pass


G = Empty()


def helper(x):
    G.extra = hijaxc.Variable(jnp.ones(3) * x)


def f(x):
    helper(x)
    return x


@pytest.mark.xfail(not hasattr(nnx, "Pytree"), strict=True,
                   reason="flax 0.10 cannot tell a Module made outside the trace from one made "
                   "inside (its trace state is valid in both), so an empty one is not learnt")
def test_helper_adds_a_variable_to_an_empty_global_module():
    hijaxc.jit(f)(2.0)
    assert isinstance(G.extra, hijaxc.Variable)
    np.testing.assert_allclose(G.extra[...], 2.0 * np.ones(3))

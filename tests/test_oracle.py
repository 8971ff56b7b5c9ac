"""The S1 oracle itself (``oracle.check_eager``): it must notice each kind of difference between an
eager and a compiled run (no hijaxc compilation involved here).
"""

import jax.numpy as jnp
import pytest
from eager_models import X2, Counter, Shared, inc, var
from oracle import Case, check_eager

import hijaxc


# --------------------------------------------------------------------------------------------------
# The oracle itself: it must notice each kind of difference (no hijaxc involved here)
# --------------------------------------------------------------------------------------------------
def _differs(eager, jitted, make_args):
    with pytest.raises(AssertionError):
        check_eager(lambda: Case(None, make_args(), eager=eager, jitted=jitted))


def test_oracle_notices_dropped_write():
    _differs(inc, lambda v: None, lambda: (var(0),))


def test_oracle_notices_value_and_dtype():
    _differs(lambda x: x * 2, lambda x: x * 2 + 1e-3, lambda: (X2,))
    _differs(lambda x: x, lambda x: x.astype(jnp.int32), lambda: (X2,))


def test_oracle_notices_lost_identity():
    def copy_back(v):
        return hijaxc.Variable(v[...])

    _differs(lambda v: v, copy_back, lambda: (var(1.0),))


def test_oracle_notices_broken_aliasing():
    def unshare(m):
        m.b = hijaxc.Variable(m.a[...])

    _differs(lambda m: None, unshare, lambda: (Shared(),))


def test_oracle_notices_missing_attribute_and_key():
    def add_attr(m):
        m.extra = hijaxc.Variable(jnp.zeros(1))

    def add_key(d):
        d["k"] = jnp.ones(1)

    _differs(add_attr, lambda m: None, lambda: (Counter(),))
    _differs(add_key, lambda d: None, lambda: ({},))


def test_oracle_notices_flags_and_state_objects():
    _differs(hijaxc.to_hijax, hijaxc.to_lojax, lambda: (var(1.0),))

    def make():
        g = var(0)
        return Case(
            None, (), state=(g,), eager=lambda: g.set_value(g[...] + 1), jitted=lambda: None
        )

    with pytest.raises(AssertionError):
        check_eager(make)

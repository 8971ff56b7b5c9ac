"""Models and small helpers shared by the eager-equivalence tests (``test_eager_*.py`` and
``test_oracle.py``): the seeds' ``Linear`` and ``Block``, a Module with a ``@hijaxc.jit`` method
(``Counter``), a Module with an aliased Variable (``Shared``), the inputs ``X2`` / ``X3``, and
``var`` / ``inc`` / ``method_case``.
"""

import jax.numpy as jnp
from flax import nnx
from oracle import Case, normal

import hijaxc

X2 = jnp.array([1.0, 2.0])
X3 = jnp.array([0.5, -1.0, 2.0])


# --------------------------------------------------------------------------------------------------
# Models shared by several cases (the seeds' Linear and Block)
# --------------------------------------------------------------------------------------------------
class Linear(nnx.Module):
    def __init__(self, din, dout, rngs):
        self.kernel = nnx.Param(normal(rngs, (din, dout)))
        self.bias = nnx.Param(jnp.zeros(dout))

    def __call__(self, x):
        return x @ self.kernel + self.bias[None]


class Block(nnx.Module):
    def __init__(self, din, dmid, dout, rngs):
        self.linear = Linear(din, dmid, rngs=rngs)
        self.bn = nnx.BatchNorm(dmid, rngs=rngs)
        self.dropout = nnx.Dropout(0.1, rngs=rngs)
        self.linear_out = Linear(dmid, dout, rngs=rngs)

    def __call__(self, x):
        x = nnx.gelu(self.dropout(self.bn(self.linear(x))))
        return self.linear_out(x)


class Counter(nnx.Module):
    def __init__(self):
        self.count = hijaxc.Variable(jnp.array(0))
        self.w = hijaxc.Param(jnp.array([[1.0, 2.0], [3.0, 4.0]]))

    @hijaxc.jit
    def step(self, x):
        self.count[...] += 1
        self.w[...] *= 2
        return x @ self.w[...] + self.count[...]

    def plain(self, x):
        self.count[...] += 2
        self.w.value = self.w.value - x[:, None]
        return self.w[...].sum()


class Shared(nnx.Module):
    def __init__(self):
        self.a = hijaxc.Variable(jnp.array([1.0, 2.0]))
        self.b = self.a
        self.c = hijaxc.Variable(jnp.array(10.0))


def var(x, **kw):
    return hijaxc.Variable(jnp.asarray(x), **kw)


def method_case(obj, name, *args):
    """Case for a method decorated with ``@hijaxc.jit``: eager calls the undecorated function."""
    jitted = getattr(type(obj), name)
    return Case(
        None,
        (obj,) + args,
        eager=lambda o, *a: jitted.__wrapped__(o, *a),
        jitted=lambda o, *a: getattr(o, name)(*a),
    )


def inc(v):
    v[...] += 1

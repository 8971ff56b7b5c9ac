"""docs_nnx/guides/transforms.md: ``nnx.vmap`` over Modules inside a jitted step — a vmapped
Count bumped per batch element, ``nnx.StateAxes`` broadcasting the Count, and
``nnx.split_rngs`` + ``nnx.vmap`` drawing per-element noise from an ``Rngs`` stream; the guide
calls these eagerly, here each runs inside a ``@jit`` step (twice: the counters and rng advance)."""

import jax
from flax import nnx
from jax import numpy as jnp
from jax import random

SOURCE = "docs_nnx/guides/transforms.md"


def skip_reason():
    if not hasattr(nnx, "StateAxes") or not hasattr(nnx, "split_rngs"):
        return "flax lacks nnx.StateAxes / nnx.split_rngs"
    return None


class Count(nnx.Variable):
    pass


class Weights(nnx.Module):
    def __init__(self, kernel: jax.Array, bias: jax.Array, count: jax.Array):
        self.kernel, self.bias = nnx.Param(kernel), nnx.Param(bias)
        self.count = Count(count)


class NoisyWeights(nnx.Module):
    def __init__(self, kernel, bias, count, seed):
        self.kernel, self.bias = nnx.Param(kernel), nnx.Param(bias)
        self.count = Count(count)
        self.rngs = nnx.Rngs(noise=seed)


def stateful_vector_dot(weights: Weights, x: jax.Array):
    assert weights.kernel.ndim == 2, "Batch dimensions not allowed"
    assert x.ndim == 1, "Batch dimensions not allowed"
    weights.count.value += 1
    return x @ weights.kernel + weights.bias


def run(jit, steps=2):
    x = jax.random.normal(random.key(1), (10, 2))

    vmapped = Weights(
        kernel=random.uniform(random.key(0), (10, 2, 3)),
        bias=jnp.zeros((10, 3)),
        count=jnp.arange(10),
    )
    broadcast = Weights(
        kernel=random.uniform(random.key(0), (10, 2, 3)),
        bias=jnp.zeros((10, 3)),
        count=jnp.array(0),
    )
    noisy = NoisyWeights(
        kernel=random.uniform(random.key(0), (2, 3)),
        bias=jnp.zeros((3,)),
        count=jnp.array(0),
        seed=0,
    )

    state_axes = nnx.StateAxes({nnx.RngState: 0, (nnx.Param, Count): None})

    @nnx.split_rngs(splits=10)
    @nnx.vmap(in_axes=(state_axes, 0))
    def noisy_vector_dot(weights: NoisyWeights, x: jax.Array):
        assert weights.kernel.ndim == 2, "Batch dimensions not allowed"
        assert x.ndim == 1, "Batch dimensions not allowed"
        weights.count.value += 1
        y = x @ weights.kernel + weights.bias
        return y + random.normal(weights.rngs.noise(), y.shape)

    @jit
    def step(vmapped, broadcast, noisy, x):
        y1 = nnx.vmap(stateful_vector_dot, in_axes=0, out_axes=1)(vmapped, x)
        state_axes = nnx.StateAxes({nnx.Param: 0, Count: None})  # broadcast Count
        y2 = nnx.vmap(stateful_vector_dot, in_axes=(state_axes, 0), out_axes=1)(broadcast, x)
        y3 = noisy_vector_dot(noisy, x)
        return y1, y2, y3

    ys = [step(vmapped, broadcast, noisy, x) for _ in range(steps)]
    return {"ys": ys, "vmapped": vmapped, "broadcast": broadcast, "noisy": noisy}

"""examples/nnx_toy_examples/06_scan_over_layers.py: Blocks (Linear, BatchNorm, Dropout) created
with ``nnx.split_rngs`` + ``nnx.vmap`` and applied with ``nnx.scan``.  The example calls the model
eagerly; here the forward pass is a jitted ``forward(model, x)`` (called twice: BatchNorm stats
and the dropout rng advance)."""

import jax
import jax.numpy as jnp
from flax import nnx

SOURCE = "examples/nnx_toy_examples/06_scan_over_layers.py"


def skip_reason():
    if not hasattr(nnx, "Pytree"):  # flax 0.10.4
        return (
            "flax 0.10.4: the example itself fails eagerly (nnx.scan over the vmapped Dropout rngs)"
        )
    return None


class Block(nnx.Module):
    def __init__(self, dim: int, *, rngs: nnx.Rngs):
        self.linear = nnx.Linear(dim, dim, rngs=rngs)
        self.bn = nnx.BatchNorm(dim, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x: jax.Array):
        return jax.nn.gelu(self.dropout(self.bn(self.linear(x))))


class ScanMLP(nnx.Module):
    """
    An MLP that uses `vmap` during `__init__` to create a Block instance
    with an additional `layer` axis, and `scan` during `__call__` to apply
    the sequence of layers iteratively over the input / output `x`.
    """

    def __init__(self, dim: int, *, n_layers: int, rngs: nnx.Rngs):
        self.n_layers = n_layers

        @nnx.split_rngs(splits=n_layers)
        @nnx.vmap(axis_size=n_layers)
        def create_block(rngs: nnx.Rngs):
            return Block(dim, rngs=rngs)

        self.layers = create_block(rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        @nnx.scan
        def scan_fn(x: jax.Array, block: Block):
            x = block(x)
            return x, None

        x, _ = scan_fn(x, self.layers)

        return x


def run(jit, steps=2):
    model = ScanMLP(4, n_layers=3, rngs=nnx.Rngs(0))

    @jit
    def forward(model, x):
        return model(x)

    x = jnp.linspace(-1, 1, 12).reshape(3, 4)
    ys = [forward(model, x) for _ in range(steps)]
    return {"ys": ys, "model": model}

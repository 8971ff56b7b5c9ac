"""hijaxc quickstart: train the seeds' ``Block`` with a ``@hijaxc.jit`` training step.

The step mutates the model (BatchNorm statistics, Dropout's RNG counter) and the optimizer in
place -- hijax semantics -- yet runs on a plain ``jax.jit``: hijaxc compiles the function into a
pure step that takes and returns the Variables' state, and writes the new state back.  The last
lines print that generated code (``hijaxc.show``).

    python examples/quickstart.py
"""
import os
import sys

import jax
import jax.numpy as jnp
import optax
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hijaxc  # noqa: E402
from _compat import make_optimizer, optimizer_update  # noqa: E402


class Linear(nnx.Module):
    def __init__(self, din, dout, rngs: nnx.Rngs):
        self.kernel = nnx.Param(jax.random.normal(rngs.params(), (din, dout)) / jnp.sqrt(din))

    def __call__(self, x):
        return x @ self.kernel


class Block(nnx.Module):
    def __init__(self, din, dmid, dout, rngs: nnx.Rngs):
        self.linear = Linear(din, dmid, rngs=rngs)
        self.bn = nnx.BatchNorm(dmid, rngs=rngs)
        self.dropout = nnx.Dropout(0.1, rngs=rngs)
        self.linear_out = Linear(dmid, dout, rngs=rngs)

    def __call__(self, x):
        x = nnx.gelu(self.dropout(self.bn(self.linear(x))))
        return self.linear_out(x)


@hijaxc.jit
def train_step(model, optimizer, x, y):
    graphdef, params, nondiff = nnx.split(model, nnx.Param, ...)

    def loss_fn(params):
        model = nnx.merge(graphdef, params, nondiff)
        return ((model(x) - y) ** 2).mean()

    # immutable Variables for jax.grad; the optimizer updates the model's Params in place
    loss, grads = jax.value_and_grad(loss_fn)(hijaxc.vars_as(params, mutable=False))
    optimizer_update(optimizer, model, grads)
    return loss


def main(steps=5):
    model = Block(2, 64, 3, rngs=nnx.Rngs(0))
    optimizer = make_optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    x = jax.random.uniform(jax.random.key(1), (16, 2))
    y = jnp.stack([x[:, 0] + x[:, 1], x[:, 0] - x[:, 1], x[:, 0] * x[:, 1]], axis=-1)

    losses = []
    for step in range(steps):
        loss = float(train_step(model, optimizer, x, y))
        losses.append(loss)
        print(f"step {step}: loss = {loss:.6f}")

    print("\nBatchNorm running mean:", model.bn.mean[...][:4])
    print("\n# ---- hijaxc.show(train_step, model, optimizer, x, y) ----")
    print(hijaxc.show(train_step, model, optimizer, x, y))
    return losses, model


if __name__ == "__main__":
    main()

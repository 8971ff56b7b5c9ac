"""hijaxc quickstart: train the seeds' ``Block`` with a ``@hijaxc.jit`` training step.

The step mutates the model (BatchNorm statistics, Dropout's RNG counter) and the optimizer in
place -- hijax semantics -- yet runs on a plain ``jax.jit``: hijaxc compiles the function into a
pure step that takes and returns the Variables' state, and writes the new state back.  The last
lines print that generated code (``hijaxc.show``).

    python examples/quickstart.py
"""

import inspect

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import hijaxc

# flax 0.10 (the `oldest` environment) updates the optimizer with `optimizer.update(grads)` (it
# keeps the model inside); flax 0.11+ with `optimizer.update(model, grads)`, as in Flax's docs.
FLAX_0_10_OPTIMIZER = "model" not in inspect.signature(nnx.Optimizer.update).parameters


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
    def loss_fn(model):
        return ((model(x) - y) ** 2).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    if FLAX_0_10_OPTIMIZER:
        optimizer.update(grads)
    else:
        optimizer.update(model, grads)
    return loss


def main(steps=5):
    model = Block(2, 64, 3, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
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

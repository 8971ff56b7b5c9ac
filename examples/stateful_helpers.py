"""State changed anywhere in the call tree: Module methods with JAX control flow, helpers with
globals.

Real models do not keep every mutation in the decorated step.  Here the Module's ``__call__`` runs
``jax.lax.scan`` over its stacked layers and counts the layers it ran; a logging helper bumps a
module-level step counter and records the loss in a global dict of Variables.  The step itself
names none of that state: hijaxc converts the functions it calls (``__hx.callee``), threads the
Module's state through the scan, and learns the helper's globals while tracing, so all of it is
updated as if the code ran eagerly.

    python examples/stateful_helpers.py
"""

import os
import sys

import jax
import jax.numpy as jnp
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hijaxc  # noqa: E402
from hijaxc.api import converted_source  # noqa: E402

N_LAYERS, WIDTH = 4, 8

# Module-level state that only the helper below names.
STEP = hijaxc.Variable(jnp.array(0, jnp.int32))
METRICS = {"loss": hijaxc.Variable(jnp.array(0.0)), "grad_norm": hijaxc.Variable(jnp.array(0.0))}


class StackedMLP(nnx.Module):
    """``N_LAYERS`` residual layers with their weights stacked on a leading axis."""

    def __init__(self, key):
        self.w = hijaxc.Param(0.1 * jax.random.normal(key, (N_LAYERS, WIDTH, WIDTH)))
        self.layers_run = hijaxc.Variable(jnp.array(0, jnp.int32))

    def __call__(self, x):
        def layer(h, w):
            self.layers_run[...] += 1  # written inside the scan body, inside a method
            return h + jnp.tanh(h @ w), None

        h, _ = jax.lax.scan(layer, x, self.w[...])
        return h

    def sgd(self, grad, lr):
        self.w[...] -= lr * grad


def log_metrics(loss, grad):
    STEP[...] += 1
    METRICS["loss"][...] = loss
    METRICS["grad_norm"][...] = jnp.sqrt(jnp.sum(grad**2))


@hijaxc.jit
def train_step(model, x, y):
    def loss_fn(w):
        model.w[...] = w
        return jnp.mean((model(x) - y) ** 2)

    loss, grad = jax.value_and_grad(loss_fn)(model.w[...])
    model.sgd(grad, 0.1)
    log_metrics(loss, grad)
    return loss


def main(steps=5, verbose=True):
    model = StackedMLP(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (16, WIDTH))
    y = jnp.roll(x, 1, axis=1)
    losses = []
    for _ in range(steps):
        losses.append(float(train_step(model, x, y)))
        if verbose:
            print(
                f"step {int(STEP[...])}: loss {losses[-1]:.4f}  grad norm "
                f"{float(METRICS['grad_norm'][...]):.4f}  layers run {int(model.layers_run[...])}"
            )
    if verbose:
        print(hijaxc.show(train_step))
        print(converted_source(StackedMLP.__call__))
    return losses, model


if __name__ == "__main__":
    main()

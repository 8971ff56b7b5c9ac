"""examples/nnx_toy_examples/07_array_leaves.py: Modules holding plain ``jax.Array`` attributes
(no Variables), an Optimizer over them with ``wrt=is_param`` and ``nnx.grad`` with a
``nnx.DiffState`` filter; ``self.count += 1`` rebinds an array attribute in the forward pass."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

SOURCE = "examples/nnx_toy_examples/07_array_leaves.py"


def skip_reason():
    if not hasattr(nnx, "Pytree"):
        return "flax 0.10.4 Modules cannot hold plain jax.Array attributes (no nnx.Pytree)"
    return None


class Linear(nnx.Module):
    def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs):
        self.w = jax.random.normal(rngs.params(), (din, dout))
        self.b = jnp.zeros((dout,))

    def __call__(self, x):
        return x @ self.w + self.b


class MLP(nnx.Module):
    def __init__(self, din, dhidden, dout, *, rngs: nnx.Rngs):
        self.count = jnp.array(0)
        self.linear1 = Linear(din, dhidden, rngs=rngs)
        self.linear2 = Linear(dhidden, dout, rngs=rngs)

    def __call__(self, x):
        self.count += 1
        return self.linear2(nnx.relu(self.linear1(x)))


def is_param(path, value):
    key = path[-1]
    return key == "w" or key == "b"


def run(jit, steps=3):
    X = np.linspace(0, 1, 16)[:, None]
    Y = 0.8 * X**2 + 0.1 + np.random.default_rng(0).normal(0, 0.1, size=X.shape)

    model = MLP(din=1, dhidden=8, dout=1, rngs=nnx.Rngs(0))
    tx = optax.sgd(1e-1)
    optimizer = nnx.Optimizer(model, tx, wrt=is_param)

    @jit
    def train_step(model: MLP, optimizer: nnx.Optimizer, batch):
        x, y = batch

        def loss_fn(model: MLP):
            y_pred = model(x)
            return jnp.mean((y - y_pred) ** 2)

        diff_state = nnx.DiffState(0, is_param)
        grads: nnx.State = nnx.grad(loss_fn, argnums=diff_state)(model)
        optimizer.update(model, grads)

    @jit
    def test_step(model: MLP, batch):
        x, y = batch
        y_pred = model(x)
        loss = jnp.mean((y - y_pred) ** 2)
        return {"loss": loss}

    logs = []
    for step in range(steps):
        idx = np.arange(step, step + 8)
        train_step(model, optimizer, (X[idx], Y[idx]))
        logs.append(test_step(model, (X, Y)))
    return {"logs": logs, "count": model.count, "model": model, "optimizer": optimizer}

"""examples/nnx_toy_examples/02_lifted_transforms.py: ``nnx.grad`` of the model inside the step,
``nnx.Optimizer`` updating in place, a Count Variable bumped by every forward pass."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from corpus import OPT_WRT
from corpus import optimizer as make_optimizer

SOURCE = "examples/nnx_toy_examples/02_lifted_transforms.py"


class Linear(nnx.Module):
    def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs):
        self.w = nnx.Param(jax.random.uniform(rngs.params(), (din, dout)))
        self.b = nnx.Param(jnp.zeros((dout,)))

    def __call__(self, x):
        return x @ self.w.value + self.b.value


class Count(nnx.Variable):
    pass


class MLP(nnx.Module):
    def __init__(self, din, dhidden, dout, *, rngs: nnx.Rngs):
        self.count = Count(jnp.array(0))
        self.linear1 = Linear(din, dhidden, rngs=rngs)
        self.linear2 = Linear(dhidden, dout, rngs=rngs)

    def __call__(self, x):
        self.count.value += 1
        x = self.linear1(x)
        x = jax.nn.relu(x)
        x = self.linear2(x)
        return x


def data():
    X = np.linspace(0, 1, 16)[:, None]
    Y = 0.8 * X**2 + 0.1 + np.random.default_rng(0).normal(0, 0.1, size=X.shape)
    return X, Y


def build():
    model = MLP(din=1, dhidden=8, dout=1, rngs=nnx.Rngs(0))
    tx = optax.sgd(1e-1)
    optimizer = make_optimizer(model, tx, wrt=nnx.Param)
    return model, optimizer


def steps(jit):
    @jit
    def train_step(model: MLP, optimizer: nnx.Optimizer, batch):
        x, y = batch

        def loss_fn(model: MLP):
            y_pred = model(x)
            return jnp.mean((y - y_pred) ** 2)

        grads: nnx.State = nnx.grad(loss_fn)(model)
        if OPT_WRT:
            optimizer.update(model, grads)
        else:  # flax 0.10.4
            optimizer.update(grads)

    @jit
    def test_step(model: MLP, batch):
        x, y = batch
        y_pred = model(x)
        loss = jnp.mean((y - y_pred) ** 2)
        return {"loss": loss}

    return train_step, test_step


def run(jit, n=3):
    X, Y = data()
    model, optimizer = build()
    train_step, test_step = steps(jit)
    logs = []
    for step in range(n):
        idx = np.arange(step, step + 8)
        train_step(model, optimizer, (X[idx], Y[idx]))
        logs.append(test_step(model, (X, Y)))
    return {"logs": logs, "model": model, "optimizer": optimizer, "y_pred": model(X)}

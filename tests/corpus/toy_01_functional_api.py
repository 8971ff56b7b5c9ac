"""examples/nnx_toy_examples/01_functional_api.py: split/merge by hand, ``jax.grad(has_aux=True)``
returning the Count state, SGD with ``jax.tree.map``; the ``@jax.jit`` steps take ``jit``."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from corpus import merge

SOURCE = "examples/nnx_toy_examples/01_functional_api.py"


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
        self.count.value += 1  # flax docs: self.count[...] += 1 (flax 0.10.4 has no v[...] = x)
        return self.linear2(jax.nn.relu(self.linear1(x) * 0.5))


def run(jit, steps=3):
    X = np.linspace(-np.pi, np.pi, 16)[:, None]
    Y = 0.8 * np.sin(X) + 0.1 + np.random.default_rng(0).normal(0, 0.1, size=X.shape)

    graphdef, params, counts = nnx.split(
        MLP(din=1, dhidden=8, dout=1, rngs=nnx.Rngs(0)), nnx.Param, Count
    )

    @jit
    def train_step(params, counts, batch):
        x, y = batch

        def loss_fn(params):
            # flax's example merges without copy=True; on flax 0.12.8 that raises TraceContextError
            # (eagerly and under jax.jit): the merged Count is mutated inside jax.grad's trace
            model = merge(graphdef, params, counts)
            y_pred = model(x)
            new_counts = nnx.state(model, Count)
            loss = jnp.mean((y - y_pred) ** 2)
            return loss, new_counts

        grad, counts = jax.grad(loss_fn, has_aux=True)(params)
        #                          |-------- sgd ---------|
        params = jax.tree.map(lambda w, g: w - 0.1 * g, params, grad)

        return params, counts

    @jit
    def test_step(params: nnx.State, counts: nnx.State, batch):
        x, y = batch
        model = nnx.merge(graphdef, params, counts)
        y_pred = model(x)
        loss = jnp.mean((y - y_pred) ** 2)
        return {"loss": loss}

    logs = []
    for step in range(steps):
        idx = np.arange(step, step + 8)
        params, counts = train_step(params, counts, (X[idx], Y[idx]))
        logs.append(test_step(params, counts, (X, Y)))

    model = nnx.merge(graphdef, params, counts)
    return {"logs": logs, "model": model, "y_pred": model(X)}

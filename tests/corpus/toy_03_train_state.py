"""examples/nnx_toy_examples/03_train_state.py: a ``flax.training.train_state.TrainState`` holding
the graphdef, params and Count state; the step merges with ``copy=True`` inside ``jax.grad``."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from flax.training import train_state

from corpus import merge

SOURCE = "examples/nnx_toy_examples/03_train_state.py"


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


class TrainState(train_state.TrainState):
    counts: nnx.State
    graphdef: nnx.GraphDef


def run(jit, steps=3):
    X = np.linspace(0, 1, 16)[:, None]
    Y = 0.8 * X**2 + 0.1 + np.random.default_rng(0).normal(0, 0.1, size=X.shape)

    model = MLP(din=1, dhidden=8, dout=1, rngs=nnx.Rngs(0))
    graphdef, params, counts = nnx.split(model, nnx.Param, Count)

    state = TrainState.create(
        apply_fn=None,
        graphdef=graphdef,
        params=params,
        tx=optax.sgd(0.1),
        counts=counts,
    )
    del params, counts

    @jit
    def train_step(state: TrainState, batch):
        x, y = batch

        def loss_fn(params):
            model = merge(state.graphdef, params, state.counts)  # nnx.merge(..., copy=True)
            y_pred = model(x)
            loss = jnp.mean((y - y_pred) ** 2)
            counts = nnx.state(model, Count)
            return loss, counts

        grads, counts = jax.grad(loss_fn, has_aux=True)(state.params)
        # sdg update
        state = state.apply_gradients(grads=grads, counts=counts)

        return state

    @jit
    def test_step(state: TrainState, batch):
        x, y = batch
        model = nnx.merge(state.graphdef, state.params, state.counts)
        y_pred = model(x)
        loss = jnp.mean((y - y_pred) ** 2)
        return {"loss": loss}

    logs = []
    for step in range(steps):
        idx = np.arange(step, step + 8)
        state = train_step(state, (X[idx], Y[idx]))
        logs.append(test_step(state, (X, Y)))

    model = nnx.merge(state.graphdef, state.params, state.counts)
    return {"logs": logs, "step": state.step, "opt_state": state.opt_state, "model": model}

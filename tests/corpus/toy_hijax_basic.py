"""examples/nnx_toy_examples/hijax_basic.py: flax hijax Variables (``nnx.var_defaults(hijax=True)``)
and a ``@jax.jit`` step that splits, differentiates ``nnx.with_vars(params, is_mutable=False)``
with ``jax.grad`` and updates the optimizer in place."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from corpus import missing

SOURCE = "examples/nnx_toy_examples/hijax_basic.py"


def skip_reason():
    return missing("var_defaults", "with_vars")


class Linear(nnx.Module):
    def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs):
        self.w = nnx.Param(rngs.params.uniform((din, dout)))
        self.b = nnx.Param(jnp.zeros((dout,)))

    def __call__(self, x):
        return x @ self.w + self.b[None]


class Count(nnx.Variable[nnx.A]):
    pass


class MLP(nnx.Module):
    def __init__(self, din, dhidden, dout, *, rngs: nnx.Rngs):
        self.count = Count(jnp.array(0))
        self.linear1 = Linear(din, dhidden, rngs=rngs)
        self.linear2 = Linear(dhidden, dout, rngs=rngs)

    def __call__(self, x):
        self.count[...] += 1
        return self.linear2(jax.nn.relu(self.linear1(x)) * 0.5)


def run(jit, steps=3):
    X = np.linspace(-np.pi, np.pi, 16)[:, None]
    Y = 0.8 * np.sin(X) + 0.1 + np.random.default_rng(0).normal(0, 0.1, size=X.shape)

    with nnx.var_defaults(hijax=True):
        model = MLP(din=1, dhidden=8, dout=1, rngs=nnx.Rngs(0))
        optimizer = nnx.Optimizer(model, optax.sgd(learning_rate=0.1), wrt=nnx.Param)

        @jit
        def train_step(model, optimizer, x, y):
            graphdef, params, nondiff = nnx.split(model, nnx.Param, ...)

            def loss_fn(params):
                model = nnx.merge(graphdef, params, nondiff)
                return jnp.mean((y - model(x)) ** 2)

            # flax HEAD: nnx.with_vars(params, is_mutable=False); flax 0.12.8's
            # with_vars(mutable=False) raises AttributeError (Variables have no `mutable`
            # attribute), so differentiate lojax copies
            grads = jax.grad(loss_fn)(nnx.with_vars(params, hijax=False))
            optimizer.update(model, grads)

        @jit
        def test_step(model: MLP, x, y):
            return {"loss": jnp.mean((y - model(x)) ** 2)}

        logs = []
        for step in range(steps):
            idx = np.arange(step, step + 8)
            train_step(model, optimizer, X[idx], Y[idx])
            logs.append(test_step(model, X, Y))
        return {"logs": logs, "count": model.count[...], "model": model, "optimizer": optimizer}

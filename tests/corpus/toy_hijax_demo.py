"""examples/nnx_toy_examples/hijax_demo.py: flax hijax Variables, a Model of hand-written Blocks
(linear, batch norm with EMA stats, dropout from an ``Rngs`` argument) in an ``nnx.List``, an SGD
``nnx.Pytree`` whose ``update`` writes params and momentum in place through ``jax.tree.map``, a
``@jax.jit`` train step, and an eval model made by ``nnx.merge(*nnx.split(model))`` that shares
the training model's Variables (``set_attributes(use_stats=True, deterministic=True)``)."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from corpus import PYTREE, missing

SOURCE = "examples/nnx_toy_examples/hijax_demo.py"


def skip_reason():
    return missing("var_defaults", "with_vars", "List", "Pytree", "data")


class Linear(nnx.Module):
    def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs):
        self.din, self.dout = din, dout
        initializer = jax.nn.initializers.lecun_normal()
        self.w = nnx.Param(initializer(rngs.params(), (din, dout)))
        self.b = nnx.Param(jnp.zeros((dout,)))

    def __call__(self, x: jax.Array):
        return x @ self.w + self.b[None]


class Block(nnx.Module):
    def __init__(
        self,
        din: int,
        dout: int,
        *,
        dropout_rate: float = 0.05,
        moumentum: float = 0.95,
        use_stats: bool = False,
        deterministic: bool = False,
        rngs: nnx.Rngs,
    ):
        # ----------- linear -------------------
        self.din, self.dout = din, dout
        initializer = jax.nn.initializers.lecun_normal()
        self.w = nnx.Param(initializer(rngs.params(), (din, dout)))
        self.b = nnx.Param(jnp.zeros((dout,)))
        # ----------- batch norm ---------------
        self.mu = moumentum  # momentum
        self.use_stats = use_stats
        self.mean = nnx.BatchStat(jnp.zeros((dout,)))
        self.var = nnx.BatchStat(jnp.ones((dout,)))
        self.scale = nnx.Param(jnp.ones((dout,)))
        self.bias = nnx.Param(jnp.zeros((dout,)))
        # ----------- dropout ------------------
        self.dropout_rate = dropout_rate
        self.deterministic = deterministic

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        # ----------- linear --------------------
        x = x @ self.w + self.b[None]
        # ----------- batch norm ----------------
        if self.use_stats:
            mean = self.mean
            var = self.var
        else:
            mean = jnp.mean(x, axis=0)
            var = jnp.var(x, axis=0)
            # ema updates
            # stop gradient is used until a Hijax supports updates from grad tracers
            sg = jax.lax.stop_gradient
            self.mean[...] = sg(self.mu * self.mean + (1 - self.mu) * mean)
            self.var[...] = sg(self.mu * self.var + (1 - self.mu) * var)
        x = (x - mean[None]) / jnp.sqrt(var[None] + 1e-5)
        x = x * self.scale + self.bias
        # ----------- dropout -------------------
        if not self.deterministic and self.dropout_rate > 0.0:
            assert rngs is not None
            keep_prob = 1.0 - self.dropout_rate
            mask = jax.random.bernoulli(rngs.dropout(), keep_prob, x.shape)
            x = jnp.where(mask, x / keep_prob, jnp.zeros_like(x))
        # ----------- activation ---------------
        x = jax.nn.gelu(x)
        return x


class Model(nnx.Module):
    def __init__(
        self,
        num_blocks: int,
        din: int,
        dhidden: int,
        dout: int,
        *,
        use_scan: bool = True,
        rngs: nnx.Rngs,
    ):
        self.count = nnx.Variable(jnp.array(0))
        self.block_in = Block(din, dhidden, rngs=rngs)
        self.linear_out = Linear(dhidden, dout, rngs=rngs)
        if use_scan:

            @jax.vmap
            def create_block(rngs, /):
                return Block(dhidden, dhidden, rngs=rngs)

            self.blocks = create_block(rngs.fork(split=num_blocks))
        else:
            self.blocks = nnx.List([Block(dhidden, dhidden, rngs=rngs) for i in range(num_blocks)])

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None):
        self.count[...] += 1
        x = self.block_in(x, rngs=rngs)
        if isinstance(self.blocks, nnx.List):
            for block in self.blocks:
                x = block(x, rngs=rngs)
        else:

            def block_fw(x, block: Block):
                x = block(x, rngs=rngs)
                return x, None

            x, _ = jax.lax.scan(block_fw, x, self.blocks)
        x = self.linear_out(x)
        return x


class OptState(nnx.Variable): ...


class SGD(PYTREE):  # nnx.Pytree (flax 0.10.4: nnx.Object, program skipped)
    def __init__(self, params, lr: float, decay: float = 0.9):
        self.lr = lr
        self.decay = decay

        def make_opt_state(x):
            if isinstance(x, nnx.Variable):
                return OptState(jnp.zeros_like(x[...]), **x.get_metadata())
            else:
                return OptState(jnp.zeros_like(x))

        self.momentum = nnx.data(jax.tree.map(make_opt_state, params))

    def update(self, params, grads):
        def update_fn(
            param: nnx.Variable[jax.Array],
            momentum: nnx.Variable[jax.Array],
            grad: nnx.Variable[jax.Array],
        ):
            momentum[...] = self.decay * momentum + (1 - self.decay) * grad
            param[...] -= self.lr * momentum

        jax.tree.map(update_fn, params, self.momentum, grads)


def run(jit, steps=3):
    X = np.linspace(-np.pi, np.pi, 16)[:, None].astype(np.float32)
    Y = (
        0.8 * np.sin(X)
        + 0.1
        + np.random.default_rng(0).normal(0, 0.1, size=X.shape).astype(np.float32)
    )

    with nnx.var_defaults(hijax=True):
        rngs = nnx.Rngs(params=0, dropout=1)
        model = Model(num_blocks=2, din=1, dhidden=8, dout=1, use_scan=False, rngs=rngs)
        optimizer = SGD(params=nnx.state(model, nnx.Param), lr=3e-3, decay=0.99)

        eval_model = nnx.merge(*nnx.split(model))
        eval_model.set_attributes(use_stats=True, deterministic=True)

        @jit
        def train_step(model: Model, optimizer: SGD, rngs: nnx.Rngs, x, y):
            graphdef, params, nondiff = nnx.split(model, nnx.Param, ...)

            def loss_fn(params):
                model = nnx.merge(graphdef, params, nondiff)
                loss = jnp.mean((model(x, rngs=rngs) - y) ** 2)
                return loss

            # flax HEAD: nnx.with_vars(params, is_mutable=False); flax 0.12.8's
            # with_vars(mutable=False) raises AttributeError (Variables have no `mutable`
            # attribute), so differentiate lojax copies
            grads = jax.grad(loss_fn)(nnx.with_vars(params, hijax=False))
            optimizer.update(params, grads)

        @jit
        def test_step(model: Model, x, y):
            return {"loss": jnp.mean((model(x) - y) ** 2)}

        logs = []
        for step in range(steps):
            idx = np.arange(step, step + 8)
            train_step(model, optimizer, rngs, X[idx], Y[idx])
            logs.append(test_step(eval_model, X, Y))
        return {
            "logs": logs,
            "count": eval_model.count[...],
            "model": model,
            "eval_model": eval_model,
            "optimizer": optimizer,
            "rngs": rngs,
        }

"""docs_nnx/guides/flax_gspmd.md: sharded init under ``jax.set_mesh`` (a ``@jax.jit``
``init_sharded_linear`` with ``nnx.with_partitioning``), and the ``MultiDotReluDot`` model (Params
annotated with shardings, layers made with ``nnx.vmap``, applied with ``jax.lax.scan``) trained by
a ``@jax.jit`` step that returns the model.  Depth 1024 shrunk to 16.  8 simulated CPU devices."""

import jax
import optax
from flax import nnx
from jax import numpy as jnp
from jax.sharding import PartitionSpec as P

from corpus import missing

SOURCE = "docs_nnx/guides/flax_gspmd.md"
DEVICES = 8


def skip_reason():
    return missing("set_mesh", where=jax) or missing("use_eager_sharding", "Pytree")


class DotReluDot(nnx.Module):
    def __init__(self, depth: int, rngs: nnx.Rngs):
        init_fn = nnx.initializers.lecun_normal()
        self.dot1 = nnx.Linear(
            depth,
            depth,
            kernel_init=nnx.with_partitioning(init_fn, (None, "model")),
            use_bias=False,  # or use `bias_init` to give it annotation too
            rngs=rngs,
        )
        self.w2 = nnx.Param(
            init_fn(rngs.params(), (depth, depth)),  # RNG key and shape for W2 creation
            sharding=("model", None),
        )

    def __call__(self, x: jax.Array):
        y = self.dot1(x)
        y = jax.nn.relu(y)
        y = jax.lax.with_sharding_constraint(y, P("data", "model"))
        z = jnp.dot(y, self.w2[...])
        return z


class MultiDotReluDot(nnx.Module):
    def __init__(self, depth: int, num_layers: int, rngs: nnx.Rngs):
        # Annotate the additional axis with sharding=None, meaning it will be
        # replicated across all devices.
        @nnx.vmap(transform_metadata={nnx.PARTITION_NAME: None})
        def create_sublayers(r):
            return DotReluDot(depth, r)

        self.layers = create_sublayers(rngs.fork(split=num_layers))

    def __call__(self, x):
        def scan_over_layers(x, layer):
            return layer(x), None

        x, _ = jax.lax.scan(scan_over_layers, x, self.layers)
        return x


def run(jit, steps=3):
    # the guide's "auto-mode mesh": jax.make_mesh's default axis types became Explicit in newer jax
    auto_mesh = jax.make_mesh(
        (2, 4), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2
    )
    nnx.use_eager_sharding(True)
    rngs = nnx.Rngs(0)

    @jit
    def init_sharded_linear(key):
        init_fn = nnx.nn.linear.default_kernel_init
        # Shard your parameter along `model` dimension, as in model/tensor parallelism
        return nnx.Linear(
            4,
            8,
            use_bias=False,
            rngs=nnx.Rngs(key),
            kernel_init=nnx.with_partitioning(init_fn, (None, "model")),
        )

    with jax.set_mesh(auto_mesh):
        key = rngs()
        linear = init_sharded_linear(key)
        assert linear.kernel.sharding.spec == P(None, "model")  # already sharded!
        x = jax.device_put(jnp.ones((16, 4)), P("data", None))
        y = jit(lambda m, x: m(x))(linear, x)

    @jit
    def train_step(model, optimizer, x, y):
        def loss_fn(model: DotReluDot):
            y_pred = model(x)
            return jnp.mean((y_pred - y) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return model, loss

    losses = []
    with jax.set_mesh(auto_mesh):
        # Training data
        input = jax.device_put(rngs.normal((8, 16)), P("data", None))
        label = jax.device_put(rngs.normal((8, 16)), P("data", None))
        # Model and optimizer
        model = MultiDotReluDot(16, 2, rngs=nnx.Rngs(0))
        optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

        # The loop
        for _i in range(steps):
            model, loss = train_step(model, optimizer, input, label)
            losses.append(loss)

    assert model.layers.dot1.kernel.sharding.spec == P(None, None, "model")
    return {"linear": linear, "y": y, "losses": losses, "model": model, "optimizer": optimizer}

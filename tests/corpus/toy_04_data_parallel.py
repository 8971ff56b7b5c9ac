"""examples/nnx_toy_examples/04_data_parallel_with_jit.py: model and optimizer state replicated on
an 8-device mesh with ``jax.device_put`` + ``nnx.update``, batches sharded along ``data``, an
``@nnx.jit`` step with ``nnx.value_and_grad`` and an adamw Optimizer.  Runs in a subprocess with
8 simulated CPU devices (``DEVICES``)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.experimental import mesh_utils

from corpus import OPT_WRT
from corpus import optimizer as make_optimizer

SOURCE = "examples/nnx_toy_examples/04_data_parallel_with_jit.py"
DEVICES = 8


class MLP(nnx.Module):
    def __init__(self, din, dmid, dout, *, rngs: nnx.Rngs):
        self.linear1 = nnx.Linear(din, dmid, rngs=rngs)
        self.linear2 = nnx.Linear(dmid, dout, rngs=rngs)

    def __call__(self, x):
        return self.linear2(nnx.relu(self.linear1(x)))


def run(jit, steps=3):
    # create a mesh + shardings
    num_devices = jax.local_device_count()
    mesh = jax.sharding.Mesh(mesh_utils.create_device_mesh((num_devices,)), ("data",))
    model_sharding = jax.NamedSharding(mesh, jax.sharding.PartitionSpec())
    data_sharding = jax.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))

    model = MLP(1, 8, 1, rngs=nnx.Rngs(0))
    optimizer = make_optimizer(model, optax.adamw(1e-2), wrt=nnx.Param)

    # replicate state
    state = nnx.state((model, optimizer))
    state = jax.device_put(state, model_sharding)
    nnx.update((model, optimizer), state)

    @jit
    def train_step(model: MLP, optimizer: nnx.Optimizer, x, y):
        def loss_fn(model: MLP):
            y_pred = model(x)
            return jnp.mean((y - y_pred) ** 2)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        if OPT_WRT:
            optimizer.update(model, grads)
        else:  # flax 0.10.4
            optimizer.update(grads)
        return loss

    rng = np.random.default_rng(0)
    losses = []
    for _step in range(steps):
        x = rng.uniform(-2, 2, size=(16, 1)).astype(np.float32)
        y = (0.8 * x**2 + 0.1 + rng.normal(0, 0.1, size=x.shape)).astype(np.float32)
        # shard data
        x, y = jax.device_put((x, y), data_sharding)
        # train
        losses.append(train_step(model, optimizer, x, y))

    kernel = model.linear1.kernel.value
    assert kernel.sharding.is_equivalent_to(model_sharding, kernel.ndim), kernel.sharding
    return {"losses": losses, "model": model, "optimizer": optimizer}

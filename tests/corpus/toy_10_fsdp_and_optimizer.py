"""examples/nnx_toy_examples/10_fsdp_and_optimizer.py: Params with ``out_sharding`` created by an
``@nnx.jit`` ``create_model()`` under ``jax.set_mesh`` on a (2, 4) mesh, a hand-written SGD
``nnx.Pytree`` with momentum Variables updated in place through ``jax.tree.map``, and an
``@nnx.jit`` train step on batches sharded along ``data``.  8 simulated CPU devices."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import mesh_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from corpus import PYTREE, missing

SOURCE = "examples/nnx_toy_examples/10_fsdp_and_optimizer.py"
DEVICES = 8


def skip_reason():
    return missing("set_mesh", where=jax) or missing("data", "Pytree")


@dataclasses.dataclass(unsafe_hash=True)
class MeshRules:
    embed: str | None = None
    mlp: str | None = None
    data: str | None = None

    def __call__(self, *keys: str) -> tuple[str, ...]:
        return tuple(getattr(self, key) for key in keys)


mesh_rules = MeshRules(
    embed=None,
    mlp="model",
    data="data",
)


class MLP(nnx.Module):
    def __init__(self, din, dmid, dout, rngs: nnx.Rngs):
        self.w1 = nnx.Param(
            nnx.initializers.lecun_normal()(rngs.params(), (din, dmid)),
            out_sharding=mesh_rules("embed", "mlp"),
        )
        self.b1 = nnx.Param(
            jnp.zeros((dmid,)),
            out_sharding=mesh_rules("mlp"),
        )
        self.w2 = nnx.Param(
            nnx.initializers.lecun_normal()(rngs.params(), (dmid, dout)),
            out_sharding=mesh_rules("embed", "mlp"),
        )

    def __call__(self, x: jax.Array):
        return nnx.relu(x @ self.w1 + self.b1) @ self.w2


class SGDState(nnx.Variable):
    pass


class SGD(PYTREE):  # nnx.Pytree (flax 0.10.4: nnx.Object, program skipped)
    def __init__(self, params: nnx.State, lr, decay=0.9):
        def init_optimizer_state(variable: nnx.Variable):
            return SGDState(jnp.zeros_like(variable.value), **variable.get_metadata())

        self.lr = lr
        self.params = nnx.data(params)
        self.momentum: nnx.State = nnx.data(
            jax.tree.map(
                init_optimizer_state,
                self.params,
                is_leaf=lambda x: isinstance(x, nnx.Variable),
            )
        )
        self.decay = decay

    def update(self, grads: nnx.State):
        def update_fn(params: nnx.Variable, momentum: SGDState, grad: nnx.Variable):
            # v_t = β * v_{t-1} + (1 - β) * ∇J(θ_t)
            momentum[...] = self.decay * momentum[...] + (1 - self.decay) * grad[...]
            # θ_{t+1} = θ_t - α * v_t
            params[...] -= self.lr * momentum[...]

        jax.tree.map(
            update_fn,
            self.params,
            self.momentum,
            grads,
            is_leaf=lambda x: isinstance(x, nnx.Variable),
        )


def run(jit, steps=3):
    mesh = jax.sharding.Mesh(
        mesh_utils.create_device_mesh((2, 4)),
        ("data", "model"),
    )

    def named_sharding(*names: str | None) -> NamedSharding:
        return NamedSharding(mesh, P(*names))

    @jit
    def create_model():
        # the example's MLP(1, 32, 1) shards w2's output axis of size 1 four ways, which eager
        # execution rejects (IndivisibleError); dout=4 divides the 'model' axis
        model = MLP(1, 8, 4, rngs=nnx.Rngs(0))
        optimizer = SGD(nnx.variables(model, nnx.Param), 0.01, decay=0.9)
        return model, optimizer

    with jax.set_mesh(mesh):
        model, optimizer = create_model()

    @jit
    def train_step(model: MLP, optimizer: SGD, x, y):
        def loss_fn(model):
            y_pred = model(x)
            loss = jnp.mean((y - y_pred) ** 2)
            return loss

        loss, grad = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(grad)
        return loss

    X = np.linspace(-2, 2, 32, dtype=np.float32)[:, None]
    Y = 0.8 * X**2 + 0.1 + np.random.default_rng(0).normal(0, 0.1, size=X.shape).astype(np.float32)
    losses = []
    for step in range(steps):
        idx = np.arange(8 * step, 8 * step + 8)
        x_batch, y_batch = jax.device_put((X[idx], Y[idx]), named_sharding("data"))
        loss = train_step(model, optimizer, x_batch, y_batch)
        losses.append(float(loss))

    assert model.w1.value.sharding.spec == P(None, "model"), model.w1.value.sharding
    assert optimizer.momentum["w1"].value.sharding.spec == P(None, "model")
    return {"losses": losses, "model": model, "optimizer": optimizer}

"""docs_nnx/nnx_basics.md: the MLP of custom Linears with Dropout and BatchNorm trained by the
``@nnx.jit`` ``train_step(model, optimizer, x, y, rngs)``; the ``@jax.jit`` split/merge
``forward(graphdef, state, x)`` of a StatefulLinear; LoRA model surgery and training it."""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from corpus import OPT_WRT, RNG_SAMPLERS
from corpus import optimizer as make_optimizer

SOURCE = "docs_nnx/nnx_basics.md"


def uniform(rngs, shape):
    if RNG_SAMPLERS:
        return rngs.params.uniform(shape)
    return jax.random.uniform(rngs.params(), shape)  # flax 0.10.4: no Rngs samplers


class Linear(nnx.Module):
    def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs):
        self.w = nnx.Param(uniform(rngs, (din, dout)))
        self.b = nnx.Param(jnp.zeros((dout,)))
        self.din, self.dout = din, dout

    def __call__(self, x: jax.Array):
        return x @ self.w + self.b[None]


class MLP(nnx.Module):
    def __init__(self, din: int, dmid: int, dout: int, *, rngs: nnx.Rngs):
        self.linear1 = Linear(din, dmid, rngs=rngs)
        self.dropout = nnx.Dropout(rate=0.1, deterministic=False)
        self.bn = nnx.BatchNorm(dmid, use_running_average=False, rngs=rngs)
        self.linear2 = Linear(dmid, dout, rngs=rngs)

    def __call__(self, x: jax.Array, rngs: nnx.Rngs):
        x = nnx.gelu(self.dropout(self.bn(self.linear1(x)), rngs=rngs))
        return self.linear2(x)


class LoraParam(nnx.Param):
    pass


class LoraLinear(nnx.Module):
    def __init__(self, linear: Linear, rank: int, rngs: nnx.Rngs):
        self.linear = linear
        self.A = LoraParam(jax.random.normal(rngs.params(), (linear.din, rank)))
        self.B = LoraParam(jax.random.normal(rngs.params(), (rank, linear.dout)))

    def __call__(self, x: jax.Array):
        return self.linear(x) + x @ self.A @ self.B


class Count(nnx.Variable):
    pass


class StatefulLinear(nnx.Module):
    def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs):
        self.w = nnx.Param(uniform(rngs, (din, dout)))
        self.b = nnx.Param(jnp.zeros((dout,)))
        self.count = Count(jnp.array(0, dtype=jnp.uint32))

    def __call__(self, x: jax.Array):
        self.count.value += 1
        return x @ self.w + self.b


def run(jit):
    out = {}

    @jit  # Automatic state management
    def train_step(model, optimizer, x, y, rngs):
        def loss_fn(model: MLP, rngs: nnx.Rngs):
            y_pred = model(x, rngs)
            return jnp.mean((y_pred - y) ** 2)

        loss, grads = nnx.value_and_grad(loss_fn)(model, rngs)
        if OPT_WRT:
            optimizer.update(model, grads)  # In place updates.
        else:  # flax 0.10.4
            optimizer.update(grads)

        return loss

    # training
    model = MLP(2, 16, 10, rngs=nnx.Rngs(0))
    # the guide uses optax.adam(1e-3): linear1's bias feeds BatchNorm, so its true gradient is 0 and
    # the computed one float noise, which Adam turns into full +-lr steps (differently eager and
    # jitted: nnx.jit and hijaxc.jit agree with each other, not with eager); SGD keeps it small
    optimizer = make_optimizer(model, optax.sgd(1e-2), wrt=nnx.Param)
    rngs = nnx.Rngs(1)
    # the guide trains on x = jnp.ones((5, 2)): identical rows have zero batch variance, and
    # BatchNorm then amplifies float noise; distinct rows keep eager and jitted runs comparable
    x, y = jnp.linspace(-1, 1, 10).reshape(5, 2), jnp.ones((5, 10))
    out["losses"] = [train_step(model, optimizer, x, y, rngs) for _ in range(2)]
    out.update(model=model, optimizer=optimizer, rngs=rngs)

    # model surgery, then training the LoRA model (same step)
    rngs2 = nnx.Rngs(0)
    lora = MLP(2, 8, 5, rngs=rngs2)
    lora.linear1 = LoraLinear(lora.linear1, 4, rngs=rngs2)
    lora.linear2 = LoraLinear(lora.linear2, 4, rngs=rngs2)
    lora_opt = make_optimizer(lora, optax.sgd(1e-2), wrt=nnx.Param)
    out["lora_losses"] = [train_step(lora, lora_opt, x, jnp.ones((5, 5)), rngs2) for _ in range(2)]
    out.update(lora=lora, lora_opt=lora_opt)

    # the functional API
    stateful = StatefulLinear(din=3, dout=5, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(stateful)

    @jit
    def forward(
        graphdef: nnx.GraphDef, state: nnx.State, x: jax.Array
    ) -> tuple[jax.Array, nnx.State]:
        # 2. Use `nnx.merge` to create a new model inside the JAX transformation.
        model = nnx.merge(graphdef, state)
        # 3. Call the `nnx.Module`
        y = model(x)
        # 4. Use `nnx.split` to propagate `nnx.State` updates.
        _, state = nnx.split(model)
        return y, state

    y, state = forward(graphdef, state, x=jnp.ones((1, 3)))
    # 5. Update the state of the original `nnx.Module`.
    nnx.update(stateful, state)
    out.update(y=y, stateful=stateful)
    return out

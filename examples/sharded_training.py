"""Data-parallel + parameter-sharded (FSDP-style) training of an NNX model with hijaxc on a mesh
of 8 simulated CPU devices.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python examples/sharded_training.py

(the flag is set here if absent).  The mesh is 4 (data) x 2 (fsdp): each batch is split over
``data``, each weight matrix's first axis over ``fsdp`` (Adam state follows its parameter).
hijaxc compiles the step so that every Variable split over devices keeps its sharding: after the
steps each sharded parameter and optimizer-state leaf has exactly the sharding it started with.
Replicated ones (the biases) take the sharding XLA gives their update, as under ``jax.jit``.  The
values equal a single-device run of the same steps.
"""

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _compat import make_optimizer, normal, optimizer_update  # noqa: E402

import hijaxc  # noqa: E402


class Linear(nnx.Module):
    def __init__(self, din, dout, rngs):
        self.kernel = nnx.Param(normal(rngs, (din, dout)) * 0.2)
        self.bias = nnx.Param(jnp.zeros((dout,)))

    def __call__(self, x):
        return x @ self.kernel + self.bias


class MLP(nnx.Module):
    def __init__(self, rngs):
        self.l1 = Linear(8, 32, rngs)
        self.l2 = Linear(32, 32, rngs)
        self.l3 = Linear(32, 4, rngs)

    def __call__(self, x):
        return self.l3(nnx.relu(self.l2(nnx.relu(self.l1(x)))))


@hijaxc.jit
def train_step(model, optimizer, x, y):
    def loss_fn(model):
        return ((model(x) - y) ** 2).mean()

    loss, grads = jax.value_and_grad(loss_fn)(model)
    optimizer_update(optimizer, model, grads)
    return loss


def variables(tree):
    """(path, Variable) of every Variable reachable from ``tree``."""
    return [(p, v) for p, v in nnx.iter_graph(tree) if isinstance(v, nnx.Variable)]


def shard_fsdp(tree, mesh):
    """Put each Variable's value on the mesh: first axis over ``fsdp`` where it divides, else
    replicated."""
    n = mesh.shape["fsdp"]
    for _, v in variables(tree):
        x = v[...]
        spec = (
            P("fsdp") if getattr(x, "ndim", 0) >= 1 and x.shape[0] % n == 0 and x.ndim == 2 else P()
        )
        _write(v, jax.device_put(x, NamedSharding(mesh, spec)))


def _write(v, x):
    # replace the value whatever its sharding (``v[...] = x`` may keep the old layout)
    if hasattr(v, "set_value"):
        v.set_value(x)
    else:  # flax 0.10
        v.value = x


def build(mesh=None):
    model = MLP(nnx.Rngs(0))
    optimizer = make_optimizer(model, optax.adam(1e-2))
    if hasattr(optimizer, "model"):  # flax 0.10 keeps the model inside the optimizer
        model = optimizer.model
    if mesh is not None:
        shard_fsdp((model, optimizer), mesh)
    return model, optimizer


def data(step):
    k = jax.random.key(step)
    x = jax.random.normal(k, (16, 8))
    return x, jnp.sin(x[:, :4]) + 0.1 * x[:, 4:]


def run(mesh=None, steps=5):
    model, optimizer = build(mesh)
    before = {p: v[...].sharding for p, v in variables((model, optimizer))}
    losses = []
    for i in range(steps):
        x, y = data(i)
        if mesh is not None:
            x = jax.device_put(x, NamedSharding(mesh, P("data")))
            y = jax.device_put(y, NamedSharding(mesh, P("data")))
        losses.append(float(train_step(model, optimizer, x, y)))
    return model, optimizer, losses, before


def _equivalent(sharding, x):
    try:
        return sharding.is_equivalent_to(x.sharding, x.ndim)
    except (IndexError, ValueError):  # a sharding of another rank
        return False


def main(verbose=True):
    devices = np.array(jax.devices()[:8])
    if devices.size < 8:
        raise SystemExit("needs 8 devices: set XLA_FLAGS=--xla_force_host_platform_device_count=8")
    mesh = Mesh(devices.reshape(4, 2), ("data", "fsdp"))
    model, optimizer, losses, before = run(mesh)
    ref_model, _, ref_losses, _ = run(None)
    after = {p: v[...].sharding for p, v in variables((model, optimizer))}
    kept = all(after[p] == before[p] for p in before if not before[p].is_fully_replicated)
    same = all(
        np.allclose(np.asarray(a[...]), np.asarray(b[...]), atol=1e-5)
        for (_, a), (_, b) in zip(variables(model), variables(ref_model))
    )
    # no resharding between steps: the compiled step takes and returns every state leaf with the
    # same sharding (so nothing moves when the next step starts)
    x, y = data(0)
    x, y = (jax.device_put(t, NamedSharding(mesh, P("data"))) for t in (x, y))
    compiled = train_step.lower(model, optimizer, x, y).compile()
    ins = jax.tree.leaves(compiled.input_shardings)
    outs = jax.tree.leaves(compiled.output_shardings)
    leaves = [v[...] for _, v in variables((model, optimizer))]
    resharding = [
        ".".join(map(str, p))
        for (p, _), x_ in zip(variables((model, optimizer)), leaves)
        if not any(_equivalent(s_, x_) for s_ in outs) or not any(_equivalent(s_, x_) for s_ in ins)
    ]
    if verbose:
        print("losses (8 devices):", " ".join(f"{loss:.5f}" for loss in losses))
        print("losses (1 device): ", " ".join(f"{loss:.5f}" for loss in ref_losses))
        for p, v in variables(model):
            print(f"  {'.'.join(map(str, p)):16} {str(v[...].shape):10} {v[...].sharding.spec}")
        print("shardings kept:", kept)
        print("same values as one device:", same)
        print(
            "state leaves whose sharding the compiled step does not return:", resharding or "none"
        )
    return dict(losses=losses, ref_losses=ref_losses, kept=kept, same=same, resharding=resharding)


if __name__ == "__main__":
    r = main()
    sys.exit(0 if r["kept"] and r["same"] and not r["resharding"] else 1)

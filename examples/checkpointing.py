"""Checkpoint and resume sharded training: a ``@hijaxc.jit`` step trains an NNX model in place on
a 4 (data) x 2 (model) mesh of 8 simulated CPU devices; after N steps the model and optimizer
state are saved with orbax-checkpoint, restored into a fresh model built with ``nnx.eval_shape``
and the same shardings, and training continues for M steps.

    python examples/checkpointing.py [--steps N M] [--dir DIR]

(run as a script without a device count in ``XLA_FLAGS``, it restarts itself with
``--xla_force_host_platform_device_count=8``.)  The losses and
the final state equal an uninterrupted run of N + M steps, and every restored Variable has the
sharding it was saved with -- nothing is gathered to one device on the way.
"""

import argparse
import inspect
import os
import shutil
import sys
import tempfile
import time

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import hijaxc

MESH_SHAPE = {"data": 4, "model": 2}
BATCH = 32
TX = optax.adam(
    1e-2
)  # one optimizer definition: a new one per model would make every step a new trace

# ---- the one place where the supported JAX / flax versions differ (feature detection) ---------
if "model" in inspect.signature(nnx.Optimizer.update).parameters:  # flax 0.11+

    def apply_gradients(optimizer, model, grads):
        optimizer.update(model, grads)
else:  # flax 0.10: ``update(grads)`` (the optimizer holds the model)

    def apply_gradients(optimizer, model, grads):
        optimizer.update(grads)


if hasattr(jax.sharding, "AxisType"):  # say Auto: ``jax.make_mesh`` makes Explicit axes on new JAX

    def make_mesh(devices, names):
        return Mesh(devices, names, axis_types=(jax.sharding.AxisType.Auto,) * len(names))
else:  # no axis types: every axis is Auto

    def make_mesh(devices, names):
        return Mesh(devices, names)
# ------------------------------------------------------------------------------------------------


class Model(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(8, 64, use_bias=False, rngs=rngs)  # BatchNorm follows
        self.bn = nnx.BatchNorm(64, rngs=rngs)
        self.linear_out = nnx.Linear(64, 4, rngs=rngs)

    def __call__(self, x):
        return self.linear_out(nnx.gelu(self.bn(self.linear(x))))


@hijaxc.jit
def train_step(model, optimizer, x, y):
    def loss_fn(model):
        return ((model(x) - y) ** 2).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    apply_gradients(optimizer, model, grads)
    return loss


def spec_for(shape):
    """Every weight's last axis over ``model`` (Adam's moments follow their parameter)."""
    if len(shape) >= 1 and shape[-1] % MESH_SHAPE["model"] == 0:
        return P(*([None] * (len(shape) - 1)), "model")
    return P()


def variables(tree):
    """(path, Variable) of every Variable reachable from ``tree``, each once."""
    return [
        (".".join(map(str, p)), v) for p, v in nnx.iter_graph(tree) if isinstance(v, nnx.Variable)
    ]


def shardings(tree):
    return {p: v[...].sharding for p, v in variables(tree)}


def new_state():
    """Model and optimizer, freshly initialised (flax 0.10's optimizer holds the model too)."""
    model = Model(nnx.Rngs(0))
    return model, nnx.Optimizer(model, TX, wrt=nnx.Param)


def build(mesh):
    model, optimizer = new_state()
    for _, v in variables((model, optimizer)):
        x = jax.device_put(v[...], NamedSharding(mesh, spec_for(v[...].shape)))
        if hasattr(v, "set_value"):
            v.set_value(x)
        else:  # flax 0.10
            v.value = x
    return model, optimizer


def batch(step, mesh):
    rng = np.random.default_rng(step)
    x = rng.normal(size=(BATCH, 8)).astype(np.float32)
    y = (np.sin(x[:, :4]) + 0.1 * x[:, 4:]).astype(np.float32)
    return tuple(jax.device_put(a, NamedSharding(mesh, P("data"))) for a in (x, y))


def train(model, optimizer, mesh, steps):
    return [float(train_step(model, optimizer, *batch(i, mesh))) for i in steps]


def save(path, model, optimizer):
    _, state = nnx.split((model, optimizer))
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path, state)
    checkpointer.wait_until_finished()


def restore(path, mesh):
    """A fresh model and optimizer: structure from ``nnx.eval_shape`` (no arrays allocated), each
    leaf restored straight onto its devices with the sharding ``spec_for`` gives it."""
    graphdef, abstract = nnx.split(nnx.eval_shape(new_state))
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(
            a.shape, a.dtype, sharding=NamedSharding(mesh, spec_for(a.shape))
        ),
        abstract,
    )
    state = ocp.StandardCheckpointer().restore(path, abstract)
    return nnx.merge(graphdef, state)


def main(n=3, m=3, directory=None, verbose=True):
    devices = np.array(jax.devices()[:8])
    if devices.size < 8:
        raise SystemExit("needs 8 devices: set XLA_FLAGS=--xla_force_host_platform_device_count=8")
    mesh = make_mesh(devices.reshape(tuple(MESH_SHAPE.values())), tuple(MESH_SHAPE))
    temporary = directory is None
    directory = os.path.abspath(directory or tempfile.mkdtemp(prefix="hijaxc-ckpt-"))
    path = os.path.join(directory, f"step_{n}")

    t0 = time.perf_counter()
    model, optimizer = build(mesh)  # uninterrupted: N + M steps
    ref_losses = train(model, optimizer, mesh, range(n + m))
    ref_state = {p: np.asarray(v[...]) for p, v in variables((model, optimizer))}

    t1 = time.perf_counter()
    model, optimizer = build(mesh)  # N steps, save, drop everything
    losses = train(model, optimizer, mesh, range(n))
    saved_shardings = shardings((model, optimizer))
    save(path, model, optimizer)
    del model, optimizer
    t2 = time.perf_counter()
    model, optimizer = restore(path, mesh)  # fresh objects, then M more steps
    t3 = time.perf_counter()
    restored_shardings = shardings((model, optimizer))
    losses += train(model, optimizer, mesh, range(n, n + m))
    t4 = time.perf_counter()
    state = {p: np.asarray(v[...]) for p, v in variables((model, optimizer))}

    same_paths = sorted(state) == sorted(ref_state) == sorted(restored_shardings)
    r = {
        "losses": losses,
        "ref_losses": ref_losses,
        "same_losses": losses == ref_losses,
        "same_state": same_paths and all(np.array_equal(state[p], ref_state[p]) for p in state),
        "max_state_diff": max(
            float(np.max(np.abs(state[p].astype(np.float64) - ref_state[p]))) for p in state
        )
        if same_paths
        else float("inf"),
        "restored_shardings": same_paths
        and all(restored_shardings[p] == saved_shardings[p] for p in saved_shardings),
        "kept_after": all(
            shardings((model, optimizer))[p] == saved_shardings[p] for p in saved_shardings
        ),
        "n_variables": len(saved_shardings),
        "times": {
            "uninterrupted": t1 - t0,
            "first_part_and_save": t2 - t1,
            "restore": t3 - t2,
            "resumed": t4 - t3,
        },
        "path": path,
    }
    if verbose:
        print(f"mesh {dict(mesh.shape)}; checkpoint after step {n}: {path}")
        print(f"uninterrupted ({n + m} steps): " + " ".join(f"{v:.6f}" for v in ref_losses))
        print(f"saved + resumed ({n} + {m}):   " + " ".join(f"{v:.6f}" for v in losses))
        for p, s in restored_shardings.items():
            if p.startswith("0."):
                print(f"  restored {p[2:]:20} {s.spec}")
        print(f"same losses: {r['same_losses']}")
        print(f"same final state: {r['same_state']} (max |diff| {r['max_state_diff']:.3g})")
        print(
            f"restored Variables have the saved shardings: {r['restored_shardings']} "
            f"({r['n_variables']} Variables); kept while training on: {r['kept_after']}"
        )
        print("time: " + ", ".join(f"{k} {v:.2f} s" for k, v in r["times"].items()))
    if temporary:
        shutil.rmtree(directory, ignore_errors=True)
    return r


if __name__ == "__main__":
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        # JAX fixes the device count when it starts its backend (here: already, at import)
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
        ).strip()
        os.execv(sys.executable, [sys.executable, *sys.argv])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, nargs=2, default=(3, 3), metavar=("N", "M"))
    ap.add_argument(
        "--dir", default=None, help="checkpoint directory (default: a new temporary one)"
    )
    a = ap.parse_args()
    r = main(*a.steps, directory=a.dir)
    sys.exit(
        0
        if r["same_losses"] and r["same_state"] and r["restored_shardings"] and r["kept_after"]
        else 1
    )

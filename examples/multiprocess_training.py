"""Training across processes: a hijaxc step on JAX's multi-controller runtime (``jax.distributed``).

    python examples/multiprocess_training.py                 # 2 processes x 4 CPU devices
    python examples/multiprocess_training.py --processes 1   # the same program: 1 process x 8

The launcher (this file, run as a script) starts the processes on localhost, each with its own
``XLA_FLAGS=--xla_force_host_platform_device_count=<8 / processes>``, a free port for the
coordinator, and ``--worker <i>``.  Each worker calls ``jax.distributed.initialize``, builds the
same 4 (data) x 2 (model) mesh over all 8 devices of all processes, puts an NNX model (Linear,
BatchNorm, Linear) and its ``nnx.Optimizer`` state on it -- every weight's last axis over
``model`` -- and trains it in place with a ``@hijaxc.jit`` step for a few steps.  Each process
feeds only its own rows of every batch (``jax.make_array_from_process_local_data``); BatchNorm's
batch statistics are still over the global batch.  Then the same program runs again with
``nnx.jit`` from the same initial state, for comparison.

Process 0 prints the losses, a checksum of the final state (every Variable gathered to the host),
whether every Variable kept its sharding, and one ``RESULT {json}`` line for tests.  Process 1
prints nothing unless it fails.

On jaxlib 0.4.38 the 2 x 4 run fails about one time in three with ``gloo::EnforceNotMet ...
op.preamble.length <= op.nbytes`` -- gloo crossing two collectives' messages when a process holds
several devices, with ``nnx.jit`` alone as well; ``--processes 8`` (one device each) avoids it.

No hung runs: the workers form one process group that the launcher kills as soon as one of them
fails or the time limit (``--timeout``) passes, and each worker exits by itself if the launcher
dies.
"""

import argparse
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback

import jax
import numpy as np
import optax
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import hijaxc

N_DEVICES = 8  # over all processes
MESH_SHAPE = {"data": 4, "model": 2}
BATCH = 32

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


if "jax_cpu_collectives_implementation" in jax.config.values:  # cross-process collectives on CPU

    def use_gloo():
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
else:

    def use_gloo():
        jax.config.update("jax_cpu_enable_gloo_collectives", True)
# ------------------------------------------------------------------------------------------------


class Model(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(8, 64, use_bias=False, rngs=rngs)  # BatchNorm follows
        self.bn = nnx.BatchNorm(64, rngs=rngs)
        self.linear_out = nnx.Linear(64, 4, rngs=rngs)

    def __call__(self, x):
        return self.linear_out(nnx.gelu(self.bn(self.linear(x))))


def train_step(model, optimizer, x, y):
    def loss_fn(model):
        return ((model(x) - y) ** 2).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)  # also updates BatchNorm's statistics
    apply_gradients(optimizer, model, grads)
    return loss


nnx_step = nnx.jit(train_step)  # the reference; hijaxc.jit(train_step) is made in ``worker``


# ---- state on the mesh -------------------------------------------------------------------------
def variables(tree):
    """(path, Variable) of every Variable reachable from ``tree``, each once."""
    return [
        (".".join(map(str, p)), v) for p, v in nnx.iter_graph(tree) if isinstance(v, nnx.Variable)
    ]


def spec_for(shape):
    """Every weight's last axis over ``model`` (Adam's moments follow their parameter)."""
    if len(shape) >= 1 and shape[-1] % MESH_SHAPE["model"] == 0:
        return P(*([None] * (len(shape) - 1)), "model")
    return P()


def global_array(value, sharding):
    """A value every process holds in full -> one array over the whole mesh (each process puts
    only its own shards)."""
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def build(mesh):
    model = Model(nnx.Rngs(0))  # the same initial values in every process
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    for _, v in variables((model, optimizer)):
        x = v[...]
        x = global_array(x, NamedSharding(mesh, spec_for(x.shape)))
        if hasattr(v, "set_value"):
            v.set_value(x)
        else:  # flax 0.10
            v.value = x
    return model, optimizer


def batch(step, mesh):
    """Global batch ``step`` (every process can compute it); each process contributes only the
    rows its devices hold."""
    rng = np.random.default_rng(step)
    x = rng.normal(size=(BATCH, 8)).astype(np.float32)
    y = (np.sin(x[:, :4]) + 0.1 * x[:, 4:]).astype(np.float32)
    sharding = NamedSharding(mesh, P("data"))
    rows = [i[0] for i in sharding.addressable_devices_indices_map(x.shape).values()]
    lo, hi = min(r.start or 0 for r in rows), max(BATCH if r.stop is None else r.stop for r in rows)
    return tuple(
        jax.make_array_from_process_local_data(sharding, a[lo:hi], a.shape) for a in (x, y)
    )


def host_state(tree):
    """Every Variable's full value as a NumPy array (gathered from all processes)."""
    return {
        p: np.asarray(multihost_utils.process_allgather(v[...], tiled=True))
        for p, v in variables(tree)
    }


def checksum(state):
    return float(
        sum(
            (k + 1) * np.abs(state[p].astype(np.float64)).sum() for k, p in enumerate(sorted(state))
        )
    )


def train(step_fn, mesh, steps):
    model, optimizer = build(mesh)
    before = {p: v[...].sharding for p, v in variables((model, optimizer))}
    losses, seconds = [], []
    for i in range(steps):
        x, y = batch(i, mesh)
        t = time.perf_counter()
        losses.append(float(step_fn(model, optimizer, x, y)))  # float(): waits for the step
        seconds.append(time.perf_counter() - t)
    after = {p: v[...].sharding for p, v in variables((model, optimizer))}
    kept = sorted(p for p in before if after.get(p) == before[p])
    changed = sorted(p for p in before if after.get(p) != before[p])
    state = host_state((model, optimizer))
    return state, {
        "losses": losses,
        "checksum": checksum(state),
        "kept": len(kept),
        "changed": changed,
        "n_variables": len(before),
        "first_step_s": seconds[0],
        "later_step_ms": 1e3 * float(np.median(seconds[1:] or [0])),
        "specs": {p: str(v[...].sharding.spec) for p, v in variables(model)},
    }


# ---- worker ------------------------------------------------------------------------------------
def exit_now(kind, value, tb):
    """An uncaught error in a worker: print it and exit at once (a normal exit would first wait for
    the other processes in JAX's distributed shutdown); the launcher then stops the others."""
    traceback.print_exception(kind, value, tb)
    sys.stderr.flush()
    os._exit(1)


def exit_with_launcher():
    """Exit if the launcher dies (its children must never outlive it)."""
    parent = os.getppid()

    def watch():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def worker(args):
    exit_with_launcher()
    if args.processes > 1:
        use_gloo()
        jax.distributed.initialize(
            coordinator_address=f"127.0.0.1:{args.port}",
            num_processes=args.processes,
            process_id=args.worker,
            initialization_timeout=60,
        )
    hijaxc_step = hijaxc.jit(train_step)  # updates model and optimizer in place
    if args.fail_process == jax.process_index():
        raise RuntimeError(f"process {jax.process_index()}: failing on purpose (--fail-process)")
    if jax.device_count() != N_DEVICES:
        raise RuntimeError(
            f"needs {N_DEVICES} devices over all processes, got {jax.device_count()}"
        )
    mesh = make_mesh(np.array(jax.devices()).reshape(tuple(MESH_SHAPE.values())), tuple(MESH_SHAPE))

    t0 = time.perf_counter()
    state, ours = train(hijaxc_step, mesh, args.steps)
    t1 = time.perf_counter()
    _, ref = train(nnx_step, mesh, args.steps)
    t2 = time.perf_counter()
    if jax.process_index() == 0:
        print(
            f"{jax.process_count()} process(es) x {jax.local_device_count()} devices, "
            f"mesh {dict(mesh.shape)}"
        )
        for name, r in (("hijaxc.jit", ours), ("nnx.jit", ref)):
            print(f"{name:10} losses: " + " ".join(f"{v:.6f}" for v in r["losses"]))
            print(f"{name:10} state checksum: {r['checksum']:.9g}")
        for p, s in ours["specs"].items():
            print(f"  {p:22} {s}")
        print(
            f"shardings kept: {ours['kept']}/{ours['n_variables']} Variables "
            f"(nnx.jit: {ref['kept']}/{ref['n_variables']})"
        )
        same = ours["losses"] == ref["losses"] and ours["checksum"] == ref["checksum"]
        print(f"same losses and checksum as nnx.jit: {same}")
        for name, r, total in (("hijaxc.jit", ours, t1 - t0), ("nnx.jit", ref, t2 - t1)):
            print(
                f"{name:10} time: first step (trace + compile) {r['first_step_s']:.2f} s, later "
                f"steps {r['later_step_ms']:.1f} ms each (median); "
                f"build + train + gather {total:.2f} s"
            )
        if args.save_state:
            np.savez(args.save_state, **state)
        print(
            "RESULT "
            + json.dumps({"processes": jax.process_count(), "hijaxc": ours, "nnx_jit": ref}),
            flush=True,
        )
    if args.processes > 1:
        jax.distributed.shutdown()


# ---- launcher ----------------------------------------------------------------------------------
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_group(pgid):
    """Popen arguments that put the child in process group ``pgid`` (0: a new one)."""
    if "process_group" in inspect.signature(subprocess.Popen).parameters:  # Python 3.11+
        return {"process_group": pgid}
    return {"preexec_fn": lambda: os.setpgid(0, pgid)}


def launch(args):
    """Start the workers in one new process group; wait for all, or kill the group as soon as
    one fails or the time limit passes.  Returns the exit status."""
    port = free_port()
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={N_DEVICES // args.processes}",
    )
    procs = []
    try:
        for i in range(args.processes):
            cmd = [
                sys.executable,
                os.path.abspath(__file__),
                "--worker",
                str(i),
                "--port",
                str(port),
                "--processes",
                str(args.processes),
                "--steps",
                str(args.steps),
                "--fail-process",
                str(args.fail_process),
                "--save-state",
                args.save_state,
            ]
            # the first worker leads a new process group, the others join it
            procs.append(subprocess.Popen(cmd, env=env, **in_group(procs[0].pid if procs else 0)))
        print("workers: " + " ".join(f"{i}:{p.pid}" for i, p in enumerate(procs)), flush=True)
        deadline = time.monotonic() + args.timeout
        while True:
            codes = [p.poll() for p in procs]
            failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                print(
                    f"launcher: process {failed[0]} exited with {codes[failed[0]]}; stopping the "
                    "others",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
            if all(c == 0 for c in codes):
                return 0
            if time.monotonic() > deadline:
                print(
                    f"launcher: time limit ({args.timeout} s) passed; stopping the workers",
                    file=sys.stderr,
                    flush=True,
                )
                return 124
            time.sleep(0.1)
    finally:
        if procs:
            try:
                os.killpg(procs[0].pid, signal.SIGKILL)  # the workers' group (ours only)
            except ProcessLookupError:
                pass
            for p in procs:
                p.wait()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--processes", type=int, default=2, choices=(1, 2, 4, 8))
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds, for all workers")
    ap.add_argument("--save-state", default="", help="process 0 saves hijaxc's final state (.npz)")
    ap.add_argument("--fail-process", type=int, default=-1, help="(tests) this process fails")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is None:
        return launch(args)
    sys.excepthook = exit_now
    worker(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

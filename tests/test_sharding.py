"""S11 on 8 simulated CPU devices.  JAX fixes its device count at start-up, so each check runs in a
subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``."""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run8(code_or_path, *args, tmp_path=None):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    if not code_or_path.endswith(".py"):  # a file, so hijaxc can read the function's source
        path = os.path.join(str(tmp_path), "script.py")
        with open(path, "w") as f:
            f.write(textwrap.dedent(code_or_path))
        code_or_path = path
    cmd = [sys.executable, code_or_path, *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def test_sharded_training_example_keeps_shardings_and_values():
    out = run8(os.path.join(ROOT, "examples", "sharded_training.py"))
    assert "shardings kept: True" in out
    assert "same values as one device: True" in out
    assert "does not return: none" in out
    assert "P('fsdp'" in out or "PartitionSpec('fsdp'" in out


def test_sharded_variables_pinned_donated_and_passthrough(tmp_path):
    out = run8(
        """
        import jax, jax.numpy as jnp, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        import hijaxc
        mesh = Mesh(np.array(jax.devices()), ("d",))
        row = NamedSharding(mesh, P("d", None))
        rep = NamedSharding(mesh, P())
        w = hijaxc.Variable(jax.device_put(jnp.arange(32.0).reshape(16, 2), row))
        n = hijaxc.Variable(jax.device_put(jnp.zeros(()), rep))

        @hijaxc.jit(out_shardings=rep)
        def step(x):
            w[...] = w[...] * 0.5 + x.sum()
            n[...] += 1
            return (w[...] ** 2).sum()

        x = jax.device_put(jnp.ones((8, 2)), NamedSharding(mesh, P("d", None)))
        ref_w = np.arange(32.0).reshape(16, 2)
        for _ in range(4):
            out = step(x)
            ref_w = ref_w * 0.5 + 16.0
        assert w[...].sharding == row, w[...].sharding
        assert n[...].sharding.is_equivalent_to(rep, 0)
        assert out.sharding.is_equivalent_to(rep, 0)
        np.testing.assert_allclose(np.asarray(w[...]), ref_w)
        assert int(n[...]) == 4
        held = w[...]
        step(x)
        assert not held.is_deleted()       # the user still holds it: never donated
        print("ok")
    """,
        tmp_path=tmp_path,
    )
    assert out.strip().endswith("ok")


_MESH_SCRIPT = """
import sys
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
import hijaxc

kind = sys.argv[1]
AT = jax.sharding.AxisType
types = {"explicit": (AT.Explicit, AT.Explicit), "auto": (AT.Auto, AT.Auto),
         "mixed": (AT.Explicit, AT.Auto)}[kind]
mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=types)
use_mesh = getattr(jax, "set_mesh", None) or jax.sharding.use_mesh


def init():
    w = jax.device_put(jnp.arange(8.0).reshape(4, 2) / 10, NamedSharding(mesh, P(None, "model")))
    acc = jax.device_put(jnp.zeros((8, 2)), NamedSharding(mesh, P()))  # replicated
    return hijaxc.Variable(w), hijaxc.Variable(acc), hijaxc.Variable(jnp.zeros((), jnp.int32))


def step(w, acc, n, x, y):
    def loss(w_):
        return ((x @ w_ - y) ** 2).mean()
    l, g = jax.value_and_grad(loss)(w[...])
    w[...] = w[...] - 0.1 * g
    acc[...] = acc[...] + x @ w[...]      # replicated state updated with a data-sharded value
    n[...] += 1
    return l


def functional(w, acc, n, x, y):
    wv, av, nv = w, acc, n
    def loss(w_):
        return ((x @ w_ - y) ** 2).mean()
    l, g = jax.value_and_grad(loss)(wv)
    wv = wv - 0.1 * g
    return l, wv, av + x @ wv, nv + 1


with use_mesh(mesh):
    x = jax.device_put(jnp.linspace(0, 1, 32).reshape(8, 4), NamedSharding(mesh, P("data", None)))
    y = jax.device_put(jnp.ones((8, 2)), NamedSharding(mesh, P("data", None)))
    eager, hx = init(), init()
    state = tuple(v[...] for v in init())
    jitted = jax.jit(functional)
    compiled = hijaxc.jit(step)
    for _ in range(3):
        le = step(*eager, x, y)
        lh = compiled(*hx, x, y)
        lj, *state = jitted(*state, x, y)
        np.testing.assert_allclose(np.asarray(lh), np.asarray(le), rtol=1e-5)
    for e, h, j in zip(eager, hx, state):
        np.testing.assert_allclose(np.asarray(h[...]), np.asarray(e[...]), rtol=1e-5)
        nd = h[...].ndim
        assert h[...].sharding.is_equivalent_to(j.sharding, nd), (kind, h[...].sharding, j.sharding)
    # the replicated accumulator comes out as the computation shards it, as eagerly
    assert hx[1][...].sharding.is_equivalent_to(eager[1][...].sharding, 2), (
        hx[1][...].sharding, eager[1][...].sharding)
    assert hx[0][...].sharding.is_equivalent_to(NamedSharding(mesh, P(None, "model")), 2)
print("ok", kind)
"""


def test_explicit_auto_and_mixed_meshes_follow_jax_jit(tmp_path):
    import pytest

    probe = subprocess.run(
        [sys.executable, "-c", "import jax; print(hasattr(jax.sharding, 'AxisType'))"],
        capture_output=True,
        text=True,
    )
    if probe.stdout.strip() != "True":
        pytest.skip("this JAX has no mesh axis types (jax.sharding.AxisType)")
    path = os.path.join(str(tmp_path), "mesh_script.py")
    with open(path, "w") as f:
        f.write(_MESH_SCRIPT)
    for kind in ("explicit", "auto", "mixed"):
        assert run8(path, kind).strip().endswith("ok " + kind)

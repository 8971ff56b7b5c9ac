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
    out = run8("""
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
    """, tmp_path=tmp_path)
    assert out.strip().endswith("ok")

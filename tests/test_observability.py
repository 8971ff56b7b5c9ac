"""Observability (issue 16): retrace explanations, the too-many-retraces warning, cache_info /
cache_clear, ``show(diff=True)``.  Explanations run only while tracing: the steady state pays
nothing (checked by counting the signature walks)."""

import logging
import re
import subprocess
import sys
import textwrap
import warnings

import jax.numpy as jnp
import pytest
from flax import nnx
from hijaxc.runtime import explain

import hijaxc
from hijaxc import diff as hdiff
from hijaxc.__main__ import main as cli_main


class Linear(nnx.Module):
    def __init__(self, din, dout):
        self.kernel = hijaxc.Param(jnp.ones((din, dout)))


class Model(nnx.Module):
    def __init__(self, din=4):
        self.l1 = Linear(din, 2)
        self.count = hijaxc.Variable(jnp.array(0))
        self.scale = 2.0


def _retrace_lines(caplog):
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "hijaxc" and r.levelno == logging.INFO and "retrace" in r.getMessage()
    ]


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.INFO, logger="hijaxc")
    return caplog


def _step(**kw):
    @hijaxc.jit(explain=True, **kw)
    def train_step(model, x):
        model.count[...] += 1
        return (x @ model.l1.kernel[...]).sum() * model.scale

    return train_step


def test_shape_change_is_explained_with_name_location_and_cost(logs):
    step = _step()
    m = Model()
    step(m, jnp.ones((3, 4)))
    step(m, jnp.ones((3, 4)))
    assert _retrace_lines(logs) == []  # the first trace and cache hits log nothing
    m.l1.kernel.value = jnp.ones((8, 2))
    step(m, jnp.ones((3, 8)))
    (line,) = _retrace_lines(logs)
    assert "retrace #2 of train_step" in line
    assert re.search(r"\(.*test_observability\.py:\d+\)", line)
    assert "model.l1.kernel: float32[4,2] -> float32[8,2]" in line
    assert "x: float32[3,4] -> float32[3,8]" in line
    assert re.search(r"\[trace [\d.]+ ms, compile [\d.]+ ms\]$", line)


def test_new_attribute_and_python_scalar_config(logs):
    step = _step()
    m = Model()
    step(m, jnp.ones((3, 4)))
    m.extra_counter = hijaxc.Variable(jnp.array(0))
    step(m, jnp.ones((3, 4)))
    m.scale = 3.0
    step(m, jnp.ones((3, 4)))
    first, second = _retrace_lines(logs)
    assert "new attribute model.extra_counter" in first
    assert "_pytree__" not in first and "_object__" not in first  # flax's bookkeeping stays out
    assert "model.scale: 2.0 -> 3.0" in second


def test_removed_list_item_and_dict_key(logs):
    @hijaxc.jit(explain=True)
    def f(vs, d):
        vs[0][...] += 1
        return d["a"][...].sum()

    a = hijaxc.Variable(jnp.zeros(2))
    f([a, hijaxc.Variable(jnp.zeros(2))], {"a": a})
    f([a], {"a": a, "b": hijaxc.Variable(jnp.zeros(3))})
    (line,) = _retrace_lines(logs)
    assert "removed item vs[1]" in line
    assert "new key d['b']" in line


def test_static_argument_by_parameter_name(logs):
    @hijaxc.jit(explain=True, static_argnames="steps")
    def run(model, steps):
        for _ in range(steps):
            model.count[...] += 1

    m = Model()
    run(m, steps=2)
    run(m, steps=2)
    run(m, steps=3)
    (line,) = _retrace_lines(logs)
    assert "steps: 2 -> 3" in line
    assert int(m.count[...]) == 7


def test_mode_flag_change(logs):
    @hijaxc.jit(explain=True)
    def total(model):
        return model.l1.kernel[...].sum()

    m = Model()
    total(m)
    total(hijaxc.vars_as(m, hijax=False))
    m.extra = hijaxc.Variable(jnp.zeros(()))
    total.cache_clear()
    total(m)
    total(hijaxc.vars_as(m, hijax=False))
    first, second = _retrace_lines(logs)
    assert "model.l1.kernel (mode): hijax -> lojax" in first
    # the same change on many Variables is listed once
    assert (
        "mode of 3 Variables (model.count, model.extra, model.l1.kernel): hijax -> lojax" in second
    )


def test_environment_variable_explains_every_function(logs, monkeypatch):
    @hijaxc.jit
    def g(x):
        return x * 2

    g(jnp.ones(2))
    g(jnp.ones(3))
    assert _retrace_lines(logs) == []  # off by default
    monkeypatch.setenv("HIJAXC_EXPLAIN_RETRACES", "1")
    g(jnp.ones(4))
    (line,) = _retrace_lines(logs)
    assert "retrace #3 of g" in line and "x: float32[3] -> float32[4]" in line


def test_too_many_retraces_warns_once_even_without_explain():
    @hijaxc.jit
    def h(x):
        return x + 1

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for n in range(1, 12):
            h(jnp.ones(n))
    found = [x for x in w if issubclass(x.category, hijaxc.RetraceWarning)]
    assert len(found) == 1
    msg = str(found[0].message)
    assert "h (" in msg and "traced 9 times" in msg
    assert "x changed in 8 of 8 retraces" in msg
    assert "shape" in msg and "warn_after_traces" in msg


def test_retrace_warning_threshold_keyword_and_module_setting(monkeypatch):
    def make(**kw):
        @hijaxc.jit(static_argnums=1, **kw)
        def s(x, k):
            return x * k

        return s

    def count(f, n):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            for k in range(n):
                f(jnp.ones(2), k)
        return [str(x.message) for x in w if issubclass(x.category, hijaxc.RetraceWarning)]

    (msg,) = count(make(warn_after_traces=2), 3)
    assert "traced 3 times" in msg and "k changed" in msg and "static_argnums" in msg
    assert count(make(warn_after_traces=0), 12) == []  # 0 turns it off
    monkeypatch.setattr(explain, "WARN_AFTER_TRACES", 4)
    assert len(count(make(), 5)) == 1 and count(make(), 4) == []


def test_cache_info_and_cache_clear():
    @hijaxc.jit
    def bump(model, x):
        model.count[...] += 1
        return x.sum()

    m = Model()
    assert bump.cache_info() == hijaxc.CacheInfo(0, 0, 0, 0, 64)
    for _ in range(4):
        bump(m, jnp.ones(3))
    assert bump.cache_info() == hijaxc.CacheInfo(
        traces=1, hits=3, fast_calls=3, entries=1, max_entries=64
    )
    bump(Model(din=5), jnp.ones(3))  # same structure, other shapes: one cache entry, a new trace
    bump(m, jnp.ones(3))
    m.extra = hijaxc.Variable(jnp.zeros(()))  # new structure: a new entry
    bump(m, jnp.ones(3))
    info = bump.cache_info()
    assert (info.traces, info.entries) == (3, 2)
    assert info.hits == 7 - 3
    bump.cache_clear()
    assert bump.cache_info() == hijaxc.CacheInfo(0, 0, 0, 0, 64)
    bump(m, jnp.ones(3))
    assert bump.cache_info().traces == 1 and int(m.count[...]) == 7


def test_steady_state_and_introspection_do_no_explaining(monkeypatch, logs):
    records, signatures = [], []
    real_record, real_signature = explain.TraceRecord, explain.signature
    monkeypatch.setattr(explain, "TraceRecord", lambda *a: records.append(1) or real_record(*a))
    monkeypatch.setattr(explain, "signature", lambda *a: signatures.append(1) or real_signature(*a))
    step = _step()
    m = Model()
    step(m, jnp.ones((3, 4)))
    assert len(records) == 1  # recorded once, when the entry was traced
    for _ in range(5):
        step(m, jnp.ones((3, 4)))
    step.lower(m, jnp.ones((3, 4)))
    step.eval_shape(m, jnp.ones((3, 4)))
    assert len(records) == 1 and _retrace_lines(logs) == []
    assert step.cache_info().fast_calls == 5
    assert signatures == []  # made only when a retrace compares with it
    step(m, jnp.ones((5, 4)))
    assert len(records) == 2 and len(signatures) == 2


def _user_fn_source():
    return textwrap.dedent("""\
        import hijaxc

        @hijaxc.jit
        def inc(v):
            v[...] += 1
            return v[...]
        """)


def test_show_diff(tmp_path, capsys):
    path = tmp_path / "userfile.py"
    path.write_text(_user_fn_source())
    assert cli_main(["show", "--diff", f"{path}:inc"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"--- {path}:3 (inc, your source)\n+++ generated by hijaxc (inc)\n")
    assert "\n-@hijaxc.jit\n" in out and "\n-    v[...] += 1\n" in out
    assert re.search(r"\n\+    __hx.setitem\(.*'.*userfile.py:5'\)\n", out)
    assert "\x1b[" not in out  # not a terminal: plain text
    assert "# " + str(path) not in out  # origin comments are not part of the diff
    assert cli_main(["show", f"{path}:inc"]) == 0
    assert "def inc__pure_step" in capsys.readouterr().out


def test_show_diff_api_and_highlighting():
    @hijaxc.jit
    def double(v):
        v[...] *= 2

    text = hijaxc.show(double, diff=True)
    assert text.startswith("---") and "\n-    v[...] *= 2\n" in text and "\n+" in text

    class Tty:
        def isatty(self):
            return True

    assert hdiff.use_color(Tty()) and not hdiff.use_color(None)
    pytest.importorskip("pygments")
    colored = hdiff.highlight(text, "diff")
    assert "\x1b[" in colored and re.sub(r"\x1b\[[\d;]*m", "", colored) == text


def test_cli_diff_subprocess(tmp_path):
    path = tmp_path / "userfile2.py"
    path.write_text(_user_fn_source())
    r = subprocess.run(
        [sys.executable, "-m", "hijaxc", "show", "--diff", f"{path}:inc"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "-    v[...] += 1" in r.stdout and "+    __hx.setitem(" in r.stdout


def test_growing_list_warning_names_the_container():
    @hijaxc.jit
    def f(vs):
        for v in vs:
            v[...] += 1.0

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for n in range(1, 11):
            f([hijaxc.Variable(jnp.zeros(())) for _ in range(n)])
    (msg,) = [str(x.message) for x in w if issubclass(x.category, hijaxc.RetraceWarning)]
    assert "the items of vs changed in 8 of 8 retraces" in msg and "structure" in msg


_SHARDED = """
import logging, sys
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import hijaxc
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s: %(message)s")
mesh = Mesh(np.array(jax.devices()), ("x",))

@hijaxc.jit(explain=True)
def f(v):
    v[...] = v[...] * 2

for spec in (P("x"), P(None, "x")):
    f(hijaxc.Variable(jax.device_put(jnp.ones((8, 8)), NamedSharding(mesh, spec))))
"""


def test_sharding_change_is_explained(tmp_path):
    import os

    script = tmp_path / "sharded.py"
    script.write_text(_SHARDED)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    r = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert (
        "v: float32[8,8] sharded PartitionSpec('x',) -> float32[8,8] sharded "
        "PartitionSpec(None, 'x')" in r.stdout.replace("P(", "PartitionSpec(")
    ), r.stdout

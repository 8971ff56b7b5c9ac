"""Drop-in on real Flax NNX programs (issue 13): the corpus in tests/corpus/.

Every program runs eagerly, under ``nnx.jit`` and under ``hijaxc.jit`` on identical fresh state
(``run(jit)`` swaps the decorator of the program's step functions).  ``hijaxc.jit`` must give the
eager results: outputs, metrics, and every Variable of the model, optimizer, metrics and rngs
(tests/corpus/harness.py).  ``nnx.jit`` is run too and only *recorded*: where it fails or differs
from eager the test is an ``xfail`` naming why (see the table below); it never fails the suite.

Programs marked ``SLOW`` run only when ``CORPUS_SLOW=1`` is set or on the newest flax (detected by
``nnx.view``); ``DEVICES = 8`` programs run in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``.

Where nnx.jit itself fails or differs while hijaxc.jit works (flax 0.12.8 / jax 0.10.2):

| program | nnx.jit | hijaxc.jit |
|---|---|---|
| toy_hijax_basic (flax hijax Variables, ``@jax.jit`` step swapped) | (1) | same as eager |
| toy_hijax_demo (same, SGD Pytree, nnx.List of Blocks) | (1) | xfail (hijaxc bug, below) |

(1) AttributeError: DynamicJaxprTracer has no attribute _can_update

Also found: flax's own 01_functional_api.py fails under ``jax.jit`` on flax 0.12.8
(TraceContextError: the Count merged without ``copy=True`` is mutated inside ``jax.grad``); the
corpus merges with ``copy=True`` as 03_train_state.py does.  Programs adapted for numerics (Adam
``eps=1e-3`` or SGD where a gradient is float noise) say so where they do.
"""

import json
import os
import subprocess
import sys

import pytest
from corpus import harness
from flax import nnx

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

PROGRAMS = sorted(
    f[:-3]
    for f in os.listdir(os.path.join(HERE, "corpus"))
    if f.endswith(".py") and not f.startswith("_") and f != "harness.py"
)

SLOW_OK = os.environ.get("CORPUS_SLOW") == "1" or hasattr(nnx, "view")

#: hijaxc bugs, reported to the lead (minimal repros in the corpus branch's report).  A program
#: listed here must fail under hijaxc.jit (strict): when the bug is fixed, remove its line.
#: corpus programs where hijaxc.jit fails today, with the reason (strict xfail); none now
HIJAXC_BUGS: dict = {}


def _skip(name):
    mod = harness.load(name)
    reason = getattr(mod, "skip_reason", lambda: None)()
    if reason:
        pytest.skip(reason)
    if getattr(mod, "SLOW", False) and not SLOW_OK:
        pytest.skip("slow program: runs on the newest flax or with CORPUS_SLOW=1")
    return mod


_SUBPROCESS = {}


def _outcome(name, which):
    mod = _skip(name)
    if getattr(mod, "DEVICES", 1) == 1:
        return harness.outcome(name, which)
    if name not in _SUBPROCESS:
        env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
        r = subprocess.run(
            [sys.executable, os.path.join(HERE, "corpus", "harness.py"), name],
            check=False,
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=600,
        )
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("CORPUS-RESULT ")]
        assert r.returncode == 0 and lines, r.stdout[-3000:] + r.stderr[-3000:]
        _SUBPROCESS[name] = json.loads(lines[-1][len("CORPUS-RESULT ") :])
    return tuple(_SUBPROCESS[name][which])


def _hijaxc_params():
    for name in PROGRAMS:
        bug = HIJAXC_BUGS.get(name)
        marks = [pytest.mark.xfail(strict=True, reason=f"hijaxc bug: {bug}")] if bug else []
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", list(_hijaxc_params()))
def test_hijaxc_jit_matches_eager(name):
    status, why = _outcome(name, "hijaxc")
    assert status == "ok", f"hijaxc.jit {status} on {name}:\n{why}"


@pytest.mark.parametrize("name", PROGRAMS)
def test_nnx_jit_recorded(name):
    status, why = _outcome(name, "nnx")
    if status != "ok":
        pytest.xfail(f"nnx.jit {status}: {why.splitlines()[0][:300]}")

"""Run one corpus program eagerly, under ``nnx.jit`` and under ``hijaxc.jit`` on identical fresh
state, and compare each jitted run with the eager one (tests/oracle.py's ``snapshot`` /
``assert_same``: outputs, metrics and every Variable of every stateful object, rng keys through
``jax.random.key_data``).

``python tests/corpus/harness.py NAME`` prints the outcomes as JSON (used by tests/test_corpus.py
for the 8-device programs, which need ``XLA_FLAGS`` set before JAX starts)."""

import functools
import importlib
import json
import os
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(HERE))  # tests/ (for `oracle` and `corpus`)

# imported after the sys.path change above (script mode needs tests/ on the path for `oracle`)
import numpy as np  # noqa: E402
import oracle  # noqa: E402
from flax import nnx  # noqa: E402

import hijaxc  # noqa: E402

#: Float tolerance, scaled by magnitude: every float array is divided by its largest eager
#: magnitude (at least ``FLOOR``) before ``oracle.assert_same(rtol=RTOL, atol=ATOL)``.  XLA fuses
#: and reorders float ops, and a few Adam steps amplify that (a gradient near 0 is normalised by
#: Adam to a full step), so elementwise differences reach ~1e-4 of an array's scale; a missed or
#: doubled update (BatchNorm stats, a counter, an optimizer step) is far outside this.
RTOL, ATOL, FLOOR = 1e-3, 2e-3, 1e-3


def eager(f):
    return f


JITS = {"eager": eager, "nnx": nnx.jit, "hijaxc": hijaxc.jit}


def load(name):
    return importlib.import_module(f"corpus.{name}")


@functools.cache
def _eager_snapshot(name):
    return oracle.snapshot(load(name).run(eager))


def _scaled(e, j):
    """``(eager, jitted)`` snapshots with each pair of float arrays divided by the eager scale."""
    if not (isinstance(e, tuple) and isinstance(j, tuple) and len(e) == len(j)):
        return e, j
    if (
        len(e) == 4
        and isinstance(e[0], str)
        and e[0] == j[0] == "array"
        and isinstance(e[3], np.ndarray)
        and isinstance(j[3], np.ndarray)
        and e[3].shape == j[3].shape
        and np.issubdtype(e[3].dtype, np.inexact)
        and np.issubdtype(j[3].dtype, np.inexact)
    ):
        scale = max(float(np.max(np.abs(e[3]), initial=0.0)), FLOOR)
        return e[:3] + (e[3] / scale,), j[:3] + (j[3] / scale,)
    pairs = [_scaled(a, b) for a, b in zip(e, j)]
    return tuple(a for a, _ in pairs), tuple(b for _, b in pairs)


def assert_close(expected, got):
    """``oracle.assert_same`` on snapshots, float tolerance scaled by magnitude (``RTOL``...)."""
    oracle.assert_same(*_scaled(expected, got), rtol=RTOL, atol=ATOL)


def outcome(name, which):
    """``("ok", "")``, ``("differs", why)`` or ``("error", traceback)`` for ``which`` in
    ``("nnx", "hijaxc")``."""
    expected = _eager_snapshot(name)
    try:
        got = oracle.snapshot(load(name).run(JITS[which]))
    except Exception as e:  # noqa: BLE001 - recorded, the test decides
        tb = traceback.format_exc(limit=-6)
        return "error", f"{type(e).__name__}: {str(e)[:500]}\n{tb[-3000:]}"
    try:
        assert_close(expected, got)
    except AssertionError as e:
        return "differs", str(e)[:1500]
    return "ok", ""


if __name__ == "__main__":
    name = sys.argv[1]
    result = {which: outcome(name, which) for which in ("hijaxc", "nnx")}
    print("CORPUS-RESULT " + json.dumps(result))

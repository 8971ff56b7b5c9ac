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

from flax import nnx  # noqa: E402

import hijaxc  # noqa: E402
import oracle  # noqa: E402

#: jitted and eager floats agree to this relative tolerance (absolute floor for values near 0);
#: XLA fuses and reorders float ops, and a few optimizer steps amplify that a little.
RTOL, ATOL = 1e-4, 1e-5


def eager(f):
    return f


JITS = {"eager": eager, "nnx": nnx.jit, "hijaxc": hijaxc.jit}


def load(name):
    return importlib.import_module(f"corpus.{name}")


@functools.lru_cache(maxsize=None)
def _eager_snapshot(name):
    return oracle.snapshot(load(name).run(eager))


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
        oracle.assert_same(expected, got, rtol=RTOL, atol=ATOL)
    except AssertionError as e:
        return "differs", str(e)[:1500]
    return "ok", ""


if __name__ == "__main__":
    name = sys.argv[1]
    result = {which: outcome(name, which) for which in ("hijaxc", "nnx")}
    print("CORPUS-RESULT " + json.dumps(result))

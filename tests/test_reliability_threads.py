"""Reliability: concurrency, one compiled function called (and transformed) on many threads at
once.
"""

import concurrent.futures
import copy
import sys
import threading
import time

import jax.numpy as jnp
import numpy as np
import oracle
from flax import nnx
from user_code import (
    _call_aliased,
    _ref_immutable,
    _store_object,
    _store_str,
    _two,
    _write_immutable,
)

import hijaxc


# ==================================================================================================
# 3. Concurrency: one compiled function, many threads
# ==================================================================================================
class Counted(nnx.Module):
    def __init__(self, d, seed):
        self.w = hijaxc.Param(jnp.linspace(0.0, 1.0, d) + seed)
        self.count = hijaxc.Variable(jnp.array(0))


def _train(m, x):
    m.w[...] = m.w[...] * 0.5 + x
    m.count[...] += 1
    return (m.w[...] * x).sum()


def _slow_trace_train(m, x):
    time.sleep(0.02)  # at trace time: lets the threads' traces overlap
    return _train(m, x)


def _run_threads(jf, models, xs, calls):
    barrier = threading.Barrier(len(models))

    def work(i):
        barrier.wait()
        return [np.asarray(jf(models[i], xs[i])) for _ in range(calls)]

    with concurrent.futures.ThreadPoolExecutor(len(models)) as ex:
        return list(ex.map(work, range(len(models))))


def _check_threads(dims, calls=6, fn=_train):
    jf = hijaxc.jit(fn)
    _ = jf.step  # transform here: concurrent transforms are tested on their own (see below)
    models = [Counted(d, i) for i, d in enumerate(dims)]
    xs = [jnp.full((d,), 0.1 * (i + 1)) for i, d in enumerate(dims)]
    eager_models = copy.deepcopy(models)
    outs = _run_threads(jf, models, xs, calls)
    for i, (m, em) in enumerate(zip(models, eager_models)):
        expected = [np.asarray(fn(em, xs[i])) for _ in range(calls)]
        np.testing.assert_allclose(outs[i], expected, rtol=1e-6, err_msg=f"thread {i}")
        oracle.assert_same(oracle.snapshot(em), oracle.snapshot(m))
        assert int(m.count[...]) == calls
    return jf


def test_threads_on_separate_models():
    jf = _check_threads([4] * 8)
    assert len(jf.step.cache) == 1


def test_threads_on_two_shapes_share_the_cache():
    for _ in range(2):
        jf = _check_threads([3, 5] * 4)
    assert len(jf.step.cache) <= jf.step.max_cache


def test_threads_first_call_race():
    """All threads make their *first* call at once (split, cache and trace race); tracing is
    slowed down so that traces of different shapes run at the same time."""
    for _ in range(2):
        _check_threads([2, 3, 4, 5] * 2, calls=2, fn=_slow_trace_train)


def test_concurrent_transforms():
    from hijaxc import cache as hx_cache

    fns = [
        _train,
        _slow_trace_train,
        _two,
        _write_immutable,
        _store_object,
        _store_str,
        _call_aliased,
        _ref_immutable,
    ]
    errors = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        for _ in range(30):
            hx_cache.clear()
            barrier = threading.Barrier(len(fns))

            def work(i, barrier=barrier):
                barrier.wait()
                for _ in range(3):
                    try:
                        assert fns[i].__name__ in hijaxc.show(fns[i])
                    except Exception as e:  # noqa: BLE001 - collected and reported below
                        errors.append(repr(e))
                    hx_cache.clear()

            with concurrent.futures.ThreadPoolExecutor(len(fns)) as ex:
                list(ex.map(work, range(len(fns))))
    finally:
        sys.setswitchinterval(interval)
        hx_cache.clear()
    assert not errors, f"{len(errors)} concurrent transforms failed, e.g. {errors[0]}"

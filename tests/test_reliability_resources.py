"""Reliability, S8 and S9: bounded resources (hijaxc's and jax's caches, memory) under shape and
structure churn, and donation and the cache not keeping old state alive.

``benchmarks/soak.py`` is the long-running companion of these tests (10^5 calls; prints cache
sizes and RSS).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fault_harness import _fail_if_armed, _inject_runtime_failure
from user_code import var

import hijaxc


def rss_mb():
    """Resident set size now (Linux ``/proc``; ``getrusage``'s peak elsewhere), in MB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ==================================================================================================
# 4. Bounded resources (S8): caches and memory under shape / structure churn
# ==================================================================================================
SHAPES = [(256, 256), (128, 512), (512, 128)]  # 256 KiB each: a leaked array per call shows in RSS


def _jax_cache_sizes(step):
    return [
        j._cache_size()
        for e in step.cache.values()
        for j in e.jitted.values()
        if hasattr(j, "_cache_size")
    ]


def _assert_bounded(step, signatures, max_masks=2):
    """hijaxc's cache within ``max_cache``; per entry at most ``max_masks`` jitted variants (one
    per donation mask); jax's own caches behind them at most ``signatures`` per variant."""
    assert len(step.cache) <= step.max_cache
    for e in step.cache.values():
        assert len(e.jitted) <= max_masks, list(e.jitted)
    sizes = _jax_cache_sizes(step)
    assert all(n <= signatures for n in sizes), sizes


def test_alternating_models_of_three_shapes_stay_bounded():
    vs = [var(jnp.zeros(s)) for s in SHAPES]
    xs = [jnp.ones(s) for s in SHAPES]

    @hijaxc.jit
    def f(v, x):
        v[...] += x
        return v[...][0, 0]

    calls = 2000
    for i in range(300):
        f(vs[i % 3], xs[i % 3])
    start = rss_mb()
    for i in range(300, calls):
        out = f(vs[i % 3], xs[i % 3])
    grown = rss_mb() - start
    for k, v in enumerate(vs):
        n = len(range(k, calls, 3))
        np.testing.assert_array_equal(v[...], np.full(SHAPES[k], n, np.float32))
    assert float(out) == len(range((calls - 1) % 3, calls, 3))
    assert len(f.step.cache) == 1  # one structure
    _assert_bounded(f.step, len(SHAPES))
    assert f.step.stats["traces"] <= 2 * len(SHAPES), f.step.stats
    assert grown < 200, f"RSS grew by {grown:.0f} MB over {calls - 300} calls"


def test_one_variable_changing_shape_every_call_stays_bounded():
    v = var(jnp.zeros(SHAPES[0]))
    store = {k: jnp.zeros(s) for k, s in enumerate(SHAPES)}
    xs = [jnp.ones(s) for s in SHAPES]

    @hijaxc.jit
    def f(v, x):
        v[...] += x
        return v[...][0, 0]

    calls = 2000
    start = None
    for i in range(calls):
        if i == 300:
            start = rss_mb()
        k = i % 3
        v.value = store.pop(k)  # the Variable holds the only reference: donated
        f(v, xs[k])
        store[k] = v.get_raw_value()
    grown = rss_mb() - start
    for k, s in enumerate(SHAPES):
        np.testing.assert_array_equal(store[k], np.full(s, len(range(k, calls, 3)), np.float32))
    _assert_bounded(f.step, len(SHAPES))
    assert f.step.stats["traces"] <= 2 * len(SHAPES), f.step.stats
    assert grown < 200, f"RSS grew by {grown:.0f} MB over {calls - 300} calls"


def test_structures_beyond_max_cache_are_evicted_and_stay_correct():
    """Lists of 1..10 Variables (ten graph structures) through a cache of 4: evictions, retraces,
    right values every time."""

    @hijaxc.jit
    def f(vs, x):
        for v in vs:
            v[...] += x
        return len(vs)

    f.step.max_cache = 4
    totals = [0.0] * 10
    for i in range(30):
        n = i % 10 + 1
        vs = [var(totals[j]) for j in range(n)]
        assert int(f(vs, jnp.array(1.0))) == n
        for j in range(n):
            totals[j] += 1.0
        assert [float(v[...]) for v in vs] == totals[:n], i
        assert len(f.step.cache) <= 4
    _assert_bounded(f.step, 1)
    assert f.step.stats["traces"] >= 10  # evicted structures were traced again, not served stale


def test_hot_structure_survives_a_stream_of_one_off_structures():
    @hijaxc.jit
    def f(vs):
        for v in vs:
            v[...] += 1.0

    f.step.max_cache = 4
    hot = [var(0.0)]
    f(hot)
    for n in range(2, 22):
        f([var(0.0) for _ in range(n)])  # a structure seen once
        f(hot)
    assert float(hot[0][...]) == 21.0
    # 20 one-off traces; the hot structure once (+ slack for a second donation mask)
    assert f.step.stats["traces"] <= 1 + 20 + 2, f.step.stats


def test_dict_variable_with_changing_keys_stays_bounded():
    """A Variable holding a dict whose keys change: the keys are the value's pytree structure, so
    jax's cache of the one jitted step holds one signature per key set, however many calls."""

    @hijaxc.jit
    def f(d, x):
        for k in d:
            d[k] += x
        return len(d)

    keysets = [tuple(f"k{j}" for j in range(n)) for n in range(1, 6)]
    totals = {}
    for i in range(100):
        keys = keysets[i % len(keysets)]
        d = var({k: jnp.full((), totals.get(k, 0.0)) for k in keys})
        assert int(f(d, jnp.array(1.0))) == len(keys)
        for k in keys:
            totals[k] = totals.get(k, 0.0) + 1.0
            assert float(d[k]) == totals[k], (i, k)
    assert len(f.step.cache) == 1
    _assert_bounded(f.step, len(keysets))
    assert f.step.stats["traces"] <= 2 * len(keysets), f.step.stats


def test_alternating_key_sets_trace_once_each():
    @hijaxc.jit
    def f(d):
        for k in d:
            d[k] += 1.0

    ds = [var({k: jnp.zeros(()) for k in keys}) for keys in (("a",), ("a", "b"), ("b", "c", "d"))]
    for i in range(300):
        f(ds[i % 3])
    for d in ds:
        assert all(float(x) == 100.0 for x in d.get_value().values())
    _assert_bounded(f.step, 3)
    assert f.step.stats["traces"] <= 2 * 3, f.step.stats


# --------------------------------------------------------------------------------------------------
# Donation and the cache must not keep state alive (S9; the memory side of S8)
# --------------------------------------------------------------------------------------------------
def test_first_call_donates_sole_references():
    v = var(jnp.zeros(1000))

    @hijaxc.jit
    def f(v):
        v[...] += 1.0

    f(v)
    masks = [mask for e in f.step.cache.values() for mask in e.jitted]
    assert masks and all(len(mk) == 1 for mk in masks), masks
    np.testing.assert_array_equal(v[...], np.ones(1000))


def test_execution_failure_after_donation_says_the_state_is_lost():
    """The known cost of donation (execution_donated above): the error says which state is gone
    and that donate=False keeps it, instead of leaving the next read to fail obscurely.

    Only an error raised by the call itself can be annotated (and, with donate=False, leave the
    state intact): a JAX that reports this execution error asynchronously (jax 0.4.38 does for
    some programs) raises it later, when a result is read, and then nothing here applies."""

    def f(v, kept):
        v[...] += 1.0
        kept[...] += 1.0
        jax.debug.callback(_fail_if_armed, v[...])
        return kept[...].sum()

    for donate, lost in (("auto", True), (False, False)):
        v, kept = var(jnp.zeros(4)), var(jnp.zeros(3))
        jf = hijaxc.jit(f, donate=donate)
        jf(v, kept)
        jf(v, kept)  # the steady state (fast path)
        before = np.asarray(kept[...]).copy()
        raised_by_call = False
        with _inject_runtime_failure(jf), pytest.raises(Exception, match="injected runtime") as e:
            try:
                out = jf(v, kept)
            except Exception:
                raised_by_call = True
                raise
            jax.block_until_ready(out)
        if not raised_by_call:
            continue
        notes = "\n".join(getattr(e.value, "__notes__", []))
        assert v.get_raw_value().is_deleted() is lost
        assert ("donating the buffers of 2 Variable(s)" in notes) is lost, notes
        assert ("donate=False" in notes) is lost, notes
        if not lost:
            np.testing.assert_array_equal(kept[...], before)


def test_cache_does_not_keep_old_state_alive():
    import gc
    import weakref

    v = var(jnp.zeros(1000))

    @hijaxc.jit
    def f(v):
        v[...] += 1.0

    first = weakref.ref(v.get_raw_value())
    for _ in range(3):
        f(v)
    gc.collect()
    assert first() is None, "the first call's input array is still alive"
    np.testing.assert_array_equal(v[...], np.full(1000, 3.0))

"""The steady-state call path (P1 mechanisms), caching (S8) and donation (S9): counted, not
timed."""

import jax.numpy as jnp
import numpy as np
import oracle
from flax import nnx

import hijaxc
from hijaxc import parse


class Counter(nnx.Module):
    def __init__(self):
        self.w = hijaxc.Param(jnp.ones(3))
        self.n = hijaxc.Variable(jnp.array(0))


@hijaxc.jit
def step(m, x):
    m.w[...] = m.w[...] * 2 + x
    m.n[...] += 1
    return m.w[...].sum()


def test_steady_state_does_no_graph_walk():
    m = Counter()
    st = step.step
    step(m, jnp.ones(3))
    splits, traces = st.stats["splits"], st.stats["traces"]
    for _ in range(5):
        step(m, jnp.ones(3))
    assert st.stats["splits"] == splits  # no split (graph traversal) on the fast path
    assert st.stats["traces"] == traces
    assert int(m.n[...]) == 6
    np.testing.assert_allclose(
        m.w[...], (((((1 * 2 + 1) * 2 + 1) * 2 + 1) * 2 + 1) * 2 + 1) * 2 + 1
    )


def test_structural_change_is_detected_and_retraces():
    m = Counter()
    step(m, jnp.ones(3))
    step(m, jnp.ones(3))
    traces = step.step.stats["traces"]
    m.extra = hijaxc.Variable(jnp.zeros(2))  # a new attribute: the structure changed

    @hijaxc.jit
    def touch(m):
        for name in ("w", "n"):
            getattr(m, name)[...] += 0
        if hasattr(m, "extra"):
            m.extra[...] += 1

    touch(m)
    touch(m)
    np.testing.assert_allclose(m.extra[...], [2.0, 2.0])
    m.w = hijaxc.Param(jnp.zeros(3))  # replacing a Variable: new structure, must not be stale
    step(m, jnp.ones(3))
    np.testing.assert_allclose(m.w[...], [1.0, 1.0, 1.0])
    assert step.step.stats["traces"] >= traces


def test_shape_change_retraces_and_same_shape_does_not():
    v = hijaxc.Variable(jnp.zeros(3))

    @hijaxc.jit
    def add(v, x):
        v[...] += x

    add(v, jnp.ones(3))
    add(v, jnp.ones(3))
    assert add.step.stats["traces"] == 1
    v.value = jnp.zeros(5)
    add(v, jnp.ones(5))
    assert add.step.stats["traces"] == 2
    np.testing.assert_allclose(v[...], np.ones(5))


def test_no_reparse_on_later_calls():
    v = hijaxc.Variable(jnp.array(0))

    @hijaxc.jit
    def inc(v):
        v[...] += 1

    inc(v)
    n = parse.PARSE_COUNT[0]
    for _ in range(3):
        inc(v)
    again = hijaxc.jit(inc.__wrapped__)  # same code object: transform cache hit
    again(v)
    assert parse.PARSE_COUNT[0] == n
    assert int(v[...]) == 5


def test_donation_never_deletes_arrays_the_user_holds():
    m = Counter()
    held = m.w[...]  # the user keeps a reference to the current value
    step(m, jnp.ones(3))
    assert not held.is_deleted()
    np.testing.assert_allclose(held, np.ones(3))
    x = jnp.ones(3)
    step(m, x)
    assert not x.is_deleted()


def test_donation_donates_sole_references():
    m = Counter()
    step(m, jnp.ones(3))
    step(m, jnp.ones(3))
    masks = [mask for e in step.step.cache.values() for mask in e.jitted]
    assert any(len(mk) > 0 for mk in masks)  # written-back, solely held state was donated


def test_cache_is_bounded():
    @hijaxc.jit
    def f(v):
        v["0"] += 1

    f.step.max_cache = 4
    for n in range(1, 10):
        v = hijaxc.Variable({str(i): jnp.zeros(()) for i in range(n)})
        f(v)
    assert len(f.step.cache) <= 4


def test_plain_containers_changed_in_place_are_seen_by_the_steady_state():
    """Plain dicts/lists in a graph change without ``__setattr__`` (no epoch bump): the fast path
    compares their lengths, keys and values (by identity) on every call.  Each change below keeps
    the lengths and is followed by a call that must see it (eager result as the oracle)."""

    class Holder(nnx.Module):
        def __init__(self):
            self.d = oracle.data({"a": hijaxc.Variable(jnp.ones(2)), "s": 2.5})
            self.l = oracle.data(
                [hijaxc.Variable(jnp.full(2, 3.0)), hijaxc.Variable(jnp.full(2, 5.0))]
            )

    def f(h):
        out = jnp.zeros(2)
        for k, v in h.d.items():
            if isinstance(v, hijaxc.Variable):
                v[...] += 1.0
                out = out + (v[...] if k == "a" else -v[...])
            else:
                out = out * v
        h.l[0][...] *= 2.0
        return out + h.l[0][...] - h.l[1][...]

    def swap_list(h):
        h.l[0], h.l[1] = h.l[1], h.l[0]

    def rename_key(h):
        h.d["b"] = h.d.pop("a")  # same value, same length, another key
        h.d["s"] = h.d.pop("s")  # keep "s" last

    def replace_static_after_del(h):
        del h.d["s"]
        h.d["s"] = 0.5 + len(h.d)  # may reuse the old float's address

    changes = [
        lambda h: h.d.__setitem__("a", hijaxc.Variable(jnp.full(2, 10.0))),
        swap_list,
        rename_key,
        replace_static_after_del,
    ]
    h, e = Holder(), Holder()
    jf = hijaxc.jit(f)
    for change in [None] + changes:
        if change is not None:
            change(h)
            change(e)
        for _ in range(2):  # the second call runs on the fast path
            np.testing.assert_allclose(jf(h), f(e))
            np.testing.assert_allclose(h.l[0][...], e.l[0][...])
            np.testing.assert_allclose(h.l[1][...], e.l[1][...])
            np.testing.assert_allclose(list(h.d.values())[0][...], list(e.d.values())[0][...])
    assert jf.step.stats["fast_calls"] >= len(changes) + 1

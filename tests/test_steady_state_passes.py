"""The steady state's per-Variable passes (runtime/steady_state.py): the C extension
(runtime/_speedups.c) and the Python fallback read the same values and reference counts and write
the same way, and the steady-state call keeps S8/S9 and matches eager execution with either."""

import copy
import gc
import os
import sys
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hijaxc.runtime import _adapter, donation, native
from hijaxc.runtime import steady_state as ss

import hijaxc

C_PASSES = ss._c_passes()


@pytest.fixture(params=["c", "python"])
def passes(request):
    """Run the test with the C passes, then with the Python ones (restored afterwards)."""
    if request.param == "c" and C_PASSES is None:
        pytest.skip("the C passes are not built here (test_extension_is_built says why)")
    assert ss.use_speedups(request.param == "c") == (request.param == "c")
    yield request.param
    ss.use_speedups(True)


def test_extension_is_built():
    """CI builds the extension (gcc and Python's headers are there); losing it silently would
    triple the per-Variable cost of every steady-state call."""
    if os.environ.get("HIJAXC_PURE_PYTHON"):
        pytest.skip("HIJAXC_PURE_PYTHON is set")
    assert C_PASSES is not None, "hijaxc.runtime._speedups did not build or failed its self-check"
    assert ss._gather not in (ss._py_gather,) and ss._scatter is not ss._py_scatter


def _variables():
    return [nnx.Param(jnp.arange(3.0)), nnx.BatchStat(jnp.ones(2)), nnx.Variable(jnp.zeros(())),
            hijaxc.Param(jnp.ones(4)), hijaxc.Variable(jnp.array(7))]


def _gathers():
    return [ss._py_gather] + ([C_PASSES[0]] if C_PASSES else [])


def _scatters():
    return [ss._py_scatter] + ([C_PASSES[1]] if C_PASSES else [])


def test_gather_reads_values_and_counts_like_the_python_pass():
    vs = _variables()
    held = vs[1][...]  # the caller holds this value: it must count as held elsewhere
    all_counts = []
    for gather in _gathers():
        values, counts = gather(vs, 3)
        assert all(a is _adapter.get_raw(v) for a, v in zip(values, vs))
        assert len(values) == len(vs) and len(counts) == 3
        assert counts[0] == counts[2] == donation.SOLE_HOLDER and counts[1] > donation.SOLE_HOLDER
        all_counts.append(counts)
        del values  # (else the next pass counts this list as one more holder)
    assert all_counts == [all_counts[0]] * len(all_counts)
    assert held is vs[1][...]


def test_counts_above_255_are_capped_and_still_held():
    vs = _variables()[:2]
    many = [vs[0][...]] * 300
    for gather in _gathers():
        assert gather(vs, 2)[1] == bytes([255, donation.SOLE_HOLDER])
    del many


def test_gather_of_an_empty_slot_raises_attribute_error():
    v = nnx.Variable.__new__(nnx.Variable)
    for impl in _gathers():
        with pytest.raises(AttributeError):
            impl([v], 1)


def test_passes_refuse_an_object_without_the_slot_like_attribute_access():
    """The C passes read and write the slot directly only in Variables (of any subclass); any
    other object goes through the descriptor, which raises as ``v._raw_value`` would."""
    class NotAVariable:
        __slots__ = ("_raw_value",)

    for objects in ([nnx.Param(jnp.ones(2)), object()], [NotAVariable(), nnx.Param(jnp.ones(2))]):
        for impl in _gathers():
            with pytest.raises(TypeError):
                impl(objects, 1)
        for impl in _scatters():
            with pytest.raises(TypeError):
                impl(objects, [jnp.zeros(()), jnp.zeros(())])


def test_scatter_writes_each_object_and_ignores_extra_values():
    vs = _variables()
    for impl in _scatters():
        new = [jnp.full((), float(i)) for i in range(len(vs) + 2)]
        impl(vs, tuple(new))
        assert all(_adapter.get_raw(v) is x for v, x in zip(vs, new))


def test_c_scatter_with_fewer_values_writes_nothing():
    if C_PASSES is None:
        pytest.skip("no C passes")
    vs = _variables()
    before = [_adapter.get_raw(v) for v in vs]
    with pytest.raises(ValueError):
        C_PASSES[1](vs, [jnp.zeros(())])
    assert all(_adapter.get_raw(v) is b for v, b in zip(vs, before))


class Model(nnx.Module):
    """hijaxc's Variables: ``v[...] = x`` writes them on every flax (flax 0.10's own do not)."""

    def __init__(self):
        self.w = hijaxc.Param(jnp.ones((3, 3)))
        self.b = hijaxc.Param(jnp.zeros(3))
        self.mean = hijaxc.BatchStat(jnp.zeros(3))
        self.count = hijaxc.Variable(jnp.array(0))


def body(m, x):
    y = x @ m.w[...] + m.b[...]
    m.mean[...] = 0.9 * m.mean[...] + 0.1 * y.mean(0)
    m.w[...] = m.w[...] - 0.01 * y.sum()
    m.count[...] += 1
    return (y**2).mean()


def _state(m):
    return {k: np.asarray(getattr(m, k)[...]) for k in ("w", "b", "mean", "count")}


def _assert_same_state(m, ref):
    for k, v in _state(ref).items():
        np.testing.assert_allclose(_state(m)[k], v, rtol=1e-6, err_msg=k)


def _in_steady_state():
    """A step, a model stepped twice by it (the second call recorded the steady state), the same
    model stepped twice eagerly, and the input."""
    step = hijaxc.jit(body)
    m, ref = Model(), Model()
    x = jnp.ones((2, 3))
    for _ in range(2):
        step(m, x)
        body(ref, x)
    return step, m, ref, x


def test_steady_state_matches_eager(passes):
    step = hijaxc.jit(body)
    m, ref = Model(), Model()
    xs = [jnp.full((2, 3), i / 7.0) for i in range(6)]
    for x in xs:
        out = step(m, x)
        want = body(ref, x)
        np.testing.assert_allclose(out, want, rtol=1e-6)
    _assert_same_state(m, ref)
    assert step.step.stats["fast_calls"] >= 4  # the comparison above ran on the steady state


def test_steady_state_never_donates_what_the_caller_holds(passes):
    step = hijaxc.jit(body)
    m = Model()
    x = jnp.ones((2, 3))
    step(m, x)
    step(m, x)
    fast = step.step.stats["fast_calls"]
    held = m.w[...]
    held_copy = np.asarray(held)
    step(m, x)
    assert not held.is_deleted() and not x.is_deleted()
    np.testing.assert_array_equal(np.asarray(held), held_copy)
    out = step(m, x)  # nothing held now but the output: the state's buffers are donated again
    step(m, x)
    assert not out.is_deleted()
    assert step.step.stats["fast_calls"] == fast + 3
    donated = [mask for e in step.step.cache.values() for mask in e.jitted if mask]
    assert donated, "the solely held, written-back state was never donated"


@pytest.mark.parametrize("held_name", ["w", "b", "count", None])
def test_each_donation_mask_passes_the_right_leaves(passes, held_name, monkeypatch):
    """The compiled step takes the donated leaves and the others as two lists
    (``donation.pack``): sliced where the mask is a prefix of the leaves, picked by index where
    the caller holds a leaf in the middle.  Either way each leaf reaches its place in the step,
    and what the caller holds is not donated."""
    chosen = []
    real_choose = ss.Donation.choose
    monkeypatch.setattr(ss.Donation, "choose", lambda d, counts: (chosen.append(d),
                                                                  real_choose(d, counts)))
    step, m, ref, x = _in_steady_state()
    ids = [id(v) for v in step.step._fast.var_objs]
    index = {k: ids.index(id(getattr(m, k))) for k in ("w", "b", "mean", "count")}
    for i in range(3):
        held = getattr(m, held_name)[...] if held_name else None
        held_copy = None if held is None else np.asarray(held).copy()
        np.testing.assert_allclose(step(m, x + i), body(ref, x + i), rtol=1e-6)
        _assert_same_state(m, ref)
        if held is not None:
            assert not held.is_deleted()
            np.testing.assert_array_equal(np.asarray(held), held_copy)
        del held
    assert step.step.stats["fast_calls"] >= 3
    d = chosen[-1]
    assert set(d.donatable) >= {index["w"], index["mean"], index["count"]}
    want = tuple(sorted(set(d.donatable) - {index.get(held_name)}))
    assert d.mask == d.compiled.mask == want
    prefix = want == tuple(range(len(want)))
    assert d.split_at == (len(want) if prefix else -1)
    donated, kept = d.pack(list(range(len(d.donatable) + 1)))  # (+ x)
    assert donated == list(want) and sorted(donated + kept) == list(range(len(d.donatable) + 1))


def test_steady_state_sees_a_value_replaced_between_calls(passes):
    step, m, ref, x = _in_steady_state()
    m.b[...] = jnp.full(3, 5.0)  # a write outside the step: read back on the next call
    ref.b[...] = jnp.full(3, 5.0)
    np.testing.assert_allclose(step(m, x), body(ref, x), rtol=1e-6)
    np.testing.assert_allclose(_state(m)["w"], _state(ref)["w"], rtol=1e-6)


def test_deep_copies_of_a_model_step_independently(passes):
    step = hijaxc.jit(body)
    m = Model()
    x = jnp.ones((2, 3))
    step(m, x)
    step(m, x)
    other = copy.deepcopy(m)
    before = _state(m)
    step(other, x)  # a new root: the steady state of ``m`` does not apply, ``m`` is untouched
    for k, v in before.items():
        np.testing.assert_array_equal(_state(m)[k], v, err_msg=k)
    assert int(other.count[...]) == 3 and int(m.count[...]) == 2
    jax.block_until_ready(step(m, x))
    assert int(m.count[...]) == 3


def _python_frames(call):
    frames = []

    def profile(frame, event, arg):
        if event == "call":
            frames.append(f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_code.co_name}")

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return frames[1:]  # (the lambda that makes the call)


def test_steady_state_runs_no_python_frame_of_hijaxc_jax_or_flax(passes):
    """With the C extension a steady-state call runs no Python frame at all:
    ``_speedups.Dispatch`` is the entry (JitFunction's base class), ``_speedups.FastCall`` the
    recorded call and ``_speedups.Boxer`` the unflatten of the plan box.  With the Python passes:
    the recorded closure and the passes; without the extension also the entry and a lambda.  No
    Python code of jax or flax runs: the jitted step stays on jax.jit's C++ fast path (which gives
    up, at ~200 µs per call, e.g. where an output's unflatten makes an object of another type than
    the one registered)."""
    step = hijaxc.jit(body)
    m = Model()
    x = jnp.ones((2, 3))
    for _ in range(3):
        step(m, x)
    frames = _python_frames(lambda: step(m, x))
    if passes == "c":
        assert type(step.step._fast.call) is native.module().FastCall
        assert frames == [], frames
    else:
        entry, unflatten = ([], []) if native.module() else (
            ["api.py:__call__", "api.py:_call"], ["pure_step.py:<lambda>"])
        assert frames == (entry + ["steady_state.py:call", "steady_state.py:_py_gather"]
                          + unflatten + ["steady_state.py:_py_scatter"]), frames


def test_steady_state_reads_the_passes_at_call_time(passes, monkeypatch):
    """Both the C ``FastCall`` and the closure call this module's ``_gather``/``_scatter`` as they
    are at call time (the fault harness swaps ``_scatter`` to fail midway)."""
    step, m, ref, x = _in_steady_state()
    calls = []

    def gather(objects, n):
        calls.append("gather")
        return ss._py_gather(objects, n)

    def scatter(objects, values):
        calls.append("scatter")
        ss._py_scatter(objects, values)

    monkeypatch.setattr(ss, "_gather", gather)
    monkeypatch.setattr(ss, "_scatter", scatter)
    np.testing.assert_allclose(step(m, x), body(ref, x), rtol=1e-6)
    assert calls == ["gather", "scatter"]
    _assert_same_state(m, ref)


def test_steady_state_after_a_retrace_applies_the_new_plan(passes):
    """A plain argument of a new shape: jax.jit retraces under the same steady state, and the
    call takes the plan that trace made (the box's), not the recorded one."""
    step = hijaxc.jit(body)
    m, ref = Model(), Model()
    for rows in (2, 2, 2, 5, 5, 2):
        x = jnp.full((rows, 3), 0.5)
        np.testing.assert_allclose(step(m, x), body(ref, x), rtol=1e-6)
    _assert_same_state(m, ref)
    assert step.step.stats["fast_calls"] >= 4


def test_steady_state_misses_fall_back_to_the_slow_path(passes):
    """Arguments the recorded layout does not cover (a keyword, an argument that is no leaf type
    the steady state passes through, one more argument) take the slow path and still match."""
    step, m, ref, x = _in_steady_state()
    for call in (lambda f, mm: f(mm, x=x), lambda f, mm: f(mm, np.ones((2, 3), np.float32)),
                 lambda f, mm: f(mm, x)):
        np.testing.assert_allclose(call(step, m), call(body, ref), rtol=1e-6)
    _assert_same_state(m, ref)
    with pytest.raises(TypeError):
        step(m, x, x)
    assert int(m.count[...]) == int(ref.count[...])


def test_a_dropped_step_and_model_are_freed(passes):
    """The recorded call holds the model's Variables and the step's caches; dropping the step and
    the model frees them (the C ``FastCall`` takes part in garbage collection)."""
    step = hijaxc.jit(body)
    m = Model()
    m.stepper = step  # a static attribute: a cycle through the step, only the collector frees it
    x = jnp.ones((2, 3))
    for _ in range(3):
        step(m, x)
    if passes == "c":
        assert type(step.step._fast.call) is native.module().FastCall
    alive = weakref.ref(m)
    del step, m
    gc.collect()
    assert alive() is None


@pytest.mark.parametrize("copier", [copy.copy, copy.deepcopy], ids=["copy", "deepcopy"])
def test_a_copied_jitted_function_steps_like_the_original(passes, copier):
    """A shallow copy of a ``JitFunction`` shares its compiled step; a deep copy compiles again on
    its first call (the C base's slots are not in ``__dict__``); both then take the steady
    state."""
    step, m, ref, x = _in_steady_state()
    other = copier(step)
    np.testing.assert_allclose(other(m, x), body(ref, x), rtol=1e-6)
    before = other.step.stats["fast_calls"]
    for _ in range(2):
        np.testing.assert_allclose(other(m, x), body(ref, x), rtol=1e-6)
    _assert_same_state(m, ref)
    assert other.step.stats["fast_calls"] == before + 2

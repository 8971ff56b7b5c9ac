"""The state semantics of a ``hijaxc.jit`` call (SPEC S2-S6, S8, S9): modes, immutability,
aliasing, mutable outputs, atomicity, caching and donation safety."""

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from oracle import Case, check_eager

import hijaxc


def var(x, **kw):
    return hijaxc.Variable(jnp.asarray(x), **kw)


def inc(v):
    v[...] += 1
    return v[...]


class Pair(nnx.Module):
    def __init__(self):
        self.a = var([1.0, 2.0])
        self.b = self.a  # one Variable, two paths
        self.w = hijaxc.Param(jnp.ones((2, 2)))


# --------------------------------------------------------------------------------------------------
# S2: modes
# --------------------------------------------------------------------------------------------------
def test_lojax_variable_passed_by_value_with_warning():
    lo = var(0, hijax=False)

    def f(v):
        v[...] += 1  # the write under test
        return v[...]

    line = f.__code__.co_firstlineno + 1
    with pytest.warns(UserWarning, match=re.escape(f"{__file__}:{line}")):
        out = hijaxc.jit(f)(lo)
    assert int(out) == 1  # inside, the function saw its own write
    assert int(lo[...]) == 0  # nothing written back


def test_lojax_warning_once_per_line():
    def f(v):
        v[...] = v[...] * 2
        return v[...]

    jf = hijaxc.jit(f)
    with pytest.warns(UserWarning):
        jf(var([1.0], hijax=False))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jf(var([1.0, 2.0], hijax=False))  # a new shape retraces: same line, no second warning
        hijaxc.jit(f)(var([1.0, 2.0, 3.0], hijax=False))
    assert not [w for w in caught if "lojax" in str(w.message)], [str(w.message) for w in caught]


def test_lojax_and_hijax_in_one_call():
    def f(h, lo, x):
        h[...] += x
        lo[...] += x
        return h[...] + lo[...]

    h, lo = var([0.0, 0.0]), var([10.0, 10.0], hijax=False)
    with pytest.warns(UserWarning):
        out = hijaxc.jit(f)(h, lo, jnp.array([1.0, 2.0]))
    np.testing.assert_allclose(out, [12, 14])
    np.testing.assert_allclose(h[...], [1, 2])
    np.testing.assert_allclose(lo[...], [10, 10])


def test_lojax_read_only_gives_no_warning():
    def f(v, x):
        return v[...] * x

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = hijaxc.jit(f)(var([2.0], hijax=False), jnp.array([3.0]))
    np.testing.assert_allclose(out, [6.0])
    assert not [w for w in caught if "hijaxc" in str(w.message)]


def test_nnx_variable_follows_current_default():
    def f(v):
        v.value = v.value + 1
        return v.value

    jf = hijaxc.jit(f)
    v = nnx.Variable(jnp.array(0))
    jf(v)
    assert int(v.value) == 1  # default hijax=True: by reference
    with hijaxc.var_defaults(hijax=False):
        with pytest.warns(UserWarning):
            out = jf(v)
    assert int(out) == 2 and int(v.value) == 1  # by value under hijax=False
    jf(v)
    assert int(v.value) == 2


def test_converted_nnx_module_keeps_its_mode():
    def f(m):
        m.bias.value = m.bias.value + 1.0

    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    lo = hijaxc.to_lojax(model)
    with pytest.warns(UserWarning):
        hijaxc.jit(f)(lo)
    np.testing.assert_allclose(lo.bias.value, [0, 0])
    hi = hijaxc.to_hijax(lo)
    hijaxc.jit(f)(hi)
    np.testing.assert_allclose(hi.bias.value, [1, 1])


def test_hijaxc_variable_mode_is_its_own_flag():
    def f(v):
        v[...] += 1

    v = var(0)  # hijax=True at creation
    with hijaxc.var_defaults(hijax=False):
        hijaxc.jit(f)(v)  # the current default does not change an existing hijaxc Variable
    assert int(v[...]) == 1


def test_ref_variable_and_ref_by_reference():
    def f(v, r):
        v[...] += 1
        r[...] = r[...] * 3
        return v[...] + r[...]

    v, r = var(1, ref=True), hijaxc.Ref(jnp.array(2))
    out = hijaxc.jit(f)(v, r)
    assert int(out) == 8 and int(v[...]) == 2 and int(r[...]) == 6
    assert v.ref and isinstance(v.get_raw_value(), hijaxc.Ref)


# --------------------------------------------------------------------------------------------------
# S3: immutability
# --------------------------------------------------------------------------------------------------
def test_immutable_write_inside_jit_raises_at_user_line():
    def f(v, w):
        w[...] += 1
        v[...] = v[...] + 1  # the offending write
        return v[...]

    line = f.__code__.co_firstlineno + 2
    v, w = var([1.0], mutable=False), var([0.0])
    with pytest.raises(hijaxc.ImmutableVariableError) as e:
        hijaxc.jit(f)(v, w)
    assert f"{__file__}:{line}" in str(e.value), str(e.value)
    np.testing.assert_allclose(v[...], [1.0])
    np.testing.assert_allclose(w[...], [0.0])  # S6: the earlier write is not applied either


def test_immutable_module_param_write_inside_jit():
    def f(m):
        m.kernel.value = m.kernel.value * 2

    frozen = hijaxc.vars_as(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), mutable=False)
    before = frozen.kernel.value
    with pytest.raises(hijaxc.ImmutableVariableError):
        hijaxc.jit(f)(frozen)
    assert frozen.kernel.value is before


def test_immutable_variables_are_read_inside_jit():
    def f(p, x):
        return p[...] * x

    p = var([2.0, 3.0], mutable=False)
    np.testing.assert_allclose(hijaxc.jit(f)(p, jnp.array([1.0, 2.0])), [2, 6])
    assert p.mutable is False


# --------------------------------------------------------------------------------------------------
# S4: aliasing
# --------------------------------------------------------------------------------------------------
def test_alias_write_seen_through_other_path():
    def f(a, b):
        a[...] = jnp.array(5.0)
        return b[...]

    v = var(0.0)
    out = hijaxc.jit(f)(v, v)
    assert float(out) == 5.0 and float(v[...]) == 5.0


def test_alias_in_module_write_seen_through_other_attribute():
    def g(p):
        p.a[...] += 10
        return p.b[...]

    p = Pair()
    out = hijaxc.jit(g)(p)
    np.testing.assert_allclose(out, [11, 12])
    assert p.a is p.b
    np.testing.assert_allclose(p.b[...], [11, 12])


def test_seed_has_shared_updates_propagate():  # seed 000: "updates don't propagate" natively
    class HasShared(nnx.Module):
        def __init__(self):
            self.a = nnx.Variable(jnp.array(0))
            self.b = self.a

    def g(has_shared):
        has_shared.a.value = jnp.array(5)

    hs = HasShared()
    hijaxc.jit(g)(hs)
    assert int(hs.a.value) == 5 and int(hs.b.value) == 5 and hs.a is hs.b


def test_aliasing_error_lists_paths():
    def f(a, b):
        a[...] += 1

    v = var(0)
    with pytest.raises(hijaxc.AliasingError) as e:
        hijaxc.jit(f, aliasing="error")(v, v)
    msg = str(e.value)
    assert "args[0]" in msg and "args[1]" in msg, msg
    assert int(v[...]) == 0


def test_aliasing_error_in_module_paths():
    def g(p):
        p.a[...] += 1

    p = Pair()
    with pytest.raises(hijaxc.AliasingError) as e:
        hijaxc.jit(g, aliasing="error")(p)
    msg = str(e.value)
    assert ".a" in msg and ".b" in msg, msg
    np.testing.assert_allclose(p.a[...], [1, 2])


def test_aliasing_error_allows_unshared():
    @hijaxc.jit(aliasing="error")
    def f(a, b):
        a[...] += 1
        b[...] += 2

    a, b = var(0), var(0)
    f(a, b)
    assert (int(a[...]), int(b[...])) == (1, 2)


def test_alias_argument_and_global_closure():
    v = var(1.0)

    def f(a):
        a[...] += 1
        v[...] *= 10
        return v[...]

    out = hijaxc.jit(f)(v)
    assert float(out) == 20.0 and float(v[...]) == 20.0


def test_bad_aliasing_option():
    with pytest.raises(ValueError):
        hijaxc.jit(inc, aliasing="nope")


# --------------------------------------------------------------------------------------------------
# S5: mutable outputs
# --------------------------------------------------------------------------------------------------
def test_returned_new_variable_is_a_live_hijax_variable():
    @hijaxc.jit
    def make(x):
        return hijaxc.Variable(x * 2)

    v = make(jnp.array([1.0, 2.0]))
    assert isinstance(v, hijaxc.Variable) and v.hijax and v.mutable
    assert not isinstance(v[...], jax.core.Tracer)
    np.testing.assert_allclose(v[...], [2, 4])
    hijaxc.jit(inc)(v)  # usable in a later call
    np.testing.assert_allclose(v[...], [3, 5])


def test_returned_new_module_seed_mutable_outputs():  # seed "Mutable Outputs"
    @hijaxc.jit
    def create_model(rngs):
        return nnx.Linear(2, 3, rngs=rngs)

    rngs = nnx.Rngs(0)
    model = create_model(rngs)
    assert isinstance(model, nnx.Linear)
    assert not isinstance(model.kernel.value, jax.core.Tracer)
    assert model.kernel.value.shape == (2, 3)
    y = hijaxc.jit(lambda m, x: m(x))(model, jnp.ones((1, 2)))
    assert y.shape == (1, 3)


def test_returned_inputs_keep_identity():
    def f(v, m, d):
        v[...] += 1
        return {"v": v, "m": m, "nested": [d, (v,)]}

    v, m, d = var(0), Pair(), {"k": var(1)}
    out = hijaxc.jit(f)(v, m, d)
    assert out["v"] is v and out["m"] is m and out["nested"][0] is d and out["nested"][1][0] is v
    assert int(v[...]) == 1


def test_same_new_object_returned_twice_is_one_object():
    @hijaxc.jit
    def f(x):
        v = hijaxc.Variable(x)
        return v, [v]

    a, b = f(jnp.array(1.0))
    assert a is b[0]


def test_returned_new_ref():
    @hijaxc.jit
    def f(x):
        r = hijaxc.Ref(x)
        r[...] += 1
        return r

    r = f(jnp.array(1.0))
    assert isinstance(r, hijaxc.Ref) and float(r[...]) == 2.0


def test_new_object_stored_in_input_and_returned():
    def f(m, x):
        m.extra = hijaxc.Variable(x)
        return m.extra

    m = Pair()
    out = hijaxc.jit(f)(m, jnp.array([3.0]))
    assert out is m.extra and float(m.extra[...][0]) == 3.0


# --------------------------------------------------------------------------------------------------
# S6: atomicity
# --------------------------------------------------------------------------------------------------
class UserError(Exception):
    pass


def test_user_exception_after_mutation_leaves_state_unchanged():
    def f(v, p, d, x):
        v[...] += x
        p.a[...] = jnp.zeros(2)
        p.w.value = p.w.value * 3
        p.extra = hijaxc.Variable(x)
        d["new"] = hijaxc.Variable(x)
        raise UserError("after the writes")

    v, p, d = var([1.0, 2.0]), Pair(), {"old": var(1.0)}
    held = [v.get_value(), p.a.get_value(), p.w.get_value(), d["old"].get_value()]
    with pytest.raises(UserError):
        hijaxc.jit(f)(v, p, d, jnp.array([1.0, 1.0]))
    assert v.get_value() is held[0] and p.a.get_value() is held[1] and p.w.get_value() is held[2]
    assert not hasattr(p, "extra") and list(d) == ["old"]
    for arr in held:
        assert not arr.is_deleted()
        np.asarray(arr)  # still readable


def test_closure_and_global_state_unchanged_on_error():
    counter = var(0)

    def f(v):
        counter[...] += 1
        v[...] += 1
        if v.shape == (3,):
            raise UserError("shape 3")
        return v[...]

    jf = hijaxc.jit(f)
    v2 = var([0, 0])
    jf(v2)
    assert int(counter[...]) == 1
    v3 = var([0, 0, 0])
    held = v3.get_value()
    with pytest.raises(UserError):
        jf(v3)
    assert int(counter[...]) == 1 and v3.get_value() is held and not held.is_deleted()


def test_shape_error_leaves_state_and_buffers_intact():
    def f(v, x):
        v[...] = v[...] + 1
        return v[...] @ x  # shape error for a mismatched x

    jf = hijaxc.jit(f)
    v = var(jnp.ones((2, 2)))
    jf(v, jnp.ones(2))
    held = v.get_value()
    with pytest.raises(TypeError):
        jf(v, jnp.ones(3))
    assert v.get_value() is held and not held.is_deleted()
    np.testing.assert_allclose(v[...], 2 * np.ones((2, 2)))


def test_invalid_value_leaves_state_unchanged():  # S10: non-array value stored inside a step
    def f(v, w):
        w[...] += 1
        v.set_value("not an array")

    v, w = var([1.0]), var(0)
    with pytest.raises(hijaxc.InvalidValueError):
        hijaxc.jit(f)(v, w)
    np.testing.assert_allclose(v[...], [1.0])
    assert int(w[...]) == 0


def test_held_arrays_never_deleted_by_donation():  # S9
    def f(v):
        v[...] = v[...] * 2

    jf = hijaxc.jit(f)
    v = var(jnp.arange(4.0))
    held = v.get_value()
    for _ in range(3):
        jf(v)
    assert not held.is_deleted()
    np.testing.assert_allclose(held, [0, 1, 2, 3])
    np.testing.assert_allclose(v[...], [0, 8, 16, 24])
    alias = v.get_value()
    jf(v)
    assert not alias.is_deleted()
    np.testing.assert_allclose(alias, [0, 8, 16, 24])


def test_same_array_in_two_variables_not_deleted():
    arr = jnp.arange(3.0)
    a, b = var(arr), var(arr)
    del arr
    hijaxc.jit(lambda a, b: a.set_value(a[...] + b[...]))(a, b)
    np.testing.assert_allclose(a[...], [0, 2, 4])
    np.testing.assert_allclose(b[...], [0, 1, 2])  # b's buffer was shared with a's input


# --------------------------------------------------------------------------------------------------
# S8: caching
# --------------------------------------------------------------------------------------------------
def test_same_shapes_do_not_retrace():
    jf = hijaxc.jit(inc)
    v = var(jnp.zeros(3))
    jf(v)
    traces = jf.step.stats["traces"]
    assert traces == 1
    for _ in range(3):
        jf(v)
    jf(var(jnp.ones(3)))  # another Variable of the same structure: no retrace either
    assert jf.step.stats["traces"] == traces
    np.testing.assert_allclose(v[...], [4, 4, 4])


def test_shape_dtype_and_structure_changes_retrace():
    def f(m):
        m.a[...] += 1
        return m.a[...]

    jf = hijaxc.jit(f)
    p = Pair()
    jf(p)
    n = jf.step.stats["traces"]
    p.a.value = jnp.zeros(5)  # new shape
    jf(p)
    assert jf.step.stats["traces"] == n + 1
    p.a.value = jnp.zeros(5, jnp.int32)  # new dtype
    jf(p)
    assert jf.step.stats["traces"] == n + 2
    p.extra = var(1.0)  # new structure
    jf(p)
    assert jf.step.stats["traces"] == n + 3
    jf(p)
    assert jf.step.stats["traces"] == n + 3
    np.testing.assert_allclose(p.a[...], [3] * 5)


def test_static_argument_change_retraces():
    @hijaxc.jit(static_argnums=1)
    def f(v, n):
        for _ in range(n):
            v[...] += 1

    v = var(0)
    f(v, 2)
    f(v, 2)
    assert f.step.stats["traces"] == 1
    f(v, 3)
    assert f.step.stats["traces"] == 2 and int(v[...]) == 7


def test_structural_change_made_inside_retraces_next_call():
    def f(m):
        if not hasattr(m, "count"):
            m.count = var(0)
        m.count[...] += 1

    jf = hijaxc.jit(f)
    p = Pair()
    jf(p)
    jf(p)
    jf(p)
    assert int(p.count[...]) == 3
    assert jf.step.stats["traces"] == 2


def test_oracle_repeated_calls_with_cache():
    def make():
        v = var(jnp.zeros(2))
        return Case(inc, (v,))

    check_eager(make, calls=4)


# --------------------------------------------------------------------------------------------------
# S3/S7 under transforms (being written now; failures expected)
# --------------------------------------------------------------------------------------------------
@pytest.mark.controlflow
def test_cf_grad_of_immutable_params_inside_jit():
    @hijaxc.jit
    def step(params, x):
        def loss(p):
            return (p["w"][...] * x).sum() ** 2

        grads = jax.grad(loss)(hijaxc.vars_as(params, mutable=False))
        params["w"][...] -= 0.1 * grads["w"][...]
        return grads["w"][...]

    params = {"w": hijaxc.Param(jnp.array([1.0, 2.0]))}
    x = jnp.array([1.0, 1.0])
    g = step(params, x)
    np.testing.assert_allclose(g, [6.0, 6.0])
    np.testing.assert_allclose(params["w"][...], [0.4, 1.4], rtol=1e-6)


@pytest.mark.controlflow
def test_cf_write_to_immutable_inside_scan_raises():
    def f(v, xs):
        def body(c, x):
            v[...] += x
            return c, None

        return jax.lax.scan(body, 0.0, xs)

    v = var(0.0, mutable=False)
    with pytest.raises(hijaxc.ImmutableVariableError):
        hijaxc.jit(f)(v, jnp.ones(3))
    assert float(v[...]) == 0.0

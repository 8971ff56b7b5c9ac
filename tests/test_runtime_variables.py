"""The runtime's Variables, Refs, mode flags and conversions (hijaxc.runtime, re-exported by
hijaxc), used eagerly: the Variable API, ``Ref``, ``var_defaults`` / ``use_hijax``,
``vars_as`` / ``with_vars`` / ``to_hijax`` / ``to_lojax`` over mixed trees, immutability (S3) and
``find_duplicates`` — including the seeds' cells."""

import copy
import inspect
import operator

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from oracle import PYTREE, data, optimizer

import hijaxc


def lineno():
    """The caller's line number (errors must name the user's file:line)."""
    return inspect.currentframe().f_back.f_lineno


def assert_names_here(excinfo, line):
    msg = str(excinfo.value)
    assert f"{__file__}:{line}" in msg, f"expected {__file__}:{line} in {msg!r}"


# --------------------------------------------------------------------------------------------------
# Variable: construction, reading, writing
# --------------------------------------------------------------------------------------------------
def test_variable_is_an_nnx_variable_and_defaults():
    v = hijaxc.Variable(jnp.array([1, 2, 3]))
    assert isinstance(v, nnx.Variable)
    assert (v.hijax, v.ref, v.mutable) == (True, False, True)
    assert isinstance(hijaxc.Param(1.0), nnx.Param) and isinstance(
        hijaxc.Param(1.0), hijaxc.Variable
    )
    assert isinstance(hijaxc.BatchStat(1.0), nnx.BatchStat)
    np.testing.assert_array_equal(v[...], [1, 2, 3])
    np.testing.assert_array_equal(v.value, [1, 2, 3])
    np.testing.assert_array_equal(v.get_value(), [1, 2, 3])


def test_python_and_numpy_scalar_values():
    v = hijaxc.Variable(3)
    v[...] += 1
    assert int(v[...]) == 4 and int(v.get_value()) == 4
    w = hijaxc.Variable(np.float32(2.5))
    w[...] *= 2
    assert float(w[...]) == 5.0


def test_flags_given_explicitly():
    v = hijaxc.Variable(0, hijax=False)
    assert v.hijax is False and v.mutable is True
    r = hijaxc.Variable(0, ref=True)
    assert r.ref is True
    im = hijaxc.Variable(0, mutable=False)
    assert im.mutable is False and im.ref is False


def test_setitem_ellipsis_index_slice():
    v = hijaxc.Variable(jnp.arange(5.0))
    v[...] = jnp.ones(5)
    np.testing.assert_array_equal(v[...], np.ones(5))
    v[1] = 7.0
    v[2:4] = jnp.array([8.0, 9.0])
    np.testing.assert_array_equal(v[...], [1, 7, 8, 9, 1])
    assert float(v[1]) == 7.0
    np.testing.assert_array_equal(v[1:3], [7, 8])
    m = hijaxc.Variable(jnp.zeros((2, 3)))
    m[0, :] = jnp.array([1.0, 2.0, 3.0])
    m[:, 2] = 5.0
    np.testing.assert_array_equal(m[...], [[1, 2, 5], [0, 0, 5]])


def test_setitem_ellipsis_broadcasts_scalar():
    v = hijaxc.Variable(jnp.zeros(3))
    v[...] = 2.0
    np.testing.assert_array_equal(v[...], [2, 2, 2])
    assert v[...].shape == (3,)


def test_writes_never_mutate_the_old_array():
    old = jnp.arange(3.0)
    v = hijaxc.Variable(old)
    v[0] = 10.0
    v[...] += 1
    np.testing.assert_array_equal(old, [0, 1, 2])
    np.testing.assert_array_equal(v[...], [11, 2, 3])


def test_augmented_assignment_forms():
    v = hijaxc.Variable(jnp.array([1.0, 2.0, 3.0]))
    v[...] += 1
    v[0] *= 10
    v[1:] -= 1
    np.testing.assert_array_equal(v[...], [20, 2, 3])
    same = v
    v += 1  # in place on the Variable: the name still holds the same Variable
    assert v is same
    np.testing.assert_array_equal(v[...], [21, 3, 4])
    v *= 2
    assert v is same and float(v[0]) == 42.0
    v.value += 1
    assert float(v[0]) == 43.0


def test_dict_value():
    v = hijaxc.Variable({"a": jnp.array(0), "b": jnp.array(2)})
    v["a"] += 1
    v["b"] *= 2
    v["c"] = jnp.array(5)  # new key
    assert sorted(v.get_value()) == ["a", "b", "c"]
    assert (int(v["a"]), int(v["b"]), int(v["c"])) == (1, 4, 5)
    assert "a" in v and len(v) == 3
    metrics = hijaxc.Variable({})
    metrics["y_mean"] = jnp.array(1.5)
    assert float(metrics["y_mean"]) == 1.5


def test_list_value_len_iter():
    v = hijaxc.Variable([jnp.array(1.0), jnp.array(2.0)])
    v[0] = jnp.array(10.0)
    v[1] += 5
    assert len(v) == 2
    assert [float(x) for x in v] == [10.0, 7.0]
    a = hijaxc.Variable(jnp.arange(4))
    assert len(a) == 4 and [int(x) for x in a] == [0, 1, 2, 3]


def test_get_value_set_value_raw_value():
    v = hijaxc.Variable(jnp.array([1.0, 2.0]))
    v.set_value(jnp.array([3.0, 4.0]))
    np.testing.assert_array_equal(v.get_value(), [3, 4])
    assert float(v.get_value(index=1)) == 4.0
    v.set_value(jnp.zeros(4))  # set_value replaces the value, whatever its shape
    assert v.get_value().shape == (4,)
    v.value = jnp.ones(2)
    np.testing.assert_array_equal(v.value, [1, 1])
    raw = v.get_raw_value()
    assert isinstance(raw, jax.Array) and raw is v.get_value()


def test_ref_variable_raw_value_is_a_ref():
    v = hijaxc.Variable(jnp.array(0), ref=True)
    raw = v.get_raw_value()
    assert isinstance(raw, hijaxc.Ref)
    v[...] += 1
    assert int(raw[...]) == 1 and int(v[...]) == 1 and int(v.get_value()) == 1
    assert isinstance(v.get_value(), jax.Array)


@pytest.mark.parametrize(
    "op",
    [
        operator.add,
        operator.sub,
        operator.mul,
        operator.truediv,
        operator.floordiv,
        operator.mod,
        operator.pow,
        operator.lt,
        operator.le,
        operator.gt,
        operator.ge,
    ],
)
def test_binary_operators_act_on_value(op):
    x = jnp.array([1.0, 2.0, 4.0])
    v = hijaxc.Variable(x)
    for a, b in [(v, 3.0), (3.0, v), (v, hijaxc.Variable(x + 1))]:
        unwrap = lambda t: t[...] if isinstance(t, hijaxc.Variable) else t  # noqa: E731
        got = op(a, b)
        assert not isinstance(got, nnx.Variable)
        np.testing.assert_allclose(got, op(unwrap(a), unwrap(b)), rtol=1e-6)


def test_matmul_bitwise_unary_operators():
    m = hijaxc.Variable(jnp.array([[1.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_allclose(m @ jnp.ones(2), [3, 7])
    np.testing.assert_allclose(jnp.ones(2) @ m, [4, 6])
    i = hijaxc.Variable(jnp.array([1, 6]))
    np.testing.assert_array_equal(i & 3, [1, 2])
    np.testing.assert_array_equal(i | 8, [9, 14])
    np.testing.assert_array_equal(i ^ 1, [0, 7])
    np.testing.assert_array_equal(i << 1, [2, 12])
    np.testing.assert_array_equal(i >> 1, [0, 3])
    np.testing.assert_array_equal(-i, [-1, -6])
    np.testing.assert_array_equal(abs(hijaxc.Variable(jnp.array([-2, 3]))), [2, 3])
    np.testing.assert_array_equal(~hijaxc.Variable(jnp.array([True, False])), [False, True])
    np.testing.assert_array_equal(jnp.sin(hijaxc.Variable(jnp.zeros(2))), [0, 0])  # __jax_array__
    np.testing.assert_array_equal(np.asarray(i), [1, 6])


def test_equality_and_hash():
    v = hijaxc.Variable(jnp.array([1, 2]))
    np.testing.assert_array_equal(v == jnp.array([1, 0]), [True, False])
    assert hash(v) == hash(v) and {v: 1}[v] == 1


def test_variable_cannot_hold_a_variable():
    with pytest.raises(hijaxc.InvalidValueError):
        hijaxc.Variable(hijaxc.Variable(1))


def test_metadata():
    v = hijaxc.Param(jnp.ones(2), tag="w", group=3)
    assert v.tag == "w" and v.group == 3
    assert v.get_metadata()["tag"] == "w"
    assert "tag='w'" in repr(v)
    w = jax.tree.map(lambda x: x + 1, v)  # metadata rides along pytree operations
    assert w.tag == "w"


# --------------------------------------------------------------------------------------------------
# repr
# --------------------------------------------------------------------------------------------------
def test_repr_in_the_seeds_style():
    r = repr(hijaxc.Variable(jnp.array([1, 2, 3])))
    assert r.startswith("Variable( # 3 (12 B)"), r
    assert "value=Array([1, 2, 3], dtype=int32)" in r and "hijax=True" in r
    assert "ref=" not in r and "mutable=" not in r
    assert repr(hijaxc.Param(jnp.zeros(2))).startswith("Param(")
    lo = repr(hijaxc.Variable(0, hijax=False))
    assert "hijax=False" in lo
    im = repr(hijaxc.Variable(0, mutable=False))
    assert "mutable=False" in im
    ref = repr(hijaxc.Variable(jnp.array(0), ref=True))
    assert "value=Ref(0, dtype=int32, weak_type=True)" in ref and "ref=True" in ref


# --------------------------------------------------------------------------------------------------
# Variables are pytrees
# --------------------------------------------------------------------------------------------------
def test_tree_leaves_map_keep_type_and_flags():
    v = hijaxc.Variable({"a": jnp.ones(2), "b": jnp.zeros(1)}, hijax=False)
    assert len(jax.tree.leaves(v)) == 2
    w = jax.tree.map(lambda x: x + 1, v)
    assert type(w) is hijaxc.Variable and w is not v and w.hijax is False
    np.testing.assert_array_equal(w["a"], [2, 2])
    np.testing.assert_array_equal(v["a"], [1, 1])  # the original is untouched
    p = jax.tree.map(lambda x: x * 0, hijaxc.Param(jnp.ones(3), mutable=False))
    assert type(p) is hijaxc.Param and p.mutable is False


def test_grad_vmap_jit_through_variables():
    v = hijaxc.Param(jnp.array([1.0, 2.0]))
    g = jax.grad(lambda p: (p[...] ** 2).sum())(v)
    assert isinstance(g, hijaxc.Param)
    np.testing.assert_allclose(g[...], [2.0, 4.0])
    out = jax.vmap(lambda p: p[...] * 2)(hijaxc.Variable(jnp.arange(3.0)))
    np.testing.assert_allclose(out, [0, 2, 4])
    # plain jax.jit takes Variables by value (pytrees): no write-back, original untouched
    y = jax.jit(lambda p: p[...] + 1)(v)
    np.testing.assert_allclose(y, [2, 3])
    np.testing.assert_allclose(v[...], [1, 2])


def test_grad_of_immutable_tree():  # S3: immutable trees can be differentiated
    params = {"w": hijaxc.Param(jnp.array([1.0, -2.0])), "b": hijaxc.Param(jnp.array(0.5))}
    frozen = hijaxc.vars_as(params, mutable=False)
    grads = jax.grad(lambda t: (t["w"][...] * 3).sum() + t["b"][...] ** 2)(frozen)
    np.testing.assert_allclose(grads["w"][...], [3, 3])
    np.testing.assert_allclose(grads["b"][...], 1.0)


def test_deepcopy_and_copy_give_variables():  # S1's oracle runs eagerly on a deep copy
    v = hijaxc.Variable(jnp.array([1.0, 2.0]), mutable=True)
    for c in (copy.deepcopy(v), copy.copy(v)):
        assert type(c) is hijaxc.Variable and c is not v
        assert (c.hijax, c.ref, c.mutable) == (v.hijax, v.ref, v.mutable)
        np.testing.assert_array_equal(c[...], v[...])
    c = copy.deepcopy(v)
    c[...] += 1
    np.testing.assert_array_equal(v[...], [1, 2])
    r = copy.deepcopy(hijaxc.Variable(jnp.array(0), ref=True))
    assert isinstance(r, hijaxc.Variable) and r.ref


def test_variables_in_modules_split_merge_filters():
    class M(nnx.Module):
        def __init__(self):
            self.w = hijaxc.Param(jnp.ones(2))
            self.s = hijaxc.BatchStat(jnp.zeros(2), hijax=False)
            self.lst = data([hijaxc.Variable(jnp.array(1))])

    m = M()
    params = nnx.state(m, nnx.Param)
    assert len(jax.tree.leaves(params)) == 1
    graphdef, st = nnx.split(m)
    m2 = nnx.merge(graphdef, st)
    assert type(m2.w) is hijaxc.Param and type(m2.s) is hijaxc.BatchStat
    assert m2.s.hijax is False and m2.w.hijax is True
    np.testing.assert_array_equal(m2.w[...], [1, 1])
    m.w[...] = jnp.array([3.0, 4.0])  # hijaxc Variables support v[...] = x in every flax
    np.testing.assert_array_equal(nnx.state(m, nnx.Param)["w"].value, [3, 4])


# --------------------------------------------------------------------------------------------------
# Ref
# --------------------------------------------------------------------------------------------------
def test_ref_repr_read_write():
    r = hijaxc.Ref(0)
    assert repr(r) == "Ref(0, dtype=int32, weak_type=True)"
    r[...] = 5
    assert int(r[...]) == 5
    r2 = hijaxc.Ref(jnp.array([1.0, 2.0]))
    assert repr(r2) == "Ref([1., 2.], dtype=float32)"
    r2[1] = 7.0
    r2[...] += 1
    np.testing.assert_array_equal(r2[...], [2, 8])
    np.testing.assert_array_equal(r2.value, [2, 8])
    assert len(r2) == 2
    assert len(jax.tree.leaves(r2)) == 1


# --------------------------------------------------------------------------------------------------
# Mode flags: var_defaults, use_hijax
# --------------------------------------------------------------------------------------------------
def test_var_defaults_read():
    d = hijaxc.var_defaults()
    assert (d.hijax, d.ref) == (True, False)
    hijax, ref = d
    assert (hijax, ref) == (True, False)


def test_var_defaults_set_at_once():
    hijaxc.var_defaults(hijax=False)  # no `with`: in effect right away (the fixture restores)
    assert hijaxc.var_defaults().hijax is False
    assert hijaxc.Variable(0).hijax is False
    hijaxc.var_defaults(ref=True)
    assert tuple(hijaxc.var_defaults()) == (False, True)
    assert hijaxc.Variable(0).ref is True


def test_var_defaults_context_manager_restores():
    with hijaxc.var_defaults(hijax=False, ref=True):
        assert tuple(hijaxc.var_defaults()) == (False, True)
        v = hijaxc.Variable(jnp.array(1))
        with hijaxc.var_defaults(ref=False):
            assert tuple(hijaxc.var_defaults()) == (False, False)
        assert tuple(hijaxc.var_defaults()) == (False, True)
    assert tuple(hijaxc.var_defaults()) == (True, False)
    assert (v.hijax, v.ref) == (False, True)
    with pytest.raises(KeyError):
        with hijaxc.var_defaults(hijax=False):
            raise KeyError("x")
    assert hijaxc.var_defaults().hijax is True  # restored after an exception too


def test_var_defaults_decorator():
    @hijaxc.var_defaults(hijax=False)
    def make():
        return hijaxc.Variable(0), tuple(hijaxc.var_defaults())

    assert tuple(hijaxc.var_defaults()) == (True, False)  # decorating changes nothing outside
    v, inside = make()
    assert v.hijax is False and inside == (False, False)
    assert tuple(hijaxc.var_defaults()) == (True, False)


def test_use_hijax():
    with hijaxc.use_hijax(False):
        assert hijaxc.var_defaults().hijax is False
        assert hijaxc.Variable(0).hijax is False
    assert hijaxc.var_defaults().hijax is True

    @hijaxc.use_hijax(False)
    def make():
        return hijaxc.Variable(0)

    assert make().hijax is False and hijaxc.Variable(0).hijax is True
    hijaxc.use_hijax(False)
    assert hijaxc.var_defaults().hijax is False


def test_nnx_modules_under_var_defaults():  # seed 001 "Changing Status"
    with hijaxc.use_hijax(False):
        model = nnx.Linear(1, 3, rngs=nnx.Rngs(0))
    hijax_model = hijaxc.to_hijax(model)
    arrays_model = hijaxc.to_lojax(hijax_model)
    assert hijax_model.kernel.hijax is True and arrays_model.kernel.hijax is False
    assert "hijax=True" in repr(hijax_model.kernel)


# --------------------------------------------------------------------------------------------------
# vars_as / with_vars / to_hijax / to_lojax
# --------------------------------------------------------------------------------------------------
def _all_vars(tree):
    out = []

    def walk(x, seen):
        if id(x) in seen:
            return
        seen.add(id(x))
        if isinstance(x, nnx.Variable):
            out.append(x)
        elif isinstance(x, (PYTREE, nnx.Module)):
            for k, c in vars(x).items():
                if not k.startswith("_"):
                    walk(c, seen)
        elif isinstance(x, (list, tuple)):
            for c in x:
                walk(c, seen)
        elif isinstance(x, dict):
            for c in x.values():
                walk(c, seen)

    walk(tree, set())
    return out


def _raw(v):
    return v.get_raw_value() if isinstance(v, hijaxc.Variable) else v.value


def _mixed_tree():
    hv = hijaxc.Variable(jnp.array([1.0, 2.0]))
    fv = nnx.Variable(jnp.array(3.0))
    fp = nnx.Param(jnp.ones(2))
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    return {"h": hv, "f": fv, "list": [fp, hv], "tuple": (model,), "model": model}


@pytest.mark.parametrize(
    "convert,flag",
    [
        (hijaxc.to_lojax, False),
        (hijaxc.to_hijax, True),
        (lambda t: hijaxc.vars_as(t, hijax=False), False),
        (lambda t: hijaxc.with_vars(t, hijax=False), False),
    ],
)
def test_conversions_over_mixed_trees(convert, flag):
    tree = _mixed_tree()
    before = [(v, _raw(v)) for v in _all_vars(tree)]
    out = convert(tree)
    new = _all_vars(out)
    assert len(new) == len(before) == 5
    for v in new:
        assert isinstance(v, hijaxc.Variable), type(v)
        assert v.hijax is flag
        assert all(v is not old for old, _ in before)  # copies
    # sharing inside the tree is kept; types keep NNX filters working
    assert out["list"][1] is out["h"] and out["tuple"][0] is out["model"]
    assert isinstance(out["list"][0], nnx.Param) and isinstance(out["model"].kernel, nnx.Param)
    assert isinstance(out["model"], nnx.Linear)
    np.testing.assert_array_equal(out["f"][...], 3.0)
    # the originals are untouched
    for old, value in before:
        assert _raw(old) is value
    assert tree["h"].hijax is True


def test_vars_as_round_trip_and_only_filter():
    bn = nnx.BatchNorm(2, rngs=nnx.Rngs(0))
    lo = hijaxc.to_lojax(bn, only=nnx.BatchStat)
    assert lo.mean.hijax is False and lo.var.hijax is False
    assert not isinstance(lo.scale, hijaxc.Variable) or lo.scale.hijax is True  # not selected
    back = hijaxc.to_hijax(lo)
    assert back.mean.hijax is True and isinstance(back.mean, nnx.BatchStat)
    frozen = hijaxc.vars_as(bn, mutable=False, only=nnx.Param)
    assert frozen.scale.mutable is False and frozen.bias.mutable is False
    assert not isinstance(frozen.mean, hijaxc.Variable) or frozen.mean.mutable is True
    frozen.mean.value = jnp.ones(2)  # not selected: still writable


def test_vars_as_optimizer_and_rngs():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    opt = optimizer(model, optax.sgd(0.1))
    rngs = nnx.Rngs(0)
    out = hijaxc.vars_as({"opt": opt, "rngs": rngs}, hijax=False)
    assert isinstance(out["opt"], nnx.Optimizer) and isinstance(out["rngs"], nnx.Rngs)
    converted = _all_vars(out)
    assert len(converted) >= 3 and all(v.hijax is False for v in converted)
    out["rngs"].params()  # advances the copy's counter only
    assert int(rngs.default.count.value) == 0 and int(out["rngs"].default.count.value) == 1


def test_seed_mutability_cells():  # seed 000 "Mutability" and "Ref support"
    v = hijaxc.Variable(jnp.array(0))
    v_immut = hijaxc.vars_as(v, mutable=False)
    assert not v_immut.mutable and v.mutable
    with pytest.raises(hijaxc.ImmutableVariableError):
        v_immut[...] += 1
    v_ref = hijaxc.vars_as(v, ref=True)
    assert v_ref.ref and isinstance(v_ref.get_raw_value(), hijaxc.Ref)
    v_immut = hijaxc.vars_as(v_ref, mutable=False)
    assert v_immut.ref is False and v_immut.mutable is False
    v_ref2 = hijaxc.vars_as(v_immut, mutable=True)
    assert v_ref2.ref is True and v_ref2.mutable is True
    v_ref2[...] += 1  # a fresh box: the earlier Ref is not shared
    assert int(v_ref2[...]) == 1 and int(v_ref[...]) == 0


def test_seed_module_vars_as_mutable():
    model = nnx.Linear(1, 3, rngs=nnx.Rngs(0))
    frozen = hijaxc.vars_as(model, mutable=False)
    assert "mutable=False" in repr(frozen.kernel)
    thawed = hijaxc.vars_as(frozen, mutable=True)
    assert thawed.kernel.mutable is True
    thawed.kernel[...] = jnp.zeros((1, 3))
    np.testing.assert_array_equal(thawed.kernel[...], 0)
    assert float(jnp.abs(model.kernel.value).sum()) > 0  # the original is independent


def test_ref_with_immutable_is_rejected():
    with pytest.raises(hijaxc.HijaxcError):
        hijaxc.Variable(0, ref=True, mutable=False)
    with pytest.raises(hijaxc.HijaxcError):
        hijaxc.vars_as(hijaxc.Variable(0), ref=True, mutable=False)


def test_immutable_writes_raise_naming_this_line():
    v = hijaxc.Variable(jnp.array([1.0, 2.0]), mutable=False)
    with pytest.raises(hijaxc.ImmutableVariableError) as e:
        line = lineno() + 1
        v[...] = jnp.zeros(2)
    assert_names_here(e, line)
    assert "Variable" in str(e.value)
    with pytest.raises(hijaxc.ImmutableVariableError) as e:
        line = lineno() + 1
        v[0] += 1
    assert_names_here(e, line)
    with pytest.raises(hijaxc.ImmutableVariableError) as e:
        line = lineno() + 1
        v.value = jnp.zeros(2)
    assert_names_here(e, line)
    with pytest.raises(hijaxc.ImmutableVariableError) as e:
        line = lineno() + 1
        v.set_value(jnp.zeros(2))
    assert_names_here(e, line)
    with pytest.raises(hijaxc.ImmutableVariableError):
        v += 1
    np.testing.assert_array_equal(v[...], [1, 2])
    assert issubclass(hijaxc.ImmutableVariableError, hijaxc.HijaxcError)


def test_immutable_param_in_module_names_its_type():
    frozen = hijaxc.vars_as(nnx.Linear(1, 2, rngs=nnx.Rngs(0)), mutable=False)
    with pytest.raises(hijaxc.ImmutableVariableError) as e:
        line = lineno() + 1
        frozen.bias[...] = jnp.ones(2)
    assert_names_here(e, line)
    assert "Param" in str(e.value)


# --------------------------------------------------------------------------------------------------
# find_duplicates (seed 001 "Reference Sharing")
# --------------------------------------------------------------------------------------------------
class SharedVariables(PYTREE):
    def __init__(self):
        self.a = nnx.Variable(jnp.array(0))
        self.b = nnx.Variable(jnp.array(1))
        self.c = self.a


class SharedModules(PYTREE):
    def __init__(self):
        self.d = nnx.Linear(1, 1, rngs=nnx.Rngs(0))
        self.e = nnx.Linear(1, 1, rngs=nnx.Rngs(0))
        self.f = self.d


def test_find_duplicates_seed():
    assert hijaxc.find_duplicates(SharedVariables()) == [[("a",), ("c",)]]
    assert hijaxc.find_duplicates(SharedModules()) == [[("d",), ("f",)]]


def test_find_duplicates_none_and_containers():
    assert not hijaxc.find_duplicates(nnx.Linear(1, 1, rngs=nnx.Rngs(0)))
    v = hijaxc.Variable(jnp.array(0))
    assert hijaxc.find_duplicates([v, hijaxc.Variable(1), v]) == [[(0,), (2,)]]
    assert hijaxc.find_duplicates({"x": v, "y": v}) == [[("x",), ("y",)]]
    w = hijaxc.Variable(2)
    dups = hijaxc.find_duplicates({"p": [v, w], "q": (w, v)})
    assert sorted(map(sorted, dups)) == [[("p", 0), ("q", 1)], [("p", 1), ("q", 0)]]

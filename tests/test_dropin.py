"""Drop-in behaviours that ``jax.jit`` / ``nnx.jit`` users rely on (issue 13, SPEC S12, S13).

Each test compares with eager execution (``oracle.check_eager``) or with what ``jax.jit`` does.
"""

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from oracle import check_eager

import hijaxc

HAS_FLAX_HIJAX = hasattr(nnx, "var_defaults")


def _linear():
    return nnx.Linear(2, 3, rngs=nnx.Rngs(0))


# --- S13: any callable ----------------------------------------------------------------------------
class Counter(nnx.Module):
    def __init__(self):
        self.count = nnx.Variable(jnp.zeros((), jnp.int32))
        self.w = nnx.Param(jnp.ones(3))

    def __call__(self, x):
        self.count.value += 1  # .value: flax 0.10 Variables take no v[...] = x
        return x * self.w.value


def test_module_instance_is_compiled_with_its_state_threaded():
    def make():
        m = Counter()
        return m, (jnp.arange(3.0),), (m,)

    check_eager(make, calls=3)


def test_callable_object_jax_jit_function_and_nested_partials():
    m = Counter()
    j = hijaxc.jit(m)
    np.testing.assert_allclose(j(jnp.ones(3)), np.ones(3))
    assert int(m.count[...]) == 1

    lin = _linear()
    x = jnp.ones((1, 2))
    np.testing.assert_allclose(hijaxc.jit(lin)(x), lin(x), rtol=1e-6)

    def scaled(a, b, x, v):
        v[...] += a * b
        return v[...] * x

    v = hijaxc.Variable(jnp.zeros(()))
    p = functools.partial(functools.partial(scaled, 2.0), 3.0)
    assert float(hijaxc.jit(p)(1.0, v)) == 6.0
    assert float(hijaxc.jit(jax.jit(scaled))(2.0, 1.0, 1.0, v)) == 8.0
    assert float(v[...]) == 8.0


def test_not_callable_is_a_clear_type_error():
    with pytest.raises(TypeError, match="Python callable"):
        hijaxc.jit(3)


# --- static arguments by position or by keyword ---------------------------------------------------
def _repeat(v, s, x=1.0):
    for _ in range(s):
        v[...] += x
    return v[...]


@pytest.mark.parametrize(
    "options,call",
    [
        (dict(static_argnames="s"), lambda f, v: f(v, 2)),
        (dict(static_argnames="s"), lambda f, v: f(v, s=2)),
        (dict(static_argnums=1), lambda f, v: f(v, s=2)),
        (dict(static_argnums=(1,)), lambda f, v: f(v, 2)),
    ],
)
def test_static_argument_however_passed(options, call):
    v = hijaxc.Variable(jnp.zeros(()))
    f = hijaxc.jit(_repeat, **options)
    assert float(call(f, v)) == 2.0
    assert float(call(f, v)) == 4.0
    assert f.step.stats["traces"] == 1


# --- nnx.cached_partial ---------------------------------------------------------------------------
def _train_step(model, optimizer, x, y):
    def loss_fn(model):
        return ((model(x) - y) ** 2).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    if "model" in optimizer.update.__code__.co_varnames:
        optimizer.update(model, grads)
    else:  # flax 0.10
        optimizer.update(grads)
    return loss


def _model_and_optimizer():
    model = _linear()
    return model, nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)


@pytest.mark.parametrize("how", ["hijaxc", "nnx"])
def test_cached_partial_trains_like_plain_calls(how):
    x, y = jnp.ones((4, 2)), jnp.zeros((4, 3))
    ref_model, ref_opt = _model_and_optimizer()
    ref = [float(_train_step(ref_model, ref_opt, x, y)) for _ in range(3)]
    model, opt = _model_and_optimizer()
    cached = (hijaxc if how == "hijaxc" else nnx).cached_partial
    step = cached(hijaxc.jit(_train_step), model, opt)
    got = [float(step(x, y)) for _ in range(3)]
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    np.testing.assert_allclose(model.kernel[...], ref_model.kernel[...], rtol=1e-5)


# --- S12: non-array Variable contents are static --------------------------------------------------
class WithStatics(nnx.Module):
    def __init__(self, note):
        self.w = nnx.Param(jnp.ones(3))
        self.note = nnx.Variable(note)
        self.nothing = nnx.Variable(None)


@pytest.mark.parametrize(
    "note", ["hello", ("a", 1), jax.sharding.SingleDeviceSharding(jax.devices()[0])]
)
def test_non_array_variable_values_are_static(note):
    def make():
        m = WithStatics(note)

        def f(x):
            m.w.value += x
            return m.w.value.sum()

        return f, (jnp.ones(3),), (m,)

    check_eager(make, calls=3)


def test_changing_a_static_variable_value_retraces():
    m = WithStatics("a")

    @hijaxc.jit
    def f(m):
        m.w.value += 1
        return m.w.value.sum()

    f(m), f(m)
    m.note.value = "b"
    f(m)
    assert f.step.stats["traces"] == 2
    np.testing.assert_allclose(m.w[...], 4 * np.ones(3))


# --- S12: Python containers without state are not state -------------------------------------------
def test_trace_counter_list_is_a_side_effect_of_tracing():
    traces = []
    v = hijaxc.Variable(jnp.zeros(()))

    @hijaxc.jit
    def f(x):
        traces.append(1)
        v[...] += x
        return v[...]

    for _ in range(4):
        f(1.0)
    assert traces == [1]  # Python ints, appended once: traced once, never threaded
    assert float(v[...]) == 4.0


def test_tracer_stored_into_a_global_list_is_a_leak_and_is_undone():
    log = []

    @hijaxc.jit
    def f(x):
        log.append(x * 2)
        return x

    with pytest.raises(hijaxc.TracerLeakError, match="log|list"):
        f(jnp.ones(2))
    assert log == []


# --- state behind tuples --------------------------------------------------------------------------
_C = hijaxc.Variable(jnp.zeros(()))
_PAIR = (_C, 2.0)
_Named = collections.namedtuple("_Named", "counter scale")
_NAMED = _Named(hijaxc.Variable(jnp.zeros(())), 3.0)


def _bump_tuple_global():
    _PAIR[0][...] += _PAIR[1]
    _NAMED.counter[...] += _NAMED.scale


def test_state_behind_tuples_in_a_helpers_globals_and_closure():
    @hijaxc.jit
    def f():
        _bump_tuple_global()
        return _C[...] + _NAMED.counter[...]

    _C[...] = jnp.zeros(())
    _NAMED.counter[...] = jnp.zeros(())
    assert float(f()) == 5.0
    assert float(f()) == 10.0
    assert float(_C[...]) == 4.0 and float(_NAMED.counter[...]) == 6.0

    box = (hijaxc.Variable(jnp.ones(())),)

    def helper():
        box[0][...] *= 2

    @hijaxc.jit
    def g():
        helper()
        return box[0][...]

    assert float(g()) == 2.0 and float(g()) == 4.0 and float(box[0][...]) == 4.0


# --- Variables returned through transform outputs -------------------------------------------------
def test_captured_variable_returned_as_aux_is_the_callers_object_updated():
    stat = hijaxc.Variable(jnp.zeros(()))

    @hijaxc.jit
    def f(x):
        def loss(x):
            stat[...] += 1
            return (x**2).sum(), stat

        g, aux = jax.grad(loss, has_aux=True)(x)
        (_, aux2), _ = jax.value_and_grad(loss, has_aux=True)(x)
        _, aux3 = jax.vmap(lambda x: (x * stat[...], stat))(jnp.ones(3))
        aux4 = jax.lax.cond(x.sum() > 0, lambda: stat, lambda: stat)
        return g, aux, aux2, aux3, aux4

    g, *auxes = f(jnp.ones(2))
    assert all(a is stat for a in auxes)
    assert float(stat[...]) == 2.0
    np.testing.assert_allclose(g, 2 * np.ones(2))


def test_module_returned_as_aux_of_a_grad_over_it():
    m = _linear()

    @hijaxc.jit
    def f(m, x):
        def loss(m):
            return m(x).sum(), m

        _, aux = nnx.grad(loss, has_aux=True)(m)
        return aux

    assert f(m, jnp.ones((1, 2))) is m


def test_scan_returning_a_captured_variable_is_a_clear_error():
    v = hijaxc.Variable(jnp.zeros(()))

    @hijaxc.jit
    def f():
        def body(c, x):
            v[...] += x
            return c, v

        return jax.lax.scan(body, 0.0, jnp.arange(3.0))

    with pytest.raises(hijaxc.HijaxcError, match="scan"):
        f()
    assert float(v[...]) == 0.0


# --- flax hijax Variables stay leaves -------------------------------------------------------------
@pytest.mark.skipif(not HAS_FLAX_HIJAX, reason="flax without var_defaults(hijax=True)")
def test_flax_hijax_variables_are_pytree_leaves_inside_the_step():
    def build():
        with nnx.var_defaults(hijax=True):
            model = _linear()
            momentum = jax.tree.map(
                lambda p: nnx.Variable(jnp.ones_like(p[...])), nnx.state(model, nnx.Param)
            )
        return model, momentum

    def step(model, momentum, x):
        def update(p, m):
            m[...] = 0.9 * m[...] + 1
            p[...] -= 0.1 * m[...]

        jax.tree.map(update, nnx.state(model, nnx.Param), momentum)
        return model(x).sum()

    x = jnp.ones((1, 2))
    ref_model, ref_momentum = build()
    ref = [float(step(ref_model, ref_momentum, x)) for _ in range(2)]
    model, momentum = build()
    compiled = hijaxc.jit(step)
    got = [float(compiled(model, momentum, x)) for _ in range(2)]
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    np.testing.assert_allclose(model.kernel[...], ref_model.kernel[...], rtol=1e-6)
    np.testing.assert_allclose(momentum["kernel"][...], ref_momentum["kernel"][...], rtol=1e-6)
    assert type(model.kernel) is type(ref_model.kernel)

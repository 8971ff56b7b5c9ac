"""S1: ``hijaxc.jit(f)`` returns what ``f`` returns eagerly and leaves every reachable Variable, Ref
and Module in the same state (values, structure, identity), checked by ``oracle.check_eager``.

Every case is a factory ``make()`` that builds fresh state (arguments, closure cells, module
globals), so the eager run and the compiled run never share an object.  Shared models and helpers
are in ``eager_models.py``.

This module: S7, control flow and transforms inside the compiled function (marked
``controlflow``; being written now).

Eagerly, JAX traces the bodies of lax control flow, so a body that mutates a Variable would leak a
tracer: the reference semantics is the Python one ("as it would eagerly, every iteration").  The
eager run therefore executes with Python reference versions of the primitives patched in
(``oracle.python_control_flow``); the compiled run uses the real ones, rewritten by hijaxc.
"""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from eager_models import X2, Block, Counter, inc, var
from flax import nnx
from oracle import Case, check_cf, opt_update, optimizer

import hijaxc

# --------------------------------------------------------------------------------------------------
# S7: control flow and transforms inside (being written now; failures expected)
# --------------------------------------------------------------------------------------------------
controlflow = pytest.mark.controlflow


@controlflow
def test_cf_fori_loop_closure_variable():
    def make():
        v = var(jnp.zeros(2))

        def f(x):
            def body(i, carry):
                v[...] += x * i
                return carry + 1

            return jax.lax.fori_loop(0, 4, body, 0)

        return f, (X2,), (v,)

    check_cf(make, calls=2)


@controlflow
def test_cf_scan_mutates_argument():
    def f(v, xs):
        def body(c, x):
            v[...] += x
            return c + v[...].sum(), v[...]

        return jax.lax.scan(body, 0.0, xs)

    check_cf(lambda: (f, (var(jnp.zeros(2)), jnp.arange(6.0).reshape(3, 2))), calls=2)


@controlflow
def test_cf_cond_writes_in_one_branch():
    def f(v, x):
        def yes(x):
            v[...] += x
            return x.sum()

        def no(x):
            return -x.sum()

        return jax.lax.cond(x.sum() > 0, yes, no, x)

    check_cf(lambda: (f, (var(jnp.zeros(2)), X2)), calls=2)


@controlflow
def test_cf_while_loop_counter():
    def f(v):
        def cond(c):
            return c < 5

        def body(c):
            v[...] += c
            return c + 1

        return jax.lax.while_loop(cond, body, 0)

    check_cf(lambda: (f, (var(0),)), calls=2)


@controlflow
def test_cf_switch():
    def f(v, i):
        def add():
            v[...] += 1

        def mul():
            v[...] *= 10

        jax.lax.switch(i, [add, mul])

    check_cf(lambda: (f, (var(1.0), jnp.array(1))), calls=2)


@controlflow
def test_cf_cond_and_switch_operands_hold_state_by_reference():
    """Regression (fuzz seed 96): a Variable or Module passed as the *operand* of cond/switch was
    flattened to arrays, so the branch wrote to a copy and the write was lost."""

    def f(v, m, x):
        def yes(ops):
            v_, m_ = ops
            v_[...] += x
            m_.count[...] += 1
            return v_[...].sum()

        def no(ops):
            ops[0][...] -= 1.0
            return -ops[0][...].sum()

        a = jax.lax.cond(x.sum() > 0, yes, no, (v, m))
        b = jax.lax.switch(jnp.int32(x[0] > 0), [no, yes], (v, m))
        return a + b

    check_cf(lambda: (f, (var(jnp.zeros(2)), Counter(), X2)), calls=2)
    check_cf(lambda: (f, (var(jnp.zeros(2)), Counter(), -X2)), calls=2)


@controlflow
@pytest.mark.parametrize("loop", ["fori_loop", "while_loop", "scan"])
def test_cf_loop_carry_holding_state_is_rejected(loop):
    """(fuzz seed 96) A loop carry is a value: Variables in it cannot be passed by reference, so
    hijaxc says so instead of silently threading a copy; the caller's Variable is untouched."""
    v = var(jnp.ones(2))

    def f(v):
        if loop == "fori_loop":
            return jax.lax.fori_loop(0, 3, lambda i, c: c, v)
        if loop == "while_loop":
            return jax.lax.while_loop(lambda c: False, lambda c: c, v)
        return jax.lax.scan(lambda c, x: (c, x), v, jnp.arange(3.0))

    with pytest.raises(hijaxc.HijaxcError, match=f"{loop}: the loop carry holds Variables"):
        hijaxc.jit(f)(v)
    np.testing.assert_array_equal(v[...], np.ones(2))


@controlflow
def test_cf_nested_hijaxc_jit():
    def f(v, w):
        inner = hijaxc.jit(inc)
        inner(v)
        inner(w)
        return v[...] + w[...]

    check_cf(lambda: (f, (var(1), var(5))), calls=2)


@controlflow
def test_cf_nested_jax_jit():
    def f(v, x):
        @jax.jit
        def g(x):
            v[...] += x
            return v[...] * 2

        return g(x)

    check_cf(lambda: (f, (var(jnp.zeros(2)), X2)), calls=2)


@controlflow
def test_cf_checkpoint():
    def f(v, x):
        @jax.checkpoint
        def g(x):
            v[...] = v[...] + jnp.sin(x)
            return v[...].sum()

        return g(x)

    check_cf(lambda: (f, (var(jnp.zeros(2)), X2)), calls=2)


@controlflow
def test_cf_vmap_reads_closure_variable():
    def make():
        w = var([1.0, 2.0])
        count = var(0)

        def f(xs):
            count[...] += 1
            return jax.vmap(lambda x: x * w[...])(xs)

        return f, (jnp.ones((3, 2)),), (w, count)

    check_cf(make, calls=2)


# Transforms: the reference is NNX's own stateful transform (nnx.value_and_grad / nnx.grad), which
# updates BatchNorm statistics and Rngs in place and differentiates the Params.  The seeds' pattern
# (split -> merge inside the loss) updates the caller's BatchNorm only where ``nnx.merge`` reuses
# the split Variables (flax >= 0.11); flax 0.10.4's merge builds copies, so eagerly the caller's
# statistics stay as they were, and so must they under hijaxc.jit.
def _merge_shares_variables():
    m = nnx.BatchNorm(1, rngs=nnx.Rngs(0))
    return nnx.merge(*nnx.split(m)).mean is m.mean


MERGE_SHARES = _merge_shares_variables()


def _nnx_train_step(model, opt, x, y):
    def loss_fn(model):
        return ((model(x) - y) ** 2).mean()

    target = model if MERGE_SHARES else copy.deepcopy(model)
    loss, grads = nnx.value_and_grad(loss_fn)(target)
    opt_update(opt, model, grads)
    return loss


@controlflow
def test_cf_grad_seed_train_step_closure():  # seed 000 first cell
    def make():
        model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        opt = optimizer(model, optax.adamw(1e-2))

        def train_step(x, y):
            loss_fn = lambda m: jnp.mean((m(x) - y) ** 2)  # noqa: E731
            loss, grads = jax.value_and_grad(loss_fn)(hijaxc.vars_as(model, mutable=False))
            opt_update(opt, model, grads)
            return loss

        args = (jnp.arange(8.0).reshape(4, 2) / 8, jnp.zeros((4, 3)))
        return Case(
            train_step,
            args,
            state=(model, opt),
            eager=lambda x, y: _nnx_train_step(model, opt, x, y),
        )

    check_cf(make, calls=3)


@controlflow
def test_cf_grad_seed_block_split_merge():  # seed 000 "Training Loop" (BatchNorm, Dropout)
    def train_step(model, opt, x, y):
        graphdef, params, nondiff = nnx.split(model, nnx.Param, ...)

        def loss_fn(params):
            model = nnx.merge(graphdef, params, nondiff)
            return ((model(x) - y) ** 2).mean()

        loss, grads = jax.value_and_grad(loss_fn)(hijaxc.vars_as(params, mutable=False))
        opt_update(opt, model, grads)
        return loss

    def make():
        model = Block(2, 8, 3, rngs=nnx.Rngs(0))
        x = jnp.arange(12.0).reshape(6, 2) % 5
        # sgd, not the seed's adam: the Linear before BatchNorm has a zero gradient in exact
        # arithmetic, and adam's first step would blow its rounding noise up to +-lr
        return Case(
            train_step,
            (model, optimizer(model, optax.sgd(0.1)), x, jnp.ones((6, 3))),
            eager=_nnx_train_step,
        )

    check_cf(make, calls=3, atol=1e-5)


@controlflow
def test_cf_grad_updates_batchnorm_stats():
    def f(model, x):
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def loss(params):
            return (nnx.merge(graphdef, params, rest)(x) ** 2).mean()

        return jax.tree.leaves(jax.grad(loss)(params))

    def eager(model, x):
        target = model if MERGE_SHARES else copy.deepcopy(model)
        return jax.tree.leaves(nnx.grad(lambda m: (m(x) ** 2).mean())(target))

    x = jnp.array([[0.0, 1.0], [2.0, 5.0], [3.0, -1.0]])
    check_cf(lambda: Case(f, (nnx.BatchNorm(2, rngs=nnx.Rngs(0)), x), eager=eager), calls=2)


@controlflow
def test_cf_scan_over_layers():  # seed 001 "Scan Over Layers" (stack built without jax.vmap over
    # a Module, which flax 0.10.4 cannot do eagerly)
    def make():
        block = Block(2, 8, 2, rngs=nnx.Rngs(0))
        block.eval()
        graphdef, st = nnx.split(block)
        stacked = jax.tree.map(
            lambda a: (
                jnp.stack([a] * 4)
                if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key)
                else jnp.stack([a * (1 + 0.1 * k) for k in range(4)])
            ),
            st,
        )
        stack = hijaxc.to_hijax(nnx.merge(graphdef, stacked))

        def forward(x, stack):
            def scan_fn(x, block):
                return block(x), None

            y, _ = jax.lax.scan(scan_fn, x, stack)
            return y

        return forward, (jnp.arange(6.0).reshape(3, 2) / 6, stack)

    check_cf(make, calls=2, atol=1e-5)

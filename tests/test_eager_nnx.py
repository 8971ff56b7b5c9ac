"""S1: ``hijaxc.jit(f)`` returns what ``f`` returns eagerly and leaves every reachable Variable, Ref
and Module in the same state (values, structure, identity), checked by ``oracle.check_eager``.

Every case is a factory ``make()`` that builds fresh state (arguments, closure cells, module
globals), so the eager run and the compiled run never share an object.  Shared models and helpers
are in ``eager_models.py``.

This module: NNX Modules (Param, BatchNorm, Dropout, Rngs, Optimizer).
"""

import jax
import jax.numpy as jnp
import optax
from eager_models import X2, Block
from flax import nnx
from oracle import check_eager, opt_update, optimizer


# --------------------------------------------------------------------------------------------------
# NNX Modules: Param, BatchNorm, Dropout, Rngs, Optimizer
# --------------------------------------------------------------------------------------------------
def test_linear_manual_update():
    def f(m, x):
        y = m(x)
        m.kernel.value = m.kernel.value - 0.1 * jnp.outer(x.sum(0), y.sum(0))
        m.bias.value = m.bias.value + y.mean(0)
        return y

    check_eager(lambda: (f, (nnx.Linear(3, 2, rngs=nnx.Rngs(0)), jnp.ones((4, 3)))), calls=3)


def test_batchnorm_train_updates_stats():
    def f(bn, x):
        return bn(x)

    check_eager(
        lambda: (f, (nnx.BatchNorm(3, rngs=nnx.Rngs(0)), jnp.arange(12.0).reshape(4, 3) ** 1.5)),
        calls=3,
    )


def test_dropout_advances_rngs():
    def f(drop, x):
        return drop(x)

    check_eager(lambda: (f, (nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=3)), jnp.ones((8,)))), calls=3)


def test_rngs_draws():
    def f(rngs):
        return jax.random.normal(rngs.params(), (3,)) + jax.random.uniform(rngs.dropout(), (3,))

    check_eager(lambda: (f, (nnx.Rngs(params=0, dropout=1),)), calls=3)


def test_seed_block_forward():
    def f(model, x):
        return model(x)

    x = jnp.arange(10.0).reshape(5, 2) % 3
    check_eager(lambda: (f, (Block(2, 8, 3, rngs=nnx.Rngs(0)), x)), calls=3, atol=1e-5)


def test_eval_mode_switch_inside():
    def f(model, x):
        y_train = model(x)
        model.eval()
        return y_train, model(x)

    x = jnp.array([[0.0, 1.0], [2.0, -1.0], [0.5, 3.0]])
    check_eager(lambda: (f, (Block(2, 4, 2, rngs=nnx.Rngs(0)), x)), calls=2, atol=1e-5)


def test_optimizer_update_given_grads():
    def f(model, opt, grads):
        opt_update(opt, model, grads)
        return model.kernel.value.sum()

    def make():
        model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        opt = optimizer(model, optax.adam(1e-1))
        grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
        return f, (model, opt, grads)

    check_eager(make, calls=3)


def test_deep_copy_form_with_module():
    def f(m, x):
        m.bias.value = m.bias.value + x.sum()
        return m(x[None])

    check_eager(f, nnx.Linear(2, 2, rngs=nnx.Rngs(0)), X2, calls=2)

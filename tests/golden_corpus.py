"""Functions whose generated code is pinned by tests/golden/ (every seed function plus a few
mutation patterns).  Regenerate after an intended change with
``HIJAXC_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py`` and review the diff."""
import jax
import jax.numpy as jnp
from flax import nnx

import hijaxc

model = None
optimizer = None
counter = hijaxc.Variable(jnp.array(0))


# -- seed 000 ---------------------------------------------------------------------------------------
def train_step_closure(x, y):
    loss_fn = lambda m: jnp.mean((m(x) - y) ** 2)  # noqa: E731
    loss, grads = jax.value_and_grad(loss_fn)(hijaxc.vars_as(model, mutable=False))
    optimizer.update(model, grads)
    return loss


def inc(v):
    v[...] += 1


def inc_and_double(v):
    v['a'] += 1
    v['b'] *= 2


def linear(x, w, metrics: nnx.Variable):
    y = x @ w
    metrics['y_mean'] = jnp.mean(y)
    return y


def train_step(model, optimizer, x, y):
    graphdef, params, nondiff = nnx.split(model, nnx.Param, ...)

    def loss_fn(params):
        model = nnx.merge(graphdef, params, nondiff)
        return ((model(x) - y) ** 2).mean()

    loss, grads = jax.value_and_grad(loss_fn)(hijaxc.vars_as(params, mutable=False))
    optimizer.update(model, grads)
    return loss


def scan_over_layers(x, block_stack):
    def scan_fn(x, block):
        x = block(x)
        return x, None

    y, _ = jax.lax.scan(scan_fn, x, block_stack)
    return y


def create_model(rngs):
    return nnx.Linear(2, 3, rngs=rngs)


def f(a, b):
    ...


def g(has_shared):
    has_shared.a[...] = 5


def h(graphdef, state):
    has_shared = nnx.merge(graphdef, state)
    has_shared.a[...] = 5


# -- seed 001 ---------------------------------------------------------------------------------------
def increment(variable: nnx.Variable[jax.Array]):  # no return!
    new_value = variable + 1  # Array-like operations
    variable[...] = new_value  # in-place updates


def h_refs(graphdef, state):
    obj = nnx.merge(graphdef, state)
    obj.a[...] += 10


# -- mutation patterns ------------------------------------------------------------------------------
def global_counter_and_slices(v, x):
    global counter
    counter[...] += 1
    v[1:3] = x[:2] * 2
    v[0, ...] += v[-1]
    return counter[...]


def nested_control_flow(v, n):
    def body(i, acc):
        v[...] = jax.lax.cond(i % 2 == 0, lambda: v[...] + i, lambda: v[...] - 1)
        return acc + v[...]

    return jax.lax.fori_loop(0, n, body, 0.0)


NAMES = ["train_step_closure", "inc", "inc_and_double", "linear", "train_step",
         "scan_over_layers", "create_model", "f", "g", "h", "increment", "h_refs",
         "global_counter_and_slices", "nested_control_flow"]

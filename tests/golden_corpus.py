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


# -- seed 000 --------------------------------------------------------------------------------------
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


# -- seed 001 --------------------------------------------------------------------------------------
def increment(variable: nnx.Variable[jax.Array]):  # no return!
    new_value = variable + 1  # Array-like operations
    variable[...] = new_value  # in-place updates


def h_refs(graphdef, state):
    obj = nnx.merge(graphdef, state)
    obj.a[...] += 10


# -- mutation patterns -----------------------------------------------------------------------------
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


# -- converted callees (``hijaxc.api.converted_source``: called from compiled code) ----------------
class Counter(nnx.Module):
    def __init__(self):
        self.w = hijaxc.Variable(jnp.zeros(3))
        self.__scale = 2.0

    def bump(self, x):
        def body(i, c):
            self.w[...] += x * self.__scale
            return c + 1.0

        return jax.lax.fori_loop(0, 3, body, 0.0)


class Child(Counter):
    def bump(self, x):
        super().bump(x)
        return self.__helper(x)

    def __helper(self, x):
        return jax.lax.cond(x[0] > 0, lambda: self.w[...], lambda: -self.w[...])


def loss_with_stats(model, x):
    def loss(head):
        y = model.body(x)
        return jnp.sum((y * head) ** 2)

    return jax.value_and_grad(loss)(model.head[...])


def reads_global_state(x):
    counter[...] += 1
    return x * counter[...]


CALLEES = {"callee_counter_bump": Counter.bump, "callee_child_bump": Child.bump,
           "callee_child_helper": Child._Child__helper, "callee_loss_with_stats": loss_with_stats,
           "callee_reads_global_state": reads_global_state}


# -- no source: ``hijaxc.show`` of a function defined with ``exec`` (threaded through closure cells
# without rewriting) -------------------------------------------------------------------------------
def _exec_defined():
    namespace = {}
    exec("def make(v):\n"
         "    def step(x):\n"
         "        v[...] += x\n"
         "        return v[...]\n"
         "    return step\n", namespace)
    return namespace["make"](hijaxc.Variable(jnp.zeros(())))


FALLBACKS = {"fallback_exec_defined": _exec_defined()}


# -- more rewrites: a lambda, a closure callee (``foreign_cell``), global/nonlocal declarations ----
scaled_by_counter = lambda x: counter[...] * jax.numpy.sin(x)  # noqa: E731


def _make_closure_callee():
    stats = hijaxc.Variable(jnp.zeros(()))
    total = 0

    def accumulate(x):
        nonlocal total
        stats[...] += jnp.sum(x)
        return x + total

    return accumulate


def declarations(v):
    global counter, jnp  # jnp is not threaded: its declaration stays
    counter[...] = v[0]
    return jnp.sum(v)


NAMES += ["scaled_by_counter", "declarations"]
CALLEES["callee_closure_accumulate"] = _make_closure_callee()

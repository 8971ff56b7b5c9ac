"""Seed 001 (the "Array Refs (experimental)" notebook), every cell rewritten for hijaxc.

The notebook's cells use ``@jax.jit`` with flax's native hijax Variables; here every ``@jax.jit``
is ``@hijaxc.jit`` and the mode/conversion functions are hijaxc's own:

    nnx.Variable(..., is_hijax=True) -> hijaxc.Variable(...)      (``.is_hijax`` is ``.hijax``)
    nnx.use_hijax / to_hijax / to_lojax -> hijaxc.use_hijax / to_hijax / to_lojax
    nnx.find_duplicates        -> hijaxc.find_duplicates

Cells that fail or are marked TODO in the notebook (``.lower(...).as_text()``, scan over layers,
MutableArray outputs, aliasing whose updates are dropped) work with hijaxc.  Run it with
``python examples/seed_array_refs.py``; ``main()`` runs every cell and returns a dict of the key
results (used by tests/test_examples.py).
"""

import os
import sys

import jax
import jax.numpy as jnp
import optax
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _compat import (
    MODULES_ARE_PYTREES,
    Pytree,
    as_rngs,
    fork_rngs,
    make_optimizer,  # noqa: E402
    optimizer_update,
    read,
)

import hijaxc  # noqa: E402


def cell(title):
    print(f"\n# --- {title} " + "-" * max(0, 60 - len(title)))


class Linear(nnx.Module):
    def __init__(self, in_features, out_features, rngs: nnx.Rngs):
        self.kernel = nnx.Param(jax.random.normal(rngs(), (in_features, out_features)))
        self.bias = nnx.Param(jnp.zeros(out_features))

    def __call__(self, x):
        return x @ self.kernel + self.bias[None]


class Block(nnx.Module):
    def __init__(self, din, dmid, dout, rngs: nnx.Rngs):
        self.linear = Linear(din, dmid, rngs=rngs)
        self.bn = nnx.BatchNorm(dmid, rngs=rngs)
        self.dropout = nnx.Dropout(0.1, rngs=rngs)
        self.linear_out = Linear(dmid, dout, rngs=rngs)

    def __call__(self, x):
        x = nnx.gelu(self.dropout(self.bn(self.linear(x))))
        return self.linear_out(x)


class SharedVariables(Pytree):
    def __init__(self):
        self.a = hijaxc.Variable(jnp.array(0))
        self.b = hijaxc.Variable(jnp.array(1))
        self.c = self.a


class SharedModules(Pytree):
    def __init__(self):
        self.d = Linear(1, 1, rngs=nnx.Rngs(0))
        self.e = Linear(1, 1, rngs=nnx.Rngs(0))
        self.f = self.d


def get_error(f, *args):
    try:
        return f(*args)
    except Exception as e:
        return f"{type(e).__name__}: {e}"


# -------------------------------------------------------------------------------------------------
# Basics
# -------------------------------------------------------------------------------------------------
@hijaxc.jit
def increment(variable: nnx.Variable[jax.Array]):  # no return!
    new_value = variable + 1  # Array-like operations
    variable[...] = new_value  # in-place updates


def variable_refs():
    cell("Variables Refs: increment")
    variable = hijaxc.Variable(jnp.array([1, 2, 3]))
    print(f"{variable.hijax = }\n")

    before = variable[...].tolist()
    print("Before =", variable)
    increment(variable)
    print("After =", variable)  # noqa: E702
    after = variable[...].tolist()

    cell("increment.lower(variable).as_text() (a TODO in the notebook)")
    text = increment.lower(variable).as_text()
    print(text)
    return before, after, text


def use_hijax_flag():
    cell("use_hijax")
    hijaxc.use_hijax(True)
    variable = hijaxc.Variable(jnp.array([1, 2, 3]))
    print(f"{variable.hijax = }")
    return variable.hijax


def changing_status():
    cell("Changing status: to_hijax / to_lojax")
    with hijaxc.use_hijax(False):  # use lojax Variables
        model = Linear(1, 3, rngs=nnx.Rngs(0))

    hijax_model = hijaxc.to_hijax(model)  # convert to hijax Variables
    arrays_model = hijaxc.to_lojax(hijax_model)  # convert to lojax Variables

    print("hijaxc.to_hijax(model) =", hijax_model)
    print("hijaxc.to_lojax(hijax_model) =", arrays_model)
    return hijax_model.kernel.hijax, arrays_model.kernel.hijax


# -------------------------------------------------------------------------------------------------
# Examples
# -------------------------------------------------------------------------------------------------
@hijaxc.jit
def train_step(model, optimizer, x, y):
    graphdef, params, nondiff = nnx.split(model, nnx.Param, ...)

    def loss_fn(params):
        model = nnx.merge(graphdef, params, nondiff)
        return ((model(x) - y) ** 2).mean()

    loss, grads = jax.value_and_grad(loss_fn)(
        hijaxc.to_lojax(params)
    )  # lojax Variables for jax.grad
    optimizer_update(optimizer, model, grads)

    return loss


def training_loop(steps=5):
    cell("Training loop")
    # hijax Variables by default
    model = Block(2, 64, 3, rngs=nnx.Rngs(0))
    optimizer = make_optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    losses = []
    for _ in range(steps):
        loss = train_step(model, optimizer, x=jnp.ones((10, 2)), y=jnp.ones((10, 3)))
        print(repr(loss))
        losses.append(float(loss))
    return losses, model


def scan_fn(x, block):
    x = block(x)
    return x, None


@hijaxc.jit
def forward(x, block_stack):
    y, _ = jax.lax.scan(scan_fn, x, block_stack)
    return y


def scan_over_layers():
    cell("Scan over layers (fails in the notebook; works with hijaxc)")

    def create_block(rngs):
        rngs = as_rngs(rngs)  # flax 0.10: a raw key per layer (see _compat.fork_rngs)
        return hijaxc.to_lojax(Block(2, 64, 2, rngs=rngs))

    if MODULES_ARE_PYTREES:
        # the notebook's cell as written: a plain jax.vmap returns the stacked Block
        create_stack = jax.vmap(create_block)
    else:
        # FALLBACK (flax 0.10 only): Modules are not JAX pytrees there, so a plain jax.vmap cannot
        # return one; build the stack under hijaxc.jit, whose jax.vmap handles Modules.
        @hijaxc.jit
        def create_stack(rngs):
            return jax.vmap(create_block)(rngs)

    block_stack = hijaxc.to_hijax(create_stack(fork_rngs(nnx.Rngs(0), 8)))

    # Reference: a Python loop over the 8 layers, each sliced out of the stacked state *before*
    # the scan (training mode: BatchNorm uses batch statistics and updates its running averages,
    # Dropout draws from each layer's own Rngs stream -- the same draws in both paths).
    graphdef, state = nnx.split(block_stack)
    layers = [nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], state)) for i in range(8)]

    x = jax.random.uniform(jax.random.key(0), (3, 2))
    y = forward(x, block_stack)  # the scan runs under hijaxc.jit: every layer's state is threaded
    print("y = ", y)

    y_ref = x
    for layer in layers:
        y_ref = layer(y_ref)
    print("y (python loop) = ", y_ref)
    bn_mean = block_stack.bn.mean[...]
    bn_mean_ref = jnp.stack([layer.bn.mean[...] for layer in layers])
    print(
        "BatchNorm running means updated in all 8 layers:",
        bool(jnp.all(jnp.any(bn_mean != 0, axis=-1))),
    )
    return {
        "y": y,
        "y_ref": y_ref,
        "bn_mean": bn_mean,
        "bn_mean_ref": bn_mean_ref,
        "kernel_shape": tuple(block_stack.linear.kernel[...].shape),
    }


# -------------------------------------------------------------------------------------------------
# Limitations (of native hijax; hijaxc lifts them)
# -------------------------------------------------------------------------------------------------
@hijaxc.jit
def create_model(rngs):
    return Block(2, 64, 3, rngs=rngs)


def mutable_array_outputs():
    cell("MutableArray outputs (fail in the notebook; work with hijaxc)")
    try:
        model = create_model(nnx.Rngs(0))
    except Exception as e:
        print("Error:", e)
        raise
    print("model.linear =", model.linear)

    cell("MutableArray outputs: the notebook's lojax workaround (still works)")
    with hijaxc.use_hijax(False):  # <-- disable hijax Variables
        model_lojax = create_model(nnx.Rngs(0))

    model_lojax = hijaxc.to_hijax(model_lojax)  # convert to mutable after creation
    print("model.linear =", model_lojax.linear)
    return model, model_lojax


@hijaxc.jit
def f(a, b): ...


@hijaxc.jit
def g(pytree): ...


@hijaxc.jit
def h(graphdef, state):
    obj = nnx.merge(graphdef, state)
    obj.a[...] += 10


def aliasing():
    cell("Reference sharing: f(x, x)")
    x = hijaxc.Variable(jnp.array(0))
    f_result = get_error(f, x, x)
    print(f_result)

    cell("Reference sharing: SharedVariables / SharedModules")
    shared_variables = SharedVariables()
    shared_modules = SharedModules()

    g_vars = get_error(g, shared_variables)
    g_mods = get_error(g, shared_modules)
    print("SharedVariables", g_vars)
    print("SharedModules", g_mods)

    cell("Reference sharing: aliasing='error' (hijaxc's answer to the notebook's TODO)")
    g_strict = hijaxc.jit(g.__wrapped__, aliasing="error")
    strict = get_error(g_strict, shared_variables)
    print("SharedVariables", strict)

    cell("find_duplicates")
    dup_vars = hijaxc.find_duplicates(shared_variables)
    dup_mods = hijaxc.find_duplicates(shared_modules)
    if duplicates := dup_vars:
        print("shared variables duplicates:", duplicates)
    if duplicates := dup_mods:
        print("shared modules duplicates:  ", duplicates)

    cell("h(graphdef, state)")
    graphdef, state = nnx.split(shared_variables)
    print(state)  # split deduplicates the state

    h(graphdef, state)

    print("updated", shared_variables)
    return {
        "f": f_result,
        "g_vars": g_vars,
        "g_mods": g_mods,
        "strict": strict,
        "dup_vars": dup_vars,
        "dup_mods": dup_mods,
        "h_state_a": int(read(state["a"])),
        "h_ac": (int(shared_variables.a[...]), int(shared_variables.c[...])),
        "h_b": int(shared_variables.b[...]),
        "split_shares_variables": state["a"] is shared_variables.a,
    }


def main():
    current_mode = hijaxc.var_defaults().hijax
    try:
        r = {}
        r["inc_before"], r["inc_after"], r["inc_hlo"] = variable_refs()
        r["use_hijax"] = use_hijax_flag()
        r["to_hijax_flag"], r["to_lojax_flag"] = changing_status()
        r["losses"], r["model"] = training_loop()
        r["scan"] = scan_over_layers()
        r["created_model"], r["created_model_lojax"] = mutable_array_outputs()
        r["aliasing"] = aliasing()
        return r
    finally:
        hijaxc.var_defaults(hijax=current_mode)


if __name__ == "__main__":
    main()

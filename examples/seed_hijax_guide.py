"""Seed 000 (the Flax NNX "Hijax" guide), every cell rewritten for hijaxc.

The guide's cells use ``@jax.jit`` with flax's native hijax Variables; here every ``@jax.jit`` is
``@hijaxc.jit`` and the mode/conversion functions are hijaxc's own:

    nnx.var_defaults          -> hijaxc.var_defaults
    nnx.vars_as               -> hijaxc.vars_as
    nnx.Variable(..., hijax=True) -> hijaxc.Variable(...)
    nnx.find_duplicates       -> hijaxc.find_duplicates

The cells the guide marks as failing or TODO (scan over layers, mutable outputs, aliasing whose
updates are silently dropped) work with hijaxc.  Run it with
``python examples/seed_hijax_guide.py``; ``main()`` runs every cell and returns a dict of the key
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
    make_optimizer,
    normal,
    optimizer_update,
    set_eval,
    uniform,
)  # noqa: E402

import hijaxc  # noqa: E402


def cell(title):
    print(f"\n# --- {title} " + "-" * max(0, 60 - len(title)))


# -------------------------------------------------------------------------------------------------
# Modules used by several cells (the guide defines them in the "Mutability" / "Examples" cells)
# -------------------------------------------------------------------------------------------------
class Linear(nnx.Module):
    def __init__(self, in_features, out_features, rngs: nnx.Rngs):
        self.kernel = nnx.Param(normal(rngs, (in_features, out_features)))

    def __call__(self, x):
        return x @ self.kernel


class Block(nnx.Module):
    def __init__(self, din, dmid, dout, rngs: nnx.Rngs):
        self.linear = Linear(din, dmid, rngs=rngs)
        self.bn = nnx.BatchNorm(dmid, rngs=rngs)
        self.dropout = nnx.Dropout(0.1, rngs=rngs)
        self.linear_out = Linear(dmid, dout, rngs=rngs)

    def __call__(self, x):
        x = nnx.gelu(self.dropout(self.bn(self.linear(x))))
        return self.linear_out(x)


class HasShared(Pytree):
    def __init__(self):
        self.a = hijaxc.Variable(jnp.array(0))
        self.b = self.a


def get_error(f, *args):
    try:
        return f(*args)
    except Exception as e:
        return f"{type(e).__name__}: {e}"


# -------------------------------------------------------------------------------------------------
# Cells
# -------------------------------------------------------------------------------------------------
def first_train_step():
    """The guide's first cell: a train_step that closes over a global model and optimizer."""
    cell("train_step over a global model / optimizer")
    global model, optimizer
    hijaxc.var_defaults(hijax=True)

    rngs = nnx.Rngs(0)
    model = nnx.Linear(2, 3, rngs=rngs)
    optimizer = make_optimizer(model, optax.adamw(1e-2), wrt=nnx.Param)

    @hijaxc.jit
    def train_step(x, y):
        loss_fn = lambda m: jnp.mean((m(x) - y) ** 2)  # noqa: E731
        loss, grads = jax.value_and_grad(loss_fn)(hijaxc.vars_as(model, mutable=False))
        optimizer_update(optimizer, model, grads)
        return loss

    x, y = uniform(rngs, (4, 2)), uniform(rngs, (4, 3))
    losses = []
    for _ in range(3):
        loss = train_step(x, y)
        print(loss)
        losses.append(float(loss))
    return losses


@hijaxc.jit
def inc(v):
    v[...] += 1


def state_propagation():
    cell("Hijax Variable: state propagation")
    v = hijaxc.Variable(jnp.array(0))
    before = int(v[...])
    print(v[...])
    inc(v)
    print(v[...])  # noqa: E702
    after = int(v[...])

    cell("make_jaxpr(inc)")
    v2 = hijaxc.Variable(jnp.array(0))
    jaxpr = hijaxc.make_jaxpr(inc)(v2)
    print(jaxpr)
    return before, after, str(jaxpr)


@hijaxc.jit
def inc_and_double(v):
    v["a"] += 1
    v["b"] *= 2


def pytree_values():
    cell("Pytree values")
    v = hijaxc.Variable({"a": jnp.array(0), "b": jnp.array(2)})
    print(v)
    inc_and_double(v)
    print(v)  # noqa: E702
    return {k: int(x) for k, x in v[...].items()}


@hijaxc.jit
def linear(x, w, metrics: nnx.Variable):
    y = x @ w
    metrics["y_mean"] = jnp.mean(y)
    return y


def dynamic_state_structure():
    cell("Dynamic state structure")
    rngs = nnx.Rngs(0)
    x = uniform(rngs, (4, 5))
    w = normal(rngs, (5, 3))
    metrics = hijaxc.Variable({})

    print("Before:", metrics)
    y = linear(x, w, metrics)
    print("After:", metrics)
    return sorted(metrics[...]), float(metrics["y_mean"]), float(jnp.mean(y))


def default_mode():
    cell("Default Variable mode")
    # set default Variable mode for the rest of the guide
    hijaxc.var_defaults(hijax=True)
    variable = hijaxc.Variable(jnp.array([1, 2, 3]))
    print(variable)
    return variable.hijax


def mutability():
    cell("Mutability: vars_as(model, mutable=...)")
    model = Linear(1, 3, rngs=nnx.Rngs(0))
    print(f"{hijaxc.vars_as(model, mutable=False) = !s}")
    print(f"{hijaxc.vars_as(model, mutable=True) = !s}")

    cell("Mutability: writing an immutable Variable")
    v = hijaxc.Variable(jnp.array(0))
    v_immut = hijaxc.vars_as(v, mutable=False)
    assert not v_immut.mutable

    error = None
    try:
        v_immut[...] += 1  # raises an error
    except Exception as e:
        error = e
        print(f"{type(e).__name__}: {e}")
    return error, int(v_immut[...])


def ref_support():
    cell("Ref support")
    v = hijaxc.Variable(jnp.array(0))
    v_ref = hijaxc.vars_as(v, ref=True)
    assert v_ref.ref
    print(v_ref)
    print(v_ref.get_raw_value())
    raw = v_ref.get_raw_value()

    cell("Ref support: mutable=False drops the Ref, mutable=True brings it back")
    v_immut = hijaxc.vars_as(v_ref, mutable=False)
    assert not v_immut.ref
    print("immutable =", v_immut)

    v_ref = hijaxc.vars_as(v_immut, mutable=True)
    assert v_ref.ref
    print("mutable =", v_ref)
    return {
        "raw_is_ref": isinstance(raw, hijaxc.Ref),
        "immutable_ref": v_immut.ref,
        "mutable_ref": v_ref.ref,
    }


@hijaxc.jit
def train_step(model, optimizer, x, y):
    graphdef, params, nondiff = nnx.split(model, nnx.Param, ...)

    def loss_fn(params):
        model = nnx.merge(graphdef, params, nondiff)
        return ((model(x) - y) ** 2).mean()

    loss, grads = jax.value_and_grad(loss_fn)(
        hijaxc.vars_as(params, mutable=False)
    )  # immutable for jax.grad
    optimizer_update(optimizer, model, grads)

    return loss


def training_loop(steps=3):
    cell("Examples: training loop")
    # hijax Variables by default
    model = Block(2, 64, 3, rngs=nnx.Rngs(0))
    optimizer = make_optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    losses = []
    for _ in range(steps):
        loss = train_step(model, optimizer, x=jnp.ones((10, 2)), y=jnp.ones((10, 3)))
        print(f"{loss = !s}")
        losses.append(float(loss))
    return losses, model


def scan_over_layers():
    cell("Scan Over Layers (a TODO in the guide; works with hijaxc)")

    def create_block(rngs):
        rngs = as_rngs(rngs)  # flax 0.10: a raw key per layer (see _compat.fork_rngs)
        return hijaxc.vars_as(Block(2, 64, 2, rngs=rngs), mutable=False)

    if MODULES_ARE_PYTREES:
        # the guide's cell as written: a plain jax.vmap returns the stacked Block
        create_stack = jax.vmap(create_block)
    else:
        # FALLBACK (flax 0.10 only): Modules are not JAX pytrees there, so a plain jax.vmap cannot
        # return one; build the stack under hijaxc.jit, whose jax.vmap handles Modules.
        @hijaxc.jit
        def create_stack(rngs):
            return jax.vmap(create_block)(rngs)

    block_stack = hijaxc.vars_as(create_stack(fork_rngs(nnx.Rngs(0), 8)), mutable=True)
    # BatchNorm in training mode normalises with batch statistics and Dropout draws from its
    # Rngs; inference mode makes the scan and the Python-loop reference deterministic.
    set_eval(block_stack)

    def scan_fn(x, block):
        x = block(x)
        return x, None

    @hijaxc.jit
    def forward(x, block_stack):
        y, _ = jax.lax.scan(scan_fn, x, block_stack)
        return y

    x = jax.random.uniform(jax.random.key(0), (3, 2))
    y = forward(x, block_stack)
    print("y = ", y)

    # reference: a Python loop over the 8 layers, each layer sliced out of the stacked state
    graphdef, state = nnx.split(block_stack)
    y_ref = x
    for i in range(8):
        layer = nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], state))
        y_ref = layer(y_ref)
    print("y (python loop) = ", y_ref)
    kernel_shape = tuple(block_stack.linear.kernel[...].shape)
    return y, y_ref, kernel_shape


@hijaxc.jit
def create_model(rngs):
    return Block(2, 64, 3, rngs=rngs)


def mutable_outputs():
    cell("Mutable outputs (fails natively; works with hijaxc)")
    try:
        model = create_model(nnx.Rngs(0))
    except Exception as e:
        print("Error:", e)
        raise
    print("model.linear =", model.linear)
    return model


@hijaxc.jit
def create_model_lojax(rngs):
    return hijaxc.vars_as((Block(2, 64, 3, rngs=rngs)), hijax=False)


def mutable_outputs_lojax():
    cell("Mutable outputs: the guide's lojax workaround (still works)")
    model = hijaxc.vars_as(create_model_lojax(nnx.Rngs(0)), hijax=True)
    print("model.linear =", model.linear)
    return model


@hijaxc.jit
def f(a, b): ...


@hijaxc.jit
def g(has_shared):
    has_shared.a[...] = 5


@hijaxc.jit
def h(graphdef, state):
    has_shared = nnx.merge(graphdef, state)
    has_shared.a[...] = 5


def aliasing():
    cell("Reference sharing: f(x, x)")
    x = hijaxc.Variable(jnp.array(0))
    f_result = get_error(f, x, x)
    print(f_result)

    cell("Reference sharing: HasShared (updates propagate through both paths)")
    has_shared = HasShared()
    g_result = get_error(g, has_shared)
    print(g_result)
    print(has_shared)
    g_ab = (int(has_shared.a[...]), int(has_shared.b[...]), has_shared.a is has_shared.b)

    cell("find_duplicates")
    print("Duplicates found:")
    duplicates = hijaxc.find_duplicates(has_shared)
    if all_duplicates := duplicates:
        for dups in all_duplicates:
            print("-", dups)

    cell("h(graphdef, state)")
    has_shared2 = HasShared()
    graphdef, state = nnx.split(has_shared2)
    # flax 0.11+: the state holds has_shared2's own Variables, so the write shows there (as it
    # would eagerly); flax 0.10's split copies them into VariableStates, so it does not.
    split_shares_variables = state["a"] is has_shared2.a
    h(graphdef, state)
    print(has_shared2)
    h_ab = (int(has_shared2.a[...]), int(has_shared2.b[...]))
    return {
        "f": f_result,
        "g": g_result,
        "g_ab": g_ab,
        "duplicates": duplicates,
        "h_ab": h_ab,
        "split_shares_variables": split_shares_variables,
    }


def main():
    current_mode = hijaxc.var_defaults().hijax  # restored at the end, like the guide's last cell
    try:
        results = {}
        results["first_losses"] = first_train_step()
        results["inc_before"], results["inc_after"], results["inc_jaxpr"] = state_propagation()
        results["inc_and_double"] = pytree_values()
        results["metrics_keys"], results["metrics_y_mean"], results["y_mean"] = (
            dynamic_state_structure()
        )
        results["default_hijax"] = default_mode()
        results["immutable_error"], results["immutable_value"] = mutability()
        results["ref"] = ref_support()
        results["losses"], results["model"] = training_loop()
        results["scan_y"], results["scan_y_ref"], results["scan_kernel_shape"] = scan_over_layers()
        results["created_model"] = mutable_outputs()
        results["created_model_lojax"] = mutable_outputs_lojax()
        results["aliasing"] = aliasing()
        return results
    finally:
        # clean up
        hijaxc.var_defaults(hijax=current_mode)


if __name__ == "__main__":
    main()

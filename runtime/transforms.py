"""State-threading versions of JAX control flow and transforms (S7).

The compiler redirects ``jax.lax.scan`` & co. here, however they were imported: ``KNOWN`` maps the
JAX function's identity to the name of its counterpart below (``@counterpart`` fills it and
``__all__``, which generated code reaches as ``__hx.scan`` ...).  Each counterpart threads the
values of the Variables and Refs its function reaches (capture.py) through the carry / branch
outputs / aux:

    counter[...] += 1 inside a fori_loop body     -> counter's value rides in the carry, and is
                                                     written back on ``counter`` after the loop
    BatchNorm statistics updated inside a loss     -> returned as aux of the grad, written back
    a stack of layers as ``xs`` of a scan          -> sliced per iteration, updates stacked back

While the JAX transform traces the function, those objects temporarily hold the inner tracers (and
a trace-state owned by the inner trace, so Flax accepts the writes); afterwards they are restored
and then updated with the transform's outputs.  Structural changes (a new attribute, a new
Variable) inside a control-flow body are not representable in a carry: they raise a clear error.

To add a counterpart: write it here with ``@counterpart(jax.the_function)``; the compiler then
redirects calls to ``jax.the_function`` to it.
"""
import functools

import jax
import numpy as np

from . import _adapter, variables
from .callees import convert
from .capture import (
    KeptObjects,
    Operand,
    after_args,
    build_args,
    capture,
    learning,
    split_args,
    watched,
)
from .errors import HijaxcError
from .reach import holds_state

__all__ = ["remat"]
#: id(JAX function) -> name of its counterpart here
KNOWN = {}


def counterpart(*jax_functions):
    """Register the decorated function as the counterpart of ``jax_functions``."""
    def register(fn):
        for f in jax_functions:
            if f is not None:
                KNOWN[id(f)] = fn.__name__
        __all__.append(fn.__name__)
        return fn

    return register


def _where(fn):
    code = getattr(fn, "__code__", None)
    return f"{code.co_filename}:{code.co_firstlineno}" if code else repr(fn)


# --- loops ----------------------------------------------------------------------------------------
def _reject_stateful_carry(name, init):
    if holds_state(init):
        raise HijaxcError(
            f"{name}: the loop carry holds Variables/Modules; hijaxc threads state that the loop "
            "body reaches by closure (or, for scan, through xs), not through the carry. Close over "
            "the objects in the body and keep only arrays in the carry.")


@counterpart(jax.lax.fori_loop)
def fori_loop(lower, upper, body_fun, init_val, **kwargs):
    _reject_stateful_carry("fori_loop", init_val)
    body_fun = convert(body_fun)

    def run(cap):
        if not cap.slots:
            return jax.lax.fori_loop(lower, upper, watched(cap, body_fun), init_val, **kwargs)

        def body(i, carry):
            val, st = carry
            with cap.inside(st):
                val = body_fun(i, val)
                st = cap.read()
            return val, st

        val, st = jax.lax.fori_loop(lower, upper, body, (init_val, cap.read()), **kwargs)
        cap.write(st)
        return val

    return learning(run, body_fun)


@counterpart(jax.lax.while_loop)
def while_loop(cond_fun, body_fun, init_val):
    _reject_stateful_carry("while_loop", init_val)
    cond_fun, body_fun = convert(cond_fun), convert(body_fun)

    def run(cap):
        if not cap.slots:
            return jax.lax.while_loop(watched(cap, cond_fun), watched(cap, body_fun), init_val)

        def cond(carry):
            val, st = carry
            with cap.inside(st):
                return cond_fun(val)

        def body(carry):
            val, st = carry
            with cap.inside(st):
                val = body_fun(val)
                st = cap.read()
            return val, st

        val, st = jax.lax.while_loop(cond, body, (init_val, cap.read()))
        cap.write(st)
        return val

    return learning(run, cond_fun, body_fun)


@counterpart(jax.lax.scan)
def scan(f, init, xs=None, length=None, reverse=False, unroll=1, **kwargs):
    _reject_stateful_carry("scan", init)
    f = convert(f)
    graph_xs = xs is not None and holds_state(xs, pytrees=False)

    def run(cap):
        if not cap.slots and not graph_xs:
            return jax.lax.scan(watched(cap, f), init, xs, length=length, reverse=reverse,
                                unroll=unroll, **kwargs)
        xop = Operand(xs) if graph_xs else None
        xs_in = xop.leaves if graph_xs else xs

        def body(carry, x):
            c, st = carry
            with cap.inside(st):
                if graph_xs:
                    x_obj = xop.build(x)
                    c, y = f(c, x_obj)
                    x_new = xop.state_leaves_after()
                else:
                    c, y = f(c, x)
                    x_new = None
                st = cap.read()
            out = (c, y)
            if KeptObjects().mark(out, cap, (xop,)) is not out:
                raise HijaxcError(
                    f"{_where(f)}: a scan body returned (in its carry or ys) a Variable/Module it "
                    "updates by closure or through xs; scan stacks values, not objects.  Return "
                    "its value (v[...]) instead.")
            return (c, st), (y, x_new)

        (c, st), (ys, xs_new) = jax.lax.scan(body, (init, cap.read()), xs_in, length=length,
                                             reverse=reverse, unroll=unroll, **kwargs)
        cap.write(st)
        if graph_xs:
            xop.write_back(xs_new)
        return c, ys

    return learning(run, f)


# --- branches -------------------------------------------------------------------------------------
def _stateful_operands(operands):
    return any(holds_state(o) for o in operands)


def _branches(lax_fn, first, fns, operands, kwargs):
    """cond/switch: ``lax_fn(first, branches, *operands)`` with captured state threaded.
    Operands that hold Variables/Modules are passed to the branches as the same objects (by
    closure), their values threaded like captured state: a write through them is kept."""
    by_ref = _stateful_operands(operands)
    fns = [convert(b) for b in fns]

    def run(cap):
        if not cap.slots:
            return lax_fn(first, [watched(cap, b) for b in fns], *operands, **kwargs)

        kept = KeptObjects()

        def branch(fn):
            def run_branch(st, *ops):
                with cap.inside(st):
                    out = fn(*(operands if by_ref else ops))
                    return kept.mark(out, cap), cap.read()
            return run_branch

        ops = () if by_ref else operands
        out, st = lax_fn(first, [branch(b) for b in fns], cap.read(), *ops, **kwargs)
        cap.write(st)
        return kept.unmark(out)

    return learning(run, *fns, operands=operands if by_ref else ())


@counterpart(jax.lax.cond)
def cond(pred, true_fun, false_fun, *operands, **kwargs):
    return _branches(lambda p, fs, *ops, **kw: jax.lax.cond(p, fs[0], fs[1], *ops, **kw), pred,
                     [true_fun, false_fun], operands, kwargs)


@counterpart(jax.lax.switch)
def switch(index, branches, *operands, **kwargs):
    return _branches(jax.lax.switch, index, list(branches), operands, kwargs)


# --- learning what a body reaches while it is traced ----------------------------------------------
def _wrap_transform(transform, fun, *t_args, **t_kwargs):
    """``transform(fun)`` with captured state and graph-node arguments threaded."""

    @functools.wraps(fun)
    def wrapped(*args, **kwargs):
        fun_ = convert(fun)
        return learning(lambda cap: attempt(cap, fun_, args, kwargs), fun_)

    def attempt(cap, fun_, args, kwargs):
        ops, flat = split_args(args)
        if not cap.slots and not any(o is not None for o in ops):
            return transform(watched(cap, fun_), *t_args, **t_kwargs)(*args, **kwargs)

        kept = KeptObjects()

        def inner(st, *flat_args, **kw):
            with cap.inside(st):
                out = fun_(*build_args(ops, flat_args), **kw)
                return kept.mark(out, cap, ops), (cap.read(), after_args(ops, flat_args))

        out, (st, arg_states) = transform(inner, *t_args, **t_kwargs)(cap.read(), *flat, **kwargs)
        cap.write(st)
        for o, leaves in zip(ops, arg_states):
            if o is not None:
                o.write_back(leaves)
        return kept.unmark(out)

    return wrapped


@counterpart(jax.checkpoint, getattr(jax, "remat", None))
def checkpoint(fun=None, **kwargs):
    if fun is None:
        return functools.partial(checkpoint, **kwargs)
    return _wrap_transform(jax.checkpoint, fun, **kwargs)


remat = checkpoint


@counterpart(jax.jit)
def jit(fun=None, **kwargs):
    """``jax.jit`` inside a compiled function: the inner function's state is threaded too."""
    if fun is None:
        return functools.partial(jit, **kwargs)
    kwargs.pop("donate_argnums", None)  # nested inside a trace: donation does not apply
    kwargs.pop("donate_argnames", None)
    return _wrap_transform(jax.jit, fun, **kwargs)


def _argnums_tuple(argnums):
    return (argnums,) if isinstance(argnums, int) else tuple(argnums)


def _inexact(x):
    return hasattr(x, "dtype") and jax.numpy.issubdtype(x.dtype, jax.numpy.inexact)


@counterpart(jax.value_and_grad)
def value_and_grad(fun, argnums=0, has_aux=False, **kwargs):
    """``jax.value_and_grad`` whose function may mutate captured state (primal values written back)
    and take Modules / Variables as differentiated arguments: gradients come back in the same
    structure (a Module / Variable holding gradients, as flax does); integer state in them (RNG
    counters) gets ``float0`` zeros, as ``jax.grad(allow_int=True)`` would give."""
    argnums_t = _argnums_tuple(argnums)

    @functools.wraps(fun)
    def wrapped(*args, **kw):
        fun_ = convert(fun)
        # stateful arguments that are not differentiated are passed by reference, their values
        # threaded like captured state: one object with the aliases the loss captures (S4)
        by_ref = {i for i, a in enumerate(args)
                  if i not in argnums_t and holds_state(a, pytrees=False)}
        return learning(lambda cap: attempt(cap, fun_, args, kw, by_ref), fun_,
                         operands=[args[i] for i in sorted(by_ref)])

    def attempt(cap, fun_, args, kw, by_ref):
        ops, flat = split_args([None if i in by_ref else a for i, a in enumerate(args)])
        # differentiated leaves: whole plain arguments, or the inexact leaves of graph arguments
        masks = {i: [_inexact(x) for x in flat[i]] for i in argnums_t if ops[i] is not None}
        diffs = tuple([x for x, m in zip(flat[i], masks[i]) if m] if i in masks else flat[i]
                      for i in argnums_t)
        rest = [[None if m else x for x, m in zip(f, masks[i])] if i in masks else
                (None if i in argnums_t else f) for i, f in enumerate(flat)]

        def assemble(diffs_, rest_):
            full = list(rest_)
            for j, i in enumerate(argnums_t):
                if i in masks:
                    it = iter(diffs_[j])
                    full[i] = [next(it) if m else x for x, m in zip(rest_[i], masks[i])]
                else:
                    full[i] = diffs_[j]
            return full

        kept = KeptObjects()

        def inner(diffs_, st, rest_):
            full = assemble(diffs_, rest_)
            for i in by_ref:
                full[i] = args[i]
            with cap.inside(st):
                out = fun_(*build_args(ops, full), **kw)
                after = (cap.read(), after_args(ops, full))
            if has_aux:
                value, aux = out
                return value, (kept.mark(aux, cap, ops), after)
            return out, after

        vg = jax.value_and_grad(inner, argnums=0, has_aux=True, **kwargs)
        (value, aux_after), dgrads = vg(diffs, cap.read(), rest)
        if has_aux:
            aux, (st, arg_states) = aux_after
        else:
            aux, (st, arg_states) = None, aux_after
        cap.write(st)
        for i, (o, leaves) in enumerate(zip(ops, arg_states)):
            if o is not None and i not in argnums_t:
                o.write_back(leaves)
        aux = kept.unmark(aux)
        grads = []
        for j, i in enumerate(argnums_t):
            if i in masks:
                it = iter(dgrads[j])
                leaves = [next(it) if m else np.zeros(np.shape(x), jax.dtypes.float0)
                          for x, m in zip(flat[i], masks[i])]
                grads.append(_fresh_copy(ops[i], leaves))
            else:
                grads.append(dgrads[j])
        grads = grads[0] if isinstance(argnums, int) else tuple(grads)
        return ((value, aux), grads) if has_aux else (value, grads)

    return wrapped


def _fresh_copy(op, leaves):
    """The operand's structure rebuilt around ``leaves`` (gradients), Variables made mutable."""
    out = op.build(leaves)
    for o in op.merged.objects:
        if isinstance(o, variables.Variable):
            h, r, _ = _adapter.get_metadata(o)[variables.FLAGS]
            _adapter.get_metadata(o)[variables.FLAGS] = (h, False, True)
    return out


@counterpart(jax.grad)
def grad(fun, argnums=0, has_aux=False, **kwargs):
    vg = value_and_grad(fun, argnums=argnums, has_aux=has_aux, **kwargs)

    @functools.wraps(fun)
    def wrapped(*args, **kw):
        out, g = vg(*args, **kw)
        return (g, out[1]) if has_aux else g

    return wrapped


@counterpart(jax.vmap)
def vmap(fun=None, in_axes=0, out_axes=0, **kwargs):
    """``jax.vmap`` over functions that take or return Modules / Variables (e.g. building a stack
    of layers: ``vmap(lambda rngs: Block(..., rngs=rngs))``).  Captured state is read-only inside
    (a write to it would need one value per batch element): it raises a clear error."""
    if fun is None:
        return functools.partial(vmap, in_axes=in_axes, out_axes=out_axes, **kwargs)

    @functools.wraps(fun)
    def wrapped(*args):
        fun_ = convert(fun)
        ops, flat = split_args(args)
        cap = capture(fun_)
        out_box = {}
        kept = KeptObjects()

        def inner(*flat_args):
            if cap.slots:
                before = cap.read()
            out = fun_(*build_args(ops, flat_args))
            if cap.slots and any(a is not b for a, b in zip(cap.read(), before)):
                raise HijaxcError(f"{_where(fun)}: a function under vmap wrote to captured state; "
                                  "pass the state as a vmapped argument instead")
            osplit = Operand(kept.mark(out, cap, ops))
            out_box["op"] = osplit
            return osplit.leaves, after_args(ops, flat_args)

        axes = tuple(in_axes) if isinstance(in_axes, list) else in_axes
        leaves, arg_states = jax.vmap(inner, in_axes=axes, out_axes=out_axes, **kwargs)(*flat)
        for o, st in zip(ops, arg_states):
            if o is not None:
                o.write_back(st)
        return kept.unmark(out_box["op"].build(leaves))

    return wrapped

"""State-threading versions of JAX control flow and transforms (S7).

The compiler redirects ``jax.lax.scan`` & co. here (``KNOWN`` maps the JAX function's identity to
the name of its counterpart below), however they were imported.  Each counterpart finds the
Variables and Refs the function argument can reach — through its closure cells (recursively into
nested functions), the globals its code names, bound ``self``, ``functools.partial`` arguments and
its graph-node operands — and threads their values through the carry / branch outputs / aux:

    counter[...] += 1 inside a fori_loop body     -> counter's value rides in the carry, and is
                                                     written back on ``counter`` after the loop
    BatchNorm statistics updated inside a loss     -> returned as aux of the grad, written back
    a stack of layers as ``xs`` of a scan          -> sliced per iteration, updates stacked back

While the JAX transform traces the function, those objects temporarily hold the inner tracers (and
a trace-state owned by the inner trace, so Flax accepts the writes); afterwards they are restored
and then updated with the transform's outputs.  Structural changes (a new attribute, a new
Variable) inside a control-flow body are not representable in a carry: they raise a clear error.
"""
import contextlib
import functools
import types

import jax
import numpy as np

from . import _adapter, context, state, variables
from . import callees as _callees
from .callees import convert as _convert
from .context import view as _view
from .errors import HijaxcError
from .variables import Ref

__all__ = ["scan", "fori_loop", "while_loop", "cond", "switch", "vmap", "grad", "value_and_grad",
           "checkpoint", "remat", "jit", "hijaxc_jit_inner"]

KNOWN = {}

_get_raw, _set_raw = _adapter.get_raw, _adapter.set_raw
_trace_slot = _adapter.FlaxVariable.__dict__["_trace_state"]


# --- what a function can reach --------------------------------------------------------------------
def _code_names(code, out):
    out.update(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            _code_names(c, out)


def reachable(fn, seen=None):
    """Stateful roots reachable from ``fn`` (closure cells, globals named by its code, ``self`` of
    a bound method, ``partial`` arguments, a callable graph node), following nested functions."""
    seen = set() if seen is None else seen
    out = []
    if id(fn) in seen:
        return out
    seen.add(id(fn))
    if isinstance(fn, functools.partial):
        out.extend(_view(a, None) for a in list(fn.args) + list(fn.keywords.values())
                   if _holds_state(a))
        out.extend(reachable(fn.func, seen))
        return out
    if isinstance(fn, types.MethodType):
        if _holds_state(fn.__self__):
            out.append(_view(fn.__self__, None))
        return out + reachable(fn.__func__, seen)
    if state._is_stateful(fn):
        return [_view(fn, None)]
    if hasattr(fn, "__wrapped__") and not isinstance(fn, types.FunctionType):
        return reachable(fn.__wrapped__, seen)
    if not isinstance(fn, types.FunctionType):
        return out
    for cell in fn.__closure__ or ():
        try:
            v = cell.cell_contents
        except ValueError:
            continue
        if isinstance(v, (types.FunctionType, functools.partial, types.MethodType)):
            out.extend(reachable(v, seen))
        elif _holds_state(v):
            out.append(_view(v, ("c", cell)))
    names = set()
    _code_names(fn.__code__, names)
    g = fn.__globals__
    for n in names:
        v = g.get(n)
        if v is None or isinstance(v, (types.ModuleType, type)):
            continue
        if isinstance(v, types.FunctionType) and (v.__module__ == fn.__module__
                                                  or _callees.is_user_code(v.__code__)):
            out.extend(reachable(v, seen))
        elif _holds_state(v):
            out.append(_view(v, ("g", g, n)))
    return out


def _holds_state(x, depth=0):
    if state._is_stateful(x):
        return True
    if depth < 3 and isinstance(x, (list, tuple)):
        return any(_holds_state(y, depth + 1) for y in x)
    if depth < 3 and isinstance(x, dict):
        return any(_holds_state(y, depth + 1) for y in x.values())
    if depth < 3 and type(x).__name__ == "State":
        try:
            return any(_holds_state(y, depth + 1) for y in jax.tree.leaves(
                x, is_leaf=lambda z: isinstance(z, _adapter.FlaxVariable)))
        except Exception:
            return False
    return False


def _holds_caller_state(x, ctx, outer=(), depth=0):
    """Whether ``x`` holds state of the caller of the step ``ctx`` describes: a Variable / Ref (or
    a Module / container holding one) that is neither a copy owned by that trace nor created in
    it, and that holds concrete values or is a copy owned by an enclosing step's trace (``outer``
    contexts).  What ``context.view`` must make the step thread."""
    k = id(x)
    if depth > 6 or k in ctx.fresh or k in ctx.created:
        return False
    if isinstance(x, (Ref, _adapter.FlaxVariable)):
        if any(k in o.fresh for o in outer):
            return True
        raw = x._value if isinstance(x, Ref) else _get_raw(x)
        return not any(_adapter.is_tracer(y) for y in jax.tree.leaves(raw))
    if _adapter.is_graph_node(x):
        if any(k in o.fresh for o in outer):
            return True
        return any(_holds_caller_state(y, ctx, outer, depth + 1)
                   for y in _adapter.node_items(x).values())
    if isinstance(x, (list, tuple)):
        return any(_holds_caller_state(y, ctx, outer, depth + 1) for y in x)
    if isinstance(x, dict):
        return any(_holds_caller_state(y, ctx, outer, depth + 1) for y in x.values())
    if type(x).__name__ == "State":
        try:
            leaves = jax.tree.leaves(x, is_leaf=lambda z: isinstance(z, _adapter.FlaxVariable))
        except Exception:
            return False
        return any(_holds_caller_state(y, ctx, outer, depth + 1) for y in leaves)
    return False


# --- threading the values of captured objects -----------------------------------------------------
class Captured:
    """The Variables/Refs reachable from some roots, with their values as a flat list."""

    def __init__(self, roots):
        s = state.split(list(roots), [f"captured{i}" for i in range(len(roots))])
        self.split = s
        self._ids = None
        self.slots = []  # (object, is_ref)
        self.nodes = []
        for k, spec in enumerate(s.objects_spec):
            o = s.objects[k]
            if spec[0] == "var" and spec[4][0] == "leaf":
                self.slots.append((o, False))
            elif spec[0] == "ref":
                self.slots.append((o, True))
            elif spec[0] == "node":
                self.nodes.append(o)
            if spec[0] == "var" and not isinstance(o, variables.Variable):
                self.nodes.append(o)  # flax Variables carry a trace state too

    def read(self):
        return [o._value if is_ref else _get_raw(o) for o, is_ref in self.slots]

    def write(self, values):
        for (o, is_ref), v in zip(self.slots, values):
            if is_ref:
                o._value = v
            else:
                _set_raw(o, v)

    @contextlib.contextmanager
    def inside(self, values):
        """Objects hold ``values`` (inner tracers) and belong to the current trace while inside."""
        saved = self.read()
        saved_states = [self._swap_state(o) for o in self.nodes]
        self.write(values)
        try:
            with self.watch():
                yield self
        finally:
            self.write(saved)
            for o, st in zip(self.nodes, saved_states):
                self._restore_state(o, st)

    def watch(self):
        """While the body runs: state it reads that this capture lacks is reported
        (``context.view`` raises ``Uncaptured``; ``_learning`` adds it and traces again)."""
        return context.watching(self)

    def holds(self, obj):
        ids = self._ids
        if ids is None:
            ids = self._ids = {id(o) for o in self.split.objects}
        return id(obj) in ids

    @staticmethod
    def _swap_state(o):
        if isinstance(o, _adapter.FlaxVariable):
            old = _trace_slot.__get__(o)
            if _adapter.TraceState is not None:
                _trace_slot.__set__(o, _adapter.TraceState())
            return old
        d = _adapter.node_items(o)
        for key in _adapter.NODE_STATE_KEYS:
            if key in d:
                old = d[key]
                d[key] = _adapter.fresh_node_state(old)
                return (key, old)
        return None

    @staticmethod
    def _restore_state(o, st):
        if st is None:
            return
        if isinstance(o, _adapter.FlaxVariable):
            _trace_slot.__set__(o, st)
        else:
            _adapter.node_items(o)[st[0]] = st[1]

    def check_structure(self, where):
        after = state.split([r for r in self._roots()], [f"captured{i}" for i in range(len(self._roots()))])
        if after.key != self.split.key:
            raise HijaxcError(
                f"{where}: the function changed the structure of captured state (a new attribute, "
                "a new Variable or a replaced object); inside control flow only values can change. "
                "Create the objects before the loop/branch.")

    def _roots(self):
        return [self.split.objects[0]] if False else _roots_of(self.split)


def _roots_of(s):
    out = []
    for spec in s.root_specs:
        out.append(state.merge.__globals__["_rebuild_plain"](spec, s.leaves) if spec[0] != "obj"
                   else s.objects[spec[1]])
    return out


def _capture(*fns, operands=(), extra=()):
    roots = []
    seen = set()
    for f in fns:
        for r in reachable(f, seen):
            roots.append(r)
    for o in operands:
        if _holds_state(o):
            roots.append(o)
    roots.extend(extra)
    return Captured(roots)


# --- captured objects in a transform's outputs (S5) ------------------------------------------------
class _Kept:
    """Stands, inside a transform's output, for an object the transform threads (captured, or an
    operand); it has no leaves, so JAX carries it as structure and it is swapped back after."""

    __slots__ = ("index",)

    def __init__(self, index):
        self.index = index

    def __eq__(self, other):
        return isinstance(other, _Kept) and other.index == self.index

    def __hash__(self):
        return hash(("hijaxc.kept", self.index))


jax.tree_util.register_pytree_node(_Kept, lambda k: ((), k.index), lambda i, _: _Kept(i))


class KeptObjects:
    """Returning a captured Variable (or Module, Ref, container) from a transform's function gives
    the caller's own object, updated, as eagerly — not a copy JAX rebuilt from its leaves."""

    def __init__(self):
        self.targets = []
        self._index = {}

    def mark(self, tree, cap, ops=()):
        """Inside the transform: ``tree`` with every object ``cap`` or ``ops`` thread replaced."""
        table = {id(o): o for o in cap.split.objects}
        for op in ops:
            if op is not None and hasattr(op, "merged"):
                table.update((id(f), o) for f, o in zip(op.merged.objects, op.s.objects))
        hit = lambda x: id(x) in table  # noqa: E731
        if not any(map(hit, jax.tree_util.tree_leaves(tree, is_leaf=hit))):
            return tree
        return jax.tree_util.tree_map(lambda x: self._kept(table[id(x)]) if hit(x) else x,
                                      tree, is_leaf=hit)

    def _kept(self, obj):
        i = self._index.get(id(obj))
        if i is None:
            i = self._index[id(obj)] = len(self.targets)
            self.targets.append(obj)
        return _Kept(i)

    def unmark(self, tree):
        if not self.targets:
            return tree
        is_kept = lambda x: isinstance(x, _Kept)  # noqa: E731
        return jax.tree_util.tree_map(lambda x: self.targets[x.index] if is_kept(x) else x, tree,
                                      is_leaf=is_kept)


# --- graph-node operands (a stack of layers as xs, Modules as vmap/grad arguments) ---------------
class Operand:
    """An operand that may contain graph nodes / flax Variables that are not JAX pytrees here:
    carried as (static spec, flat leaves) and rebuilt as fresh objects inside."""

    def __init__(self, tree):
        self.s = state.split([tree], ["x"], array_args=True)

    @property
    def leaves(self):
        return list(self.s.leaves)

    def build(self, leaves):
        m = state.merge(self.s.root_specs, self.s.objects_spec, list(leaves))
        self.merged = m
        return m.roots[0]

    def state_leaves_after(self):
        """Values of the rebuilt objects' Variables/Refs after the body ran (same order)."""
        out = list(self.merged.in_leaves)
        for k, spec in enumerate(self.s.objects_spec):
            o = self.merged.objects[k]
            if spec[0] == "var" and spec[4][0] == "leaf":
                out[spec[4][1]] = _get_raw(o)
            elif spec[0] == "ref":
                out[spec[1]] = o._value
        return out

    def write_back(self, leaves):
        for k, spec in enumerate(self.s.objects_spec):
            o = self.s.objects[k]
            if spec[0] == "var" and spec[4][0] == "leaf" and variables.mode_of(o)[0]:
                _set_raw(o, leaves[spec[4][1]])
            elif spec[0] == "ref":
                o._value = leaves[spec[1]]


def _is_graphy(tree):
    """Whether ``tree`` holds objects jax cannot flatten into arrays by itself here."""
    found = []

    def walk(x, depth=0):
        if found or depth > 8:
            return
        if state._is_stateful(x):
            found.append(x)
            return
        if isinstance(x, (list, tuple)):
            for y in x:
                walk(y, depth + 1)
        elif isinstance(x, dict):
            for y in x.values():
                walk(y, depth + 1)

    walk(tree)
    return bool(found)


def _where(fn):
    code = getattr(fn, "__code__", None)
    return f"{code.co_filename}:{code.co_firstlineno}" if code else repr(fn)


# --- loops ----------------------------------------------------------------------------------------
def _reject_stateful_carry(name, init):
    if _holds_state(init) or _is_graphy(init):
        raise HijaxcError(
            f"{name}: the loop carry holds Variables/Modules; hijaxc threads state that the loop "
            "body reaches by closure (or, for scan, through xs), not through the carry. Close over "
            "the objects in the body and keep only arrays in the carry.")


def fori_loop(lower, upper, body_fun, init_val, **kwargs):
    _reject_stateful_carry("fori_loop", init_val)
    body_fun = _convert(body_fun)

    def run(cap):
        if not cap.slots:
            return jax.lax.fori_loop(lower, upper, _watched(cap, body_fun), init_val, **kwargs)

        def body(i, carry):
            val, st = carry
            with cap.inside(st):
                val = body_fun(i, val)
                st = cap.read()
            return val, st

        val, st = jax.lax.fori_loop(lower, upper, body, (init_val, cap.read()), **kwargs)
        cap.write(st)
        return val

    return _learning(run, body_fun)


def while_loop(cond_fun, body_fun, init_val):
    _reject_stateful_carry("while_loop", init_val)
    cond_fun, body_fun = _convert(cond_fun), _convert(body_fun)

    def run(cap):
        if not cap.slots:
            return jax.lax.while_loop(_watched(cap, cond_fun), _watched(cap, body_fun), init_val)

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

    return _learning(run, cond_fun, body_fun)


def scan(f, init, xs=None, length=None, reverse=False, unroll=1, **kwargs):
    _reject_stateful_carry("scan", init)
    f = _convert(f)
    graph_xs = xs is not None and _is_graphy(xs)

    def run(cap):
        if not cap.slots and not graph_xs:
            return jax.lax.scan(_watched(cap, f), init, xs, length=length, reverse=reverse,
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
            if KeptObjects().mark((c, y), cap, (xop,)) is not (c, y):
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

    return _learning(run, f)


# --- branches -------------------------------------------------------------------------------------
def _stateful_operands(operands):
    return any(_holds_state(o) or _is_graphy(o) for o in operands)


def _branches(lax_fn, first, fns, operands, kwargs):
    """cond/switch: ``lax_fn(first, branches, *operands)`` with captured state threaded.
    Operands that hold Variables/Modules are passed to the branches as the same objects (by
    closure), their values threaded like captured state: a write through them is kept."""
    by_ref = _stateful_operands(operands)
    fns = [_convert(b) for b in fns]

    def run(cap):
        if not cap.slots:
            return lax_fn(first, [_watched(cap, b) for b in fns], *operands, **kwargs)

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

    return _learning(run, *fns, operands=operands if by_ref else ())


def cond(pred, true_fun, false_fun, *operands, **kwargs):
    return _branches(lambda p, fs, *ops, **kw: jax.lax.cond(p, fs[0], fs[1], *ops, **kw), pred,
                     [true_fun, false_fun], operands, kwargs)


def switch(index, branches, *operands, **kwargs):
    return _branches(jax.lax.switch, index, list(branches), operands, kwargs)


# --- learning what a body reaches while it is traced ----------------------------------------------
def _learning(run, *fns, operands=()):
    """``run(cap)`` over the state ``fns`` reach (closures, globals, ...).  State the body reads
    that this capture does not hold — the step's copy of a Variable a converted helper reaches
    through its own globals, found only while the body is traced — makes ``context.view`` raise
    ``Uncaptured`` for this capture: it is added, and the transform is traced again."""
    extra = []
    while True:
        cap = _capture(*fns, operands=operands, extra=extra)
        try:
            return run(cap)
        except context.Uncaptured as e:
            if e.capture is not cap or len(extra) >= 64:
                raise
            extra.append(e.value)


def _watched(cap, fn):
    """``fn`` run with ``cap`` watching what it reads (the transform's no-state path)."""

    @functools.wraps(fn)
    def watched(*args, **kwargs):
        with cap.watch():
            return fn(*args, **kwargs)

    return watched


# --- function transforms --------------------------------------------------------------------------
def _split_args(args):
    """Arguments holding graph nodes / NNX Variables become Operands (flat leaves)."""
    ops = [Operand(a) if _is_graphy(a) else None for a in args]
    flat = [o.leaves if o is not None else a for o, a in zip(ops, args)]
    return ops, flat


def _build_args(ops, flat):
    return [o.build(x) if o is not None else x for o, x in zip(ops, flat)]


def _after_args(ops, flat):
    return [o.state_leaves_after() if o is not None else None for o, x in zip(ops, flat)]


def _wrap_transform(transform, fun, *t_args, written_back=True, **t_kwargs):
    """``transform(fun)`` with captured state and graph-node arguments threaded."""

    @functools.wraps(fun)
    def wrapped(*args, **kwargs):
        fun_ = _convert(fun)
        return _learning(lambda cap: attempt(cap, fun_, args, kwargs), fun_)

    def attempt(cap, fun_, args, kwargs):
        ops, flat = _split_args(args)
        if not cap.slots and not any(o is not None for o in ops):
            return transform(_watched(cap, fun_), *t_args, **t_kwargs)(*args, **kwargs)

        kept = KeptObjects()

        def inner(st, *flat_args, **kw):
            with cap.inside(st):
                out = fun_(*_build_args(ops, flat_args), **kw)
                return kept.mark(out, cap, ops), (cap.read(), _after_args(ops, flat_args))

        out, (st, arg_states) = transform(inner, *t_args, **t_kwargs)(cap.read(), *flat, **kwargs)
        cap.write(st)
        for o, leaves in zip(ops, arg_states):
            if o is not None:
                o.write_back(leaves)
        return kept.unmark(out)

    return wrapped


def checkpoint(fun=None, **kwargs):
    if fun is None:
        return functools.partial(checkpoint, **kwargs)
    return _wrap_transform(jax.checkpoint, fun, **kwargs)


remat = checkpoint


def jit(fun=None, **kwargs):
    """``jax.jit`` inside a compiled function: the inner function's state is threaded too."""
    if fun is None:
        return functools.partial(jit, **kwargs)
    kwargs.pop("donate_argnums", None)  # nested inside a trace: donation does not apply
    kwargs.pop("donate_argnames", None)
    return _wrap_transform(jax.jit, fun, **kwargs)


hijaxc_jit_inner = jit


def _argnums_tuple(argnums):
    return (argnums,) if isinstance(argnums, int) else tuple(argnums)


def _inexact(x):
    return hasattr(x, "dtype") and jax.numpy.issubdtype(x.dtype, jax.numpy.inexact)


def value_and_grad(fun, argnums=0, has_aux=False, **kwargs):
    """``jax.value_and_grad`` whose function may mutate captured state (primal values written back)
    and take Modules / Variables as differentiated arguments: gradients come back in the same
    structure (a Module / Variable holding gradients, as flax does); integer state in them (RNG
    counters) gets ``float0`` zeros, as ``jax.grad(allow_int=True)`` would give."""
    argnums_t = _argnums_tuple(argnums)

    @functools.wraps(fun)
    def wrapped(*args, **kw):
        fun_ = _convert(fun)
        return _learning(lambda cap: attempt(cap, fun_, args, kw), fun_)

    def attempt(cap, fun_, args, kw):
        ops, flat = _split_args(args)
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
            with cap.inside(st):
                out = fun_(*_build_args(ops, full), **kw)
                after = (cap.read(), _after_args(ops, full))
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


def grad(fun, argnums=0, has_aux=False, **kwargs):
    vg = value_and_grad(fun, argnums=argnums, has_aux=has_aux, **kwargs)

    @functools.wraps(fun)
    def wrapped(*args, **kw):
        out, g = vg(*args, **kw)
        return (g, out[1]) if has_aux else g

    return wrapped


def vmap(fun=None, in_axes=0, out_axes=0, **kwargs):
    """``jax.vmap`` over functions that take or return Modules / Variables (e.g. building a stack
    of layers: ``vmap(lambda rngs: Block(..., rngs=rngs))``).  Captured state is read-only inside
    (a write to it would need one value per batch element): it raises a clear error."""
    if fun is None:
        return functools.partial(vmap, in_axes=in_axes, out_axes=out_axes, **kwargs)

    @functools.wraps(fun)
    def wrapped(*args):
        fun_ = _convert(fun)
        ops, flat = _split_args(args)
        cap = _capture(fun_)
        if not any(o is not None for o in ops) and not cap.slots:
            plain = True
        else:
            plain = False
        out_box = {}
        kept = KeptObjects()

        def inner(*flat_args):
            if cap.slots:
                before = cap.read()
            out = fun_(*_build_args(ops, flat_args))
            if cap.slots and any(a is not b for a, b in zip(cap.read(), before)):
                raise HijaxcError(f"{_where(fun)}: a function under vmap wrote to captured state; "
                                  "pass the state as a vmapped argument instead")
            osplit = Operand(kept.mark(out, cap, ops))
            out_box["op"] = osplit
            return osplit.leaves, _after_args(ops, flat_args)

        if plain and not _is_graphy_out(fun):
            return jax.vmap(fun_, in_axes=in_axes, out_axes=out_axes, **kwargs)(*args)
        axes = in_axes if not isinstance(in_axes, (list, tuple)) else tuple(in_axes)
        if isinstance(axes, tuple):
            axes = tuple(a if ops[i] is None else a for i, a in enumerate(axes))
        leaves, arg_states = jax.vmap(inner, in_axes=axes, out_axes=out_axes, **kwargs)(*flat)
        for o, st in zip(ops, arg_states):
            if o is not None:
                o.write_back(st)
        return kept.unmark(out_box["op"].build(leaves))

    return wrapped


def _is_graphy_out(fun):
    return True  # outputs are inspected inside; the plain path handles pure-array functions


def _register(name, *fns):
    for f in fns:
        if f is not None:
            KNOWN[id(f)] = name


_register("scan", jax.lax.scan)
_register("fori_loop", jax.lax.fori_loop)
_register("while_loop", jax.lax.while_loop)
_register("cond", jax.lax.cond)
_register("switch", jax.lax.switch)
_register("vmap", jax.vmap)
_register("grad", jax.grad)
_register("value_and_grad", jax.value_and_grad)
_register("checkpoint", jax.checkpoint, getattr(jax, "remat", None))
_register("jit", jax.jit)

"""What a transform's function reaches, and how its state is threaded through the transform.

``reachable(fn)`` finds the stateful roots a function can reach: closure cells (recursively into
nested functions), the globals its code names, bound ``self``, ``functools.partial`` arguments.
``Captured`` holds their Variables' and Refs' values as a flat list that a transform carries
(``inside`` puts inner tracers into the objects while the body is traced).  ``Operand`` carries an
argument holding graph nodes as flat leaves and rebuilds it inside.  ``KeptObjects`` hands the
caller's own objects back when the function returns them.  ``learning`` traces a transform again
when its body reads state its capture lacks (``discovery.Uncaptured``).
"""
import contextlib
import functools
import types

import jax

from . import _adapter, callees, variables
from .discovery import CellPlace, GlobalPlace, Uncaptured, view, watching
from .merge import merge
from .reach import holds_state, is_stateful
from .spec import Leaf, NodeSpec, RefSpec, VarSpec
from .split import split


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
        out.extend(view(a, None) for a in list(fn.args) + list(fn.keywords.values())
                   if holds_state(a))
        out.extend(reachable(fn.func, seen))
        return out
    if isinstance(fn, types.MethodType):
        if holds_state(fn.__self__):
            out.append(view(fn.__self__, None))
        return out + reachable(fn.__func__, seen)
    if is_stateful(fn):
        return [view(fn, None)]
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
        elif holds_state(v):
            out.append(view(v, CellPlace(cell)))
    names = set()
    _code_names(fn.__code__, names)
    g = fn.__globals__
    for n in names:
        v = g.get(n)
        if v is None or isinstance(v, (types.ModuleType, type)):
            continue
        if isinstance(v, types.FunctionType) and (v.__module__ == fn.__module__
                                                  or callees.is_user_code(v.__code__)):
            out.extend(reachable(v, seen))
        elif holds_state(v):
            out.append(view(v, GlobalPlace(g, n)))
    return out


class Captured:
    """The Variables/Refs reachable from some roots, with their values as a flat list."""

    def __init__(self, roots):
        s = split(list(roots), [f"captured{i}" for i in range(len(roots))])
        self.split = s
        self._ids = None
        self.slots = []  # (object, is_ref)
        self.nodes = []
        for o, content in zip(s.objects, s.objects_spec):
            t = type(content)
            if t is VarSpec and type(content.value) is Leaf:
                self.slots.append((o, False))
            elif t is RefSpec:
                self.slots.append((o, True))
            elif t is NodeSpec:
                self.nodes.append(o)
            if t is VarSpec and not isinstance(o, variables.Variable):
                self.nodes.append(o)  # flax Variables carry a trace state too

    def read(self):
        return [o._value if is_ref else _adapter.get_raw(o) for o, is_ref in self.slots]

    def write(self, values):
        for (o, is_ref), v in zip(self.slots, values):
            if is_ref:
                o._value = v
            else:
                _adapter.set_raw(o, v)

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
        (``discovery.view`` raises ``Uncaptured``; ``learning`` adds it and traces again)."""
        return watching(self)

    def holds(self, obj):
        ids = self._ids
        if ids is None:
            ids = self._ids = {id(o) for o in self.split.objects}
        return id(obj) in ids

    @staticmethod
    def _swap_state(o):
        if isinstance(o, _adapter.FlaxVariable):
            old = _adapter.get_trace_state(o)
            _adapter.new_trace_state(o)
            return old
        return _adapter.swap_node_state(o)

    @staticmethod
    def _restore_state(o, saved):
        if saved is None:
            return
        if isinstance(o, _adapter.FlaxVariable):
            _adapter.set_trace_state(o, saved)
        else:
            key, state = saved
            _adapter.node_items(o)[key] = state


def capture(*fns, operands=(), extra=()):
    roots = []
    seen = set()
    for f in fns:
        for r in reachable(f, seen):
            roots.append(r)
    for o in operands:
        if holds_state(o):
            roots.append(o)
    roots.extend(extra)
    return Captured(roots)


# --- captured objects in a transform's outputs (S5) -----------------------------------------
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
        self.s = split([tree], ["x"])

    @property
    def leaves(self):
        return list(self.s.leaves)

    def build(self, leaves):
        m = merge(self.s.root_specs, self.s.objects_spec, list(leaves))
        self.merged = m
        return m.roots[0]

    def state_leaves_after(self):
        """Values of the rebuilt objects' Variables/Refs after the body ran (same order)."""
        out = list(self.merged.in_leaves)
        for o, content in zip(self.merged.objects, self.s.objects_spec):
            if type(content) is VarSpec and type(content.value) is Leaf:
                out[content.value.index] = _adapter.get_raw(o)
            elif type(content) is RefSpec:
                out[content.leaf] = o._value
        return out

    def write_back(self, leaves):
        for o, content in zip(self.s.objects, self.s.objects_spec):
            if type(content) is VarSpec and type(content.value) is Leaf and content.mode.hijax:
                _adapter.set_raw(o, leaves[content.value.index])
            elif type(content) is RefSpec:
                o._value = leaves[content.leaf]


def learning(run, *fns, operands=()):
    """``run(cap)`` over the state ``fns`` reach (closures, globals, ...).  State the body reads
    that this capture does not hold — the step's copy of a Variable a converted helper reaches
    through its own globals, found only while the body is traced — makes ``discovery.view`` raise
    ``Uncaptured`` for this capture: it is added, and the transform is traced again."""
    extra = []
    while True:
        cap = capture(*fns, operands=operands, extra=extra)
        try:
            return run(cap)
        except Uncaptured as e:
            if e.capture is not cap or len(extra) >= 64:
                raise
            extra.append(e.value)


def watched(cap, fn):
    """``fn`` run with ``cap`` watching what it reads (the transform's no-state path)."""

    @functools.wraps(fn)
    def watched(*args, **kwargs):
        with cap.watch():
            return fn(*args, **kwargs)

    return watched


# --- function transforms --------------------------------------------------------------------------
def split_args(args):
    """Arguments holding graph nodes / NNX Variables become Operands (flat leaves)."""
    ops = [Operand(a) if holds_state(a, pytrees=False) else None for a in args]
    flat = [o.leaves if o is not None else a for o, a in zip(ops, args)]
    return ops, flat


def build_args(ops, flat):
    return [o.build(x) if o is not None else x for o, x in zip(ops, flat)]


def after_args(ops, flat):
    return [o.state_leaves_after() if o is not None else None for o, x in zip(ops, flat)]

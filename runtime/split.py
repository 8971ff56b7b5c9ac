"""Split: describe the live objects a step can reach as specs, objects and flat leaves.

``split(roots, names)`` walks hijaxc and NNX Variables, Refs, NNX graph nodes (Modules, Optimizers,
Rngs, Pytrees), and the lists / dicts / tuples / pytrees holding them.  The ``Split`` it returns
has the specs (spec.py), the original stateful ``objects`` (index = identity, so an object reached
twice is one entry: S4), the flat ``leaves`` (one raw value per Variable / Ref, plus plain arrays)
and a hashable ``key`` for the trace cache.
"""
from typing import Any, Sequence

import jax

from . import _adapter, variables
from .errors import AliasingError
from .reach import ARRAY_TYPES, holds_state, is_stateful
from .spec import (
    DictSpec,
    FlaxHijaxSpec,
    Leaf,
    ListSpec,
    Mode,
    NodeSpec,
    Obj,
    PytreeOf,
    RefSpec,
    Static,
    TupleOf,
    VarSpec,
)
from .variables import Ref

_STATE_KEYS = _adapter.NODE_STATE_KEYS
#: Python scalars stored on graph nodes are static configuration (as in NNX), not traced values
PY_SCALARS = (bool, int, float, complex)


def is_static_value(raw: Any) -> bool:
    """A Variable value that is static structure rather than state (S12): not an array, a Python
    number or a pytree of those (a ``Sharding``, a string, ``None``, any other object).  Keyed by
    equality where it hashes, by identity otherwise, as ``jax.jit`` treats pytree aux data."""
    if isinstance(raw, ARRAY_TYPES) or _adapter.is_tracer(raw):
        return False
    if raw is None:
        return True
    try:
        leaves = jax.tree.leaves(raw)
    except Exception:
        return True
    return not leaves or not all(isinstance(x, ARRAY_TYPES) or _adapter.is_tracer(x)
                                 for x in leaves)


def static_key(x: Any):
    try:
        hash(x)
        return (type(x), x)
    except TypeError:
        return ("id", id(x))


def _meta_key(meta):
    try:
        items = tuple(sorted(meta.items(), key=lambda kv: kv[0]))
        hash(items)
        return items
    except TypeError:
        return ("id", id(meta))


class Split:
    """``free_statics``: (path, object) of the closures' and globals' containers and plain objects
    that hold no state: static, but watched for tracers stored into them while tracing."""

    __slots__ = ("root_specs", "objects_spec", "objects", "leaves", "key", "paths", "duplicates",
                 "free_statics")

    def __init__(self):
        self.objects_spec, self.objects, self.leaves = [], [], []
        self.paths, self.duplicates, self.free_statics = [], {}, []


class _Splitter:
    """One walk.  ``in_node``: Python scalars are static (inside graph nodes, closures, globals);
    ``free``: a state-free container is static (reached from closures and globals only)."""

    def __init__(self):
        self.s = Split()
        self.index = {}
        self.key = []

    def visit(self, x, path, in_node=False, free=False):
        s, key = self.s, self.key
        if in_node and isinstance(x, PY_SCALARS):
            key.append(static_key(x))
            return Static(x)
        if free and isinstance(x, (list, dict)) and not holds_state(x):
            # S12: a closure's or global's container that holds no state is not state (a list
            # counting traces): used as it is while tracing, never threaded, never a retrace
            key.append(("id", id(x)))
            s.free_statics.append((path, x))
            return Static(x)
        if is_stateful(x) or isinstance(x, (list, dict)):
            return self.visit_object(x, path, in_node, free)
        if isinstance(x, ARRAY_TYPES) or _adapter.is_tracer(x):
            key.append("l")
            return self.leaf(x)
        if type(x) is tuple:
            key.append(("t", len(x)))
            return TupleOf(tuple(self.visit(c, path + (j,), in_node, free)
                                 for j, c in enumerate(x)))
        if x is None or isinstance(x, (str, type)) or callable(x):
            key.append(static_key(x))
            return Static(x)
        children, treedef = jax.tree_util.tree_flatten(x, is_leaf=lambda y: y is not x)
        if treedef.num_leaves == 1 and treedef.num_nodes == 1:
            key.append(static_key(x))
            if free and hasattr(x, "__dict__"):  # watched for leaked tracers (S12)
                s.free_statics.append((path, x))
            return Static(x)
        key.append(treedef)
        return PytreeOf(treedef, tuple(self.visit(c, path + (j,), in_node)
                                       for j, c in enumerate(children)))

    def leaf(self, x):
        self.s.leaves.append(x)
        return Leaf(len(self.s.leaves) - 1)

    def visit_object(self, x, path, in_node, free):
        s = self.s
        k = self.index.get(id(x))
        if k is not None:
            s.duplicates.setdefault(k, [s.paths[k]]).append(path)
            self.key.append(("o", k))
            return Obj(k)
        k = len(s.objects)
        self.index[id(x)] = k
        s.objects.append(x)
        s.objects_spec.append(None)
        s.paths.append(path)
        self.key.append(("n", k))
        s.objects_spec[k] = self.content(x, path, in_node, free and isinstance(x, (list, dict)))
        return Obj(k)

    def content(self, x, path, in_node, free):
        if _adapter.is_flax_hijax(x):
            return self.flax_hijax(x)
        if isinstance(x, _adapter.FlaxVariable):
            return self.variable(x, path)
        if isinstance(x, Ref):
            self.key.append("r")
            return RefSpec(self.leaf(x._value).index)
        if isinstance(x, list):
            self.key.append(("L", len(x)))
            return ListSpec(tuple(self.visit(c, path + (j,), in_node, free)
                                  for j, c in enumerate(x)))
        if isinstance(x, dict):
            keys = list(x.keys())
            self.key.append(("D", tuple(static_key(k) for k in keys)))
            return DictSpec(tuple((k, self.visit(x[k], path + (k,), in_node, free))
                                  for k in keys))
        return self.node(x, path)

    def variable(self, x, path):
        meta = _adapter.get_metadata(x)
        mode = Mode(*variables.mode_of(x))
        raw = _adapter.get_raw(x)
        if isinstance(raw, Ref):
            value = self.visit(raw, path + ("ref",))
            self.key.append(("v", type(x), _meta_key(meta), mode))
        elif is_static_value(raw):
            value = Static(raw)
            self.key.append(("v", type(x), _meta_key(meta), mode, static_key(raw)))
        else:
            value = self.leaf(raw)
            self.key.append(("v", type(x), _meta_key(meta), mode))
        return VarSpec(type(x), meta, mode, value)

    def flax_hijax(self, x):
        cls, meta, value = _adapter.flax_variable_parts(x)
        if is_static_value(value):
            self.key.append(("fv", cls, _meta_key(meta), static_key(value)))
            return FlaxHijaxSpec(cls, meta, Mode(True, True), Static(value))
        self.key.append(("fv", cls, _meta_key(meta)))
        return FlaxHijaxSpec(cls, meta, Mode(True, True), self.leaf(value))

    def node(self, x, path):
        items = _adapter.node_items(x)
        state_key = next((k for k in items if k in _STATE_KEYS), None)
        names = sorted((k for k in items if k not in _STATE_KEYS), key=str)
        self.key.append(("N", type(x), tuple(names)))
        attributes = tuple((k, self.visit(items[k], path + (k,), True)) for k in names)
        return NodeSpec(type(x), state_key, items.get(state_key), attributes)


def split(roots: Sequence, names: Sequence[str], *, scalars_static: Sequence[str] = ()) -> Split:
    """Split ``roots`` (live values named ``names``).  Python scalars in explicit arguments are
    traced (as ``jax.jit`` does); in ``scalars_static`` roots (closures and globals) they are
    configuration, baked into the trace, and state-free containers there are static."""
    w = _Splitter()
    w.s.root_specs = tuple(w.visit(r, (n,), n in scalars_static, n in scalars_static)
                           for r, n in zip(roots, names))
    w.s.key = tuple(w.key)
    return w.s


def find_duplicates(tree: Any) -> list:
    """Paths through which one Variable / Ref / graph node is reached more than once, in the seeds'
    format: ``[[('a',), ('c',)]]``."""
    if is_stateful(tree) and not isinstance(tree, (_adapter.FlaxVariable, Ref)):
        items = _adapter.node_items(tree)
        names = sorted((k for k in items if k not in _STATE_KEYS), key=str)
        roots = [items[k] for k in names]
    elif isinstance(tree, dict):
        names, roots = list(tree.keys()), list(tree.values())
    elif isinstance(tree, (list, tuple)):
        names, roots = list(range(len(tree))), list(tree)
    else:
        return []
    s = split(roots, names)
    return [[tuple(p) for p in paths] for k, paths in s.duplicates.items()
            if not isinstance(s.objects[k], (list, dict))]


def check_aliasing(s: Split, where: str) -> None:
    dups = {k: p for k, p in s.duplicates.items() if not isinstance(s.objects[k], (list, dict))}
    if dups:
        lines = [f"  {type(s.objects[k]).__name__} reached through "
                 + ", ".join(fmt_path(p) for p in paths) for k, paths in dups.items()]
        raise AliasingError(
            f"aliasing='error' and {len(dups)} object(s) are shared between paths at {where}:\n"
            + "\n".join(lines) + "\nPass each object once, or use aliasing='share' (the default).")


def fmt_path(p: tuple) -> str:
    return str(p[0]) + "".join(f"[{k!r}]" if not isinstance(k, str) else f".{k}" for k in p[1:])

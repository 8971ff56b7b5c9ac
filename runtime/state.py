"""Split -> merge -> collect -> write back: the state machinery the generated code calls.

``split(roots)`` walks the live objects a step can reach (hijaxc and NNX Variables, Refs, NNX graph
nodes such as Modules / Optimizers / Rngs / Pytrees, and lists / dicts / tuples / other pytrees
holding them) and returns a ``Split``: a static ``spec`` (hashable ``key`` for caches), the list of
original stateful ``objects`` (index = identity, so an object reached twice is one entry: S4) and
the flat list of ``leaves`` (one raw value per Variable/Ref, plus plain arrays).

Inside the trace, ``merge(spec, leaves)`` rebuilds *fresh* copies owned by the trace; after the
user's body ran, ``collect(...)`` walks those copies and the return value again and produces the
output leaves and a ``WriteBack`` plan (static, hashable-free, produced at trace time).  After the
compiled step returned, ``WriteBack.apply`` updates the caller's original objects in place (identity
kept), creates the objects that were made inside, and rebuilds the return value.  Nothing is
touched before the step succeeded, so a failure anywhere leaves caller state as it was (S6).

Spec encoding (nested tuples):
  ("leaf", i)                 a plain array/number at ``leaves[i]``
  ("static", obj)             a non-array Python object, kept by reference
  ("obj", k)                  stateful object ``k`` (its content spec is in ``objects_spec[k]``)
  ("tuple", specs) / ("pytree", treedef, specs)
Object content specs:
  ("var", cls, metadata, mode, i)   mode = (hijax, mutable); value at ``leaves[i]``
  ("fvar", cls, metadata, mode, i)  an NNX native hijax Variable (read/written with flax's API)
  ("ref", i)
  ("node", cls, state_key, state, ((name, spec), ...))
  ("list", (spec, ...)) / ("dict", ((key, spec), ...))
"""
import warnings

import jax
import numpy as np

from . import _adapter, context, variables
from .errors import AliasingError, InvalidValueError, TracerLeakError
from .variables import Ref

_get_raw, _set_raw, _get_meta = _adapter.get_raw, _adapter.set_raw, _adapter.get_metadata
_ARRAY_TYPES = (jax.Array, np.ndarray, np.generic, bool, int, float, complex)
_STATE_KEYS = _adapter.NODE_STATE_KEYS
# Python scalars stored on graph nodes are static configuration (as in NNX), not traced values.
_PY_SCALARS = (bool, int, float, complex)


def _is_stateful(x):
    return isinstance(x, (_adapter.FlaxVariable, Ref)) or _adapter.is_graph_node(x) or (
        _adapter.is_flax_hijax(x))


def is_static_value(raw):
    """A Variable value that is static structure rather than state (S12): not an array, a Python
    number or a pytree of those (a ``Sharding``, a string, ``None``, any other object).  Keyed by
    equality where it hashes, by identity otherwise, as ``jax.jit`` treats pytree aux data."""
    if isinstance(raw, _ARRAY_TYPES) or _adapter.is_tracer(raw):
        return False
    if raw is None:
        return True
    try:
        leaves = jax.tree.leaves(raw)
    except Exception:
        return True
    return not leaves or not all(isinstance(x, _ARRAY_TYPES) or _adapter.is_tracer(x)
                                 for x in leaves)


def _static_key(x):
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


def holds_state(x, _seen=None) -> bool:
    """Whether ``x`` is, or holds through containers and pytrees, a Variable, Ref or graph node."""
    if _is_stateful(x):
        return True
    if isinstance(x, (list, tuple)):
        items = x
    elif isinstance(x, dict):
        items = x.values()
    elif isinstance(x, _ARRAY_TYPES) or x is None or isinstance(x, str):
        return False
    else:
        try:
            items = jax.tree_util.tree_leaves(x, is_leaf=lambda y: y is not x and _is_stateful(y))
        except Exception:
            return False
        if len(items) == 1 and items[0] is x:
            return False
    seen = _seen if _seen is not None else set()
    if id(x) in seen:
        return False
    seen.add(id(x))
    return any(holds_state(y, seen) for y in items)


class Split:
    """``free_statics``: (path, object) of the closures' and globals' containers and plain objects
    that hold no state: static, but watched for tracers stored into them while tracing."""

    __slots__ = ("root_specs", "objects_spec", "objects", "leaves", "key", "paths", "duplicates",
                 "free_statics")

    def __init__(self):
        self.objects_spec, self.objects, self.leaves = [], [], []
        self.paths, self.duplicates, self.free_statics = [], {}, []


def split(roots, names, *, array_args=True, scalars_static=()):
    """Split ``roots`` (a sequence of live values named ``names``).  ``array_args``: plain arrays and
    Python numbers found outside Variables are dynamic leaves (as ``jax.jit`` treats arguments)."""
    s = Split()
    index = {}
    keyparts = []

    def visit(x, path, in_node=False, free=False):
        if in_node and isinstance(x, _PY_SCALARS):
            keyparts.append(_static_key(x))
            return ("static", x)
        if free and isinstance(x, (list, dict)) and not holds_state(x):
            # S12: a closure's or global's container that holds no state is not state (a list
            # counting traces): used as it is while tracing, never threaded, never a retrace
            keyparts.append(("id", id(x)))
            s.free_statics.append((path, x))
            return ("static", x)
        if _is_stateful(x) or isinstance(x, (list, dict)):
            k = index.get(id(x))
            if k is not None:
                s.duplicates.setdefault(k, [s.paths[k]]).append(path)
                keyparts.append(("o", k))
                return ("obj", k)
            k = len(s.objects)
            index[id(x)] = k
            s.objects.append(x)
            s.objects_spec.append(None)
            s.paths.append(path)
            keyparts.append(("n", k))
            s.objects_spec[k] = content(x, path, in_node, free and isinstance(x, (list, dict)))
            return ("obj", k)
        if isinstance(x, _ARRAY_TYPES) or _adapter.is_tracer(x):
            i = len(s.leaves)
            s.leaves.append(x)
            keyparts.append("l")
            return ("leaf", i)
        if isinstance(x, tuple) and type(x) is tuple:
            keyparts.append(("t", len(x)))
            return ("tuple", tuple(visit(c, path + (j,), in_node, free) for j, c in enumerate(x)))
        if x is None or isinstance(x, (str, type)) or callable(x):
            keyparts.append(_static_key(x))
            return ("static", x)
        children, treedef = jax.tree_util.tree_flatten(x, is_leaf=lambda y: y is not x)
        if treedef.num_leaves == 1 and treedef.num_nodes == 1:
            keyparts.append(_static_key(x))
            if free and hasattr(x, "__dict__"):  # watched for leaked tracers (S12)
                s.free_statics.append((path, x))
            return ("static", x)
        keyparts.append(treedef)
        return ("pytree", treedef, tuple(visit(c, path + (j,), in_node) for j, c in enumerate(children)))

    def content(x, path, in_node, free=False):
        if isinstance(x, variables.Variable) or (isinstance(x, _adapter.FlaxVariable) and not _adapter.is_flax_hijax(x)):
            meta = _get_meta(x)
            mode = variables.mode_of(x)
            i = len(s.leaves)
            raw = _get_raw(x)
            if isinstance(raw, Ref):
                sub = visit(raw, path + ("ref",))
                keyparts.append(("v", type(x), _meta_key(meta), mode))
                return ("var", type(x), meta, mode, sub)
            if is_static_value(raw):
                keyparts.append(("v", type(x), _meta_key(meta), mode, _static_key(raw)))
                return ("var", type(x), meta, mode, ("static", raw))
            s.leaves.append(raw)
            keyparts.append(("v", type(x), _meta_key(meta), mode))
            return ("var", type(x), meta, mode, ("leaf", i))
        if _adapter.is_flax_hijax(x):
            cls, meta, value = _adapter.flax_variable_parts(x)
            if is_static_value(value):
                keyparts.append(("fv", cls, _meta_key(meta), _static_key(value)))
                return ("fvar", cls, meta, (True, True), ("static", value))
            i = len(s.leaves)
            s.leaves.append(value)
            keyparts.append(("fv", cls, _meta_key(meta)))
            return ("fvar", cls, meta, (True, True), ("leaf", i))
        if isinstance(x, Ref):
            i = len(s.leaves)
            s.leaves.append(x._value)
            keyparts.append("r")
            return ("ref", i)
        if isinstance(x, list):
            keyparts.append(("L", len(x)))
            return ("list", tuple(visit(c, path + (j,), in_node, free) for j, c in enumerate(x)))
        if isinstance(x, dict):
            keys = list(x.keys())
            keyparts.append(("D", tuple(_static_key(k) for k in keys)))
            return ("dict", tuple((k, visit(x[k], path + (k,), in_node, free)) for k in keys))
        # graph node
        items = _adapter.node_items(x)
        state_key, state = None, None
        out = []
        names_ = sorted((k for k in items if k not in _STATE_KEYS), key=str)
        for k in items:
            if k in _STATE_KEYS:
                state_key, state = k, items[k]
        keyparts.append(("N", type(x), tuple(names_)))
        for k in names_:
            out.append((k, visit(items[k], path + (k,), True)))
        return ("node", type(x), state_key, state, tuple(out))

    # Python scalars in explicit arguments are traced (as jax.jit does); in closures and globals
    # (``scalars_static`` roots) they are configuration, baked into the trace.
    s.root_specs = tuple(visit(r, (n,), n in scalars_static, n in scalars_static)
                         for r, n in zip(roots, names))
    s.key = tuple(keyparts)
    return s


def find_duplicates(tree):
    """Paths through which one Variable / Ref / graph node is reached more than once, in the seeds'
    format: ``[[('a',), ('c',)]]``."""
    if _is_stateful(tree) and not isinstance(tree, (_adapter.FlaxVariable, Ref)):
        items = _adapter.node_items(tree)
        roots = [items[k] for k in sorted((k for k in items if k not in _STATE_KEYS), key=str)]
        names = sorted((k for k in items if k not in _STATE_KEYS), key=str)
    elif isinstance(tree, dict):
        names, roots = list(tree.keys()), list(tree.values())
    elif isinstance(tree, (list, tuple)):
        names, roots = list(range(len(tree))), list(tree)
    else:
        return []
    s = split(roots, names)
    out = []
    for k, paths in s.duplicates.items():
        if isinstance(s.objects[k], (list, dict)):
            continue
        out.append([tuple(p) for p in paths])
    return out


def check_aliasing(s, where):
    dups = {k: p for k, p in s.duplicates.items() if not isinstance(s.objects[k], (list, dict))}
    if dups:
        lines = []
        for k, paths in dups.items():
            lines.append(f"  {type(s.objects[k]).__name__} reached through " + ", ".join(
                _fmt_path(p) for p in paths))
        raise AliasingError(
            f"aliasing='error' and {len(dups)} object(s) are shared between paths at {where}:\n"
            + "\n".join(lines) + "\nPass each object once, or use aliasing='share' (the default).")


def _fmt_path(p):
    return p[0] + "".join(f"[{k!r}]" if not isinstance(k, str) else f".{k}" for k in p[1:])


# --- inside the trace ----------------------------------------------------------------------------
class Merged:
    """Fresh copies of the split objects, owned by the current trace."""

    __slots__ = ("objects", "fresh_index", "roots", "in_leaves")


def merge(s_root_specs, s_objects_spec, leaves):
    m = Merged()
    n = len(s_objects_spec)
    objs = [None] * n
    # create every object first (so cycles and shared references resolve), then fill
    for k, spec in enumerate(s_objects_spec):
        kind = spec[0]
        if kind == "fvar":  # flax hijax: one pytree leaf inside too (its value is never an object)
            objs[k] = _adapter.new_flax_hijax(spec[1], _value_of(spec[4], leaves), spec[2])
        elif kind == "var":
            objs[k] = object.__new__(spec[1])
        elif kind == "ref":
            objs[k] = variables._ref_of(leaves[spec[1]])
        elif kind == "list":
            objs[k] = []
        elif kind == "dict":
            objs[k] = {}
        else:
            objs[k] = _adapter.new_node(spec[1])

    def build(spec):
        kind = spec[0]
        if kind == "leaf":
            return leaves[spec[1]]
        if kind == "obj":
            return objs[spec[1]]
        if kind == "static":
            return spec[1]
        if kind == "tuple":
            return tuple(build(c) for c in spec[1])
        return jax.tree_util.tree_unflatten(spec[1], [build(c) for c in spec[2]])

    for k, spec in enumerate(s_objects_spec):
        kind, o = spec[0], objs[k]
        if kind == "var":
            value = build(spec[4])
            _fill_variable(o, value, dict(spec[2]))
        elif kind == "list":
            o.extend(build(c) for c in spec[1])
        elif kind == "dict":
            o.update((key, build(c)) for key, c in spec[1])
        elif kind == "node":
            d = _adapter.node_items(o)
            if spec[2] is not None:
                d[spec[2]] = _adapter.fresh_node_state(spec[3])
            for name, c in spec[4]:
                d[name] = build(c)
    m.objects = objs
    m.fresh_index = {id(o): k for k, o in enumerate(objs)}
    m.roots = [build(r) for r in s_root_specs]
    m.in_leaves = leaves
    return m


def _value_of(spec, leaves):
    return leaves[spec[1]] if spec[0] == "leaf" else spec[1]


def _fill_variable(v, value, meta):
    if _adapter.TraceState is not None:
        _adapter.FlaxVariable.__dict__["_trace_state"].__set__(v, _adapter.TraceState())
    _adapter.set_metadata_dict(v, meta)
    _set_raw(v, value)


class Out:
    """Output of ``collect``: leaves (traced) + the static write-back plan."""

    __slots__ = ("leaves", "plan")


class WriteBack:
    """What to do with the step's output leaves, decided at trace time.

    ``var_updates``: (object index, leaf index) for hijax Variables / Refs of the input (the hot
    loop of the steady-state call); ``struct``: (object index, content spec) for input objects
    whose structure or metadata changed; ``new_specs``: content specs of objects created inside;
    ``out_spec``: the return value; ``root_specs``: the threaded roots after the call (so a new
    global/closure value is not needed: roots keep identity)."""

    __slots__ = ("var_updates", "ref_updates", "fvar_updates", "struct", "new_specs", "out_spec", "n_in",
                 "simple", "_hash")

    def __init__(self):
        self.var_updates, self.fvar_updates, self.struct, self.new_specs = [], [], [], []
        self.ref_updates = []

    # the plan rides in the output pytree as static aux data: jax compares/hashes it
    def __eq__(self, other):
        return self is other

    def __hash__(self):
        return id(self)

    def apply(self, objects, leaves):
        for k, i in self.var_updates:
            _set_raw(objects[k], leaves[i])
        for k, i in self.ref_updates:
            objects[k]._value = leaves[i]
        if self.simple:
            return _rebuild_plain(self.out_spec, leaves)
        for k, i in self.fvar_updates:
            _adapter.flax_hijax_write(objects[k], leaves[i])
        # objects created inside: create all first (references between them), then fill
        new = [None] * len(self.new_specs)
        for j, spec in enumerate(self.new_specs):
            kind = spec[0]
            if kind == "fvar":
                new[j] = _adapter.new_flax_hijax(spec[1], _value_of(spec[4], leaves), spec[2])
            elif kind == "var":
                new[j] = object.__new__(spec[1])
            elif kind == "ref":
                new[j] = variables._ref_of(leaves[spec[1]])
            elif kind == "list":
                new[j] = []
            elif kind == "dict":
                new[j] = {}
            else:
                new[j] = _adapter.new_node(spec[1])
        n_in = self.n_in

        def build(spec):
            kind = spec[0]
            if kind == "leaf":
                return leaves[spec[1]]
            if kind == "obj":
                k = spec[1]
                return objects[k] if k < n_in else new[k - n_in]
            if kind == "static":
                return spec[1]
            if kind == "tuple":
                return tuple(build(c) for c in spec[1])
            return jax.tree_util.tree_unflatten(spec[1], [build(c) for c in spec[2]])

        def fill(o, spec, fresh):
            kind = spec[0]
            if kind == "var":
                if fresh:
                    _fill_variable(o, build(spec[4]), dict(spec[2]))
                else:
                    _adapter.set_metadata_dict(o, dict(spec[2]))
                    raw = build(spec[4])
                    _set_raw(o, raw)
            elif kind == "list":
                o[:] = [build(c) for c in spec[1]]
            elif kind == "dict":
                o.clear()
                o.update((key, build(c)) for key, c in spec[1])
            elif kind == "node":
                d = _adapter.node_items(o)
                state = d.get(spec[2]) if spec[2] is not None else None
                d.clear()
                if spec[2] is not None:
                    d[spec[2]] = state if (state is not None and not fresh) else _adapter.fresh_node_state(spec[3])
                for name, c in spec[4]:
                    d[name] = build(c)

        for j, spec in enumerate(self.new_specs):
            fill(new[j], spec, True)
        for k, spec in self.struct:
            fill(objects[k], spec, False)
        if self.struct:
            _adapter.EPOCH[0] += 1
        return build(self.out_spec)


def _rebuild_plain(spec, leaves):
    kind = spec[0]
    if kind == "leaf":
        return leaves[spec[1]]
    if kind == "static":
        return spec[1]
    if kind == "tuple":
        return tuple(_rebuild_plain(c, leaves) for c in spec[1])
    return jax.tree_util.tree_unflatten(spec[1], [_rebuild_plain(c, leaves) for c in spec[2]])


_warned_lines = set()


def collect(merged, s_objects_spec, out, ctx=None, *, check_values=True, default_where="<unknown>:0",
            paths=None):
    """After the body: the output leaves and the write-back plan."""
    wb = WriteBack()
    n_in = len(s_objects_spec)
    wb.n_in = n_in
    leaves = []
    leaf_of = {}  # id(array) -> output leaf index (share an output for an array seen twice)
    in_leaf_ids = {id(x): i for i, x in enumerate(merged.in_leaves)}
    index = dict(merged.fresh_index)
    objs = merged.objects
    new_specs = []
    visited = set()
    pending = []

    def leaf(x):
        j = leaf_of.get(id(x))
        if j is None:
            j = len(leaves)
            leaves.append(x)
            leaf_of[id(x)] = j
        return ("leaf", j)

    def visit(x, in_node=False):
        if in_node and isinstance(x, _PY_SCALARS):
            return ("static", x)
        if _is_stateful(x) or isinstance(x, (list, dict)):
            k = index.get(id(x))
            if k is None:
                k = n_in + len(new_specs)
                index[id(x)] = k
                new_specs.append(None)
                pending.append((k, x, in_node))
            elif k < n_in and k not in visited:
                pending.append((k, x, in_node))
            visited.add(k)
            return ("obj", k)
        if isinstance(x, _ARRAY_TYPES) or _adapter.is_tracer(x):
            return leaf(x)
        if isinstance(x, tuple) and type(x) is tuple:
            return ("tuple", tuple(visit(c, in_node) for c in x))
        if x is None or isinstance(x, (str, type)) or callable(x):
            return ("static", x)
        children, treedef = jax.tree_util.tree_flatten(x, is_leaf=lambda y: y is not x)
        if treedef.num_leaves == 1 and treedef.num_nodes == 1:
            return ("static", x)
        return ("pytree", treedef, tuple(visit(c, in_node) for c in children))

    def content(x, in_node):
        if _adapter.is_flax_hijax(x):
            cls, meta, value = _adapter.flax_variable_parts(x)
            k = index.get(id(x))
            if k is not None and k < n_in and _unchanged_static(s_objects_spec[k], value):
                return ("fvar", cls, meta, (True, True), ("static", value))
            return ("fvar", cls, meta, (True, True), leaf(value))
        if isinstance(x, _adapter.FlaxVariable) and not _adapter.is_flax_hijax(x):
            raw = _get_raw(x)
            k = index.get(id(x))
            if k is not None and k < n_in and _unchanged_static(s_objects_spec[k], raw):
                return ("var", type(x), dict(_get_meta(x)), variables.mode_of(x), ("static", raw))
            if check_values:
                _check_value(x, raw, index.get(id(x)), paths, ctx, default_where)
                _check_leak(x, raw, index.get(id(x)), paths, ctx, default_where)
            sub = visit(raw) if isinstance(raw, Ref) else leaf(raw)
            return ("var", type(x), dict(_get_meta(x)), variables.mode_of(x), sub)
        if isinstance(x, Ref):
            return ("ref", leaf(x._value)[1])
        if isinstance(x, list):
            return ("list", tuple(visit(c, in_node) for c in x))
        if isinstance(x, dict):
            return ("dict", tuple((key, visit(x[key], in_node)) for key in list(x.keys())))
        items = _adapter.node_items(x)
        state_key, state = None, None
        out_items = []
        for key in sorted((k for k in items if k not in _STATE_KEYS), key=str):
            out_items.append((key, visit(items[key], True)))
        for key in items:
            if key in _STATE_KEYS:
                state_key, state = key, items[key]
        return ("node", type(x), state_key, state, tuple(out_items))

    # input objects first, in input order (so hijax Variables map to leaves in order)
    for k in range(n_in):
        index[id(objs[k])] = k
    for k in range(n_in):
        visited.add(k)
        pending.append((k, objs[k], _in_node_input(s_objects_spec, k)))
    specs = {}

    def drain():
        while pending:
            k, x, in_node = pending.pop(0)
            if k in specs:
                continue
            specs[k] = content(x, in_node)

    drain()  # the inputs first: their leaves come first, in input order (fast write-back)
    out_spec = visit(out)
    drain()
    for k in range(n_in):
        spec, old = specs[k], s_objects_spec[k]
        kind = spec[0]
        if kind in ("var", "fvar") and spec[4][0] == "static" and _unchanged_static(old, spec[4][1]):
            if _meta_equal(spec[2], old[2]):
                continue
        elif kind == "fvar" and old[0] == "fvar" and spec[4][0] == "leaf":
            wb.fvar_updates.append((k, spec[4][1]))
            continue
        if kind == "fvar":
            raise InvalidValueError(f"{_fmt_path(paths[k]) if paths else 'a flax hijax Variable'}"
                                    " now holds a non-array value; only arrays can be written "
                                    "back to a flax hijax Variable")
        if kind == "var":
            hijax, _ = old[3]
            changed_meta = not _meta_equal(spec[2], old[2])
            if not hijax:
                in_leaf = old[4]
                same = spec[4][0] == "leaf" and in_leaf[0] == "leaf" and leaves[spec[4][1]] is merged.in_leaves[in_leaf[1]]
                if not same or changed_meta:
                    where = (ctx.writes.get(id(objs[k])) if ctx else None) or default_where
                    if where not in _warned_lines:
                        _warned_lines.add(where)
                        path, _, line = where.rpartition(":")
                        warnings.warn_explicit(
                            f"hijaxc: a write to lojax {type(objs[k]).__name__} at {where} is dropped: "
                            "lojax Variables are passed by value (convert with to_hijax / "
                            "vars_as(..., hijax=True) to keep the change).", UserWarning,
                            path or "<unknown>", int(line) if line.isdigit() else 0)
                continue
            if changed_meta or spec[4][0] != "leaf" or old[4][0] != "leaf":
                wb.struct.append((k, spec))
            elif old[3][1] or leaves[spec[4][1]] is not merged.in_leaves[old[4][1]]:
                wb.var_updates.append((k, spec[4][1]))  # (an immutable Variable cannot change)
        elif kind == "ref":
            wb.ref_updates.append((k, spec[1]))
        else:
            if not _same_shape(spec, old, leaves, merged.in_leaves):
                wb.struct.append((k, spec))
    wb.new_specs = [specs[k] for k in range(n_in, n_in + len(new_specs))]
    wb.out_spec = out_spec
    wb.simple = not (wb.struct or wb.new_specs or wb.fvar_updates) and _plain(out_spec)
    return leaves, wb


def _unchanged_static(old_spec, raw):
    """An input Variable still holding the very static value it came in with."""
    return old_spec[0] in ("var", "fvar") and old_spec[4][0] == "static" and old_spec[4][1] is raw


def _in_node_input(objects_spec, k):
    # input lists/dicts keep the scalar convention they were split with
    spec = objects_spec[k]
    return spec[0] in ("list", "dict") and any(c[0] == "static" and isinstance(c[1], _PY_SCALARS)
                                               for c in (spec[1] if spec[0] == "list" else [v for _, v in spec[1]]))


def _meta_equal(a, b):
    if a is b:
        return True
    if a.keys() != b.keys():
        return False
    for k, x in a.items():
        y = b[k]
        if x is y:
            continue
        try:
            if not bool(x == y):
                return False
        except Exception:  # arrays and other values without a plain truth value
            return False
    return True


def _plain(spec):
    kind = spec[0]
    if kind in ("leaf", "static"):
        return True
    if kind == "obj":
        return False
    if kind == "tuple":
        return all(_plain(c) for c in spec[1])
    return all(_plain(c) for c in spec[2])


def _same_shape(new, old, out_leaves, in_leaves):
    """Whether a node/list/dict content spec is unchanged by the body."""
    if new[0] != old[0]:
        return False
    if new[0] == "node":
        a, b = new[4], old[4]
    elif new[0] == "list":
        a, b = tuple(enumerate(new[1])), tuple(enumerate(old[1]))
    else:
        a, b = new[1], old[1]
    if len(a) != len(b):
        return False
    return all(ka == kb and _same_child(ca, cb, out_leaves, in_leaves) for (ka, ca), (kb, cb) in zip(a, b))


def _same_child(a, b, out_leaves, in_leaves):
    if a[0] != b[0]:
        return False
    if a[0] == "obj":
        return a[1] == b[1]
    if a[0] == "leaf":
        return out_leaves[a[1]] is in_leaves[b[1]]
    if a[0] == "static":
        return a[1] is b[1]
    if a[0] == "tuple":
        return len(a[1]) == len(b[1]) and all(_same_child(x, y, out_leaves, in_leaves) for x, y in zip(a[1], b[1]))
    return a[1] == b[1] and all(_same_child(x, y, out_leaves, in_leaves) for x, y in zip(a[2], b[2]))


def _check_leak(v, raw, k, paths, ctx, default_where):
    for x in jax.tree.leaves(raw):
        if _adapter.is_tracer(x) and _adapter.is_escaped_tracer(x):
            name = _fmt_path(paths[k]) if paths is not None and k is not None and k < len(paths) else type(v).__name__
            where = (ctx.writes.get(id(v)) if ctx else None) or default_where
            raise TracerLeakError(
                f"{type(v).__name__} {name} (last written at {where}) holds a value traced inside a "
                "JAX transform (scan / cond / fori_loop / grad / vmap ...) that hijaxc did not "
                "rewrite, so its update cannot leave that transform.  Call the transform directly "
                "in the hijaxc.jit function (hijaxc threads state through it), or pass and return "
                "the state explicitly in the helper.")


def _check_value(v, raw, k=None, paths=None, ctx=None, default_where="<unknown>:0"):
    for x in jax.tree.leaves(raw):
        if not (isinstance(x, _ARRAY_TYPES) or _adapter.is_tracer(x)):
            name = _fmt_path(paths[k]) if paths is not None and k is not None and k < len(paths) else "(created inside)"
            where = (ctx.writes.get(id(v)) if ctx else None) or default_where
            raise InvalidValueError(
                f"{type(v).__name__} {name} holds a non-array value of type {type(x).__name__} "
                f"({x!r:.60}) at {where}; Variables threaded through a hijaxc step may only hold "
                "arrays (or pytrees of arrays).")


def _rebuild_abstract(plan, s, new_leaves):
    """``eval_shape``'s answer: the return value with ShapeDtypeStructs, caller state untouched."""
    import copy

    if plan.simple:
        return _rebuild_plain(plan.out_spec, new_leaves)
    return plan.apply(copy.deepcopy(s.objects), new_leaves)

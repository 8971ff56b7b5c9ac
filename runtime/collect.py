"""Collect: after the body ran on the trace's copies, describe them and the return value again and
produce the step's output leaves and its write-back plan (writeback.py)."""
import warnings
from typing import Any, Sequence

import jax

from . import _adapter, variables
from .errors import InvalidValueError, TracerLeakError
from .merge import Merged
from .reach import ARRAY_TYPES, is_stateful
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
    is_plain,
    same_content,
)
from .split import PY_SCALARS, fmt_path
from .variables import Ref
from .writeback import StructUpdate, Update, WriteBack

_STATE_KEYS = _adapter.NODE_STATE_KEYS
_warned_lines = set()


class _Collector:
    """One walk over the copies (input objects first, in input order, so that hijax Variables map
    to the first output leaves in order: the steady state writes them back with one ``map``)."""

    def __init__(self, merged: Merged, objects_spec: Sequence, ctx, where: str, paths):
        self.merged, self.objects_spec, self.ctx = merged, objects_spec, ctx
        self.where, self.paths = where, paths
        self.n_in = len(objects_spec)
        self.leaves, self.leaf_of = [], {}  # an array seen twice shares one output
        self.index = dict(merged.fresh_index)
        self.new_specs, self.visited, self.pending, self.specs = [], set(), [], {}

    def leaf(self, x):
        j = self.leaf_of.get(id(x))
        if j is None:
            j = self.leaf_of[id(x)] = len(self.leaves)
            self.leaves.append(x)
        return Leaf(j)

    def visit(self, x, in_node=False):
        if in_node and isinstance(x, PY_SCALARS):
            return Static(x)
        if is_stateful(x) or isinstance(x, (list, dict)):
            k = self.index.get(id(x))
            if k is None:
                k = self.index[id(x)] = self.n_in + len(self.new_specs)
                self.new_specs.append(None)
                self.pending.append((k, x, in_node))
            elif k < self.n_in and k not in self.visited:
                self.pending.append((k, x, in_node))
            self.visited.add(k)
            return Obj(k)
        if isinstance(x, ARRAY_TYPES) or _adapter.is_tracer(x):
            return self.leaf(x)
        if type(x) is tuple:
            return TupleOf(tuple(self.visit(c, in_node) for c in x))
        if x is None or isinstance(x, (str, type)) or callable(x):
            return Static(x)
        children, treedef = jax.tree_util.tree_flatten(x, is_leaf=lambda y: y is not x)
        if treedef.num_leaves == 1 and treedef.num_nodes == 1:
            return Static(x)
        return PytreeOf(treedef, tuple(self.visit(c, in_node) for c in children))

    def content(self, x, in_node):
        if _adapter.is_flax_hijax(x) or isinstance(x, _adapter.FlaxVariable):
            return self.variable(x)
        if isinstance(x, Ref):
            return RefSpec(self.leaf(x._value).index)
        if isinstance(x, list):
            return ListSpec(tuple(self.visit(c, in_node) for c in x))
        if isinstance(x, dict):
            return DictSpec(tuple((key, self.visit(x[key], in_node)) for key in list(x.keys())))
        items = _adapter.node_items(x)
        state_key = next((k for k in items if k in _STATE_KEYS), None)
        names = sorted((k for k in items if k not in _STATE_KEYS), key=str)
        return NodeSpec(type(x), state_key, items.get(state_key),
                        tuple((k, self.visit(items[k], True)) for k in names))

    def variable(self, x):
        k = self.index.get(id(x))
        old = self.objects_spec[k] if k is not None and k < self.n_in else None
        if _adapter.is_flax_hijax(x):
            cls, meta, raw = _adapter.flax_variable_parts(x)
            spec_type, mode = FlaxHijaxSpec, Mode(True, True)
        else:
            cls, meta, raw = type(x), dict(_adapter.get_metadata(x)), _adapter.get_raw(x)
            spec_type, mode = VarSpec, Mode(*variables.mode_of(x))
        if old is not None and _unchanged_static(old, raw):
            return spec_type(cls, meta, mode, Static(raw))
        if spec_type is VarSpec:
            _check_value(x, raw, self.name_of(k), self.where_of(x))
            _check_leak(x, raw, self.name_of(k, type(x).__name__), self.where_of(x))
        value = self.visit(raw) if isinstance(raw, Ref) else self.leaf(raw)
        return spec_type(cls, meta, mode, value)

    def name_of(self, k, default="(created inside)"):
        paths = self.paths
        return fmt_path(paths[k]) if paths is not None and k is not None and k < len(paths) \
            else default

    def where_of(self, x):
        return (self.ctx.writes.get(id(x)) if self.ctx else None) or self.where

    def drain(self):
        while self.pending:
            k, x, in_node = self.pending.pop(0)
            if k not in self.specs:
                self.specs[k] = self.content(x, in_node)

    def run(self, out):
        objs = self.merged.objects
        for k in range(self.n_in):
            self.index[id(objs[k])] = k
            self.visited.add(k)
            self.pending.append((k, objs[k], _in_node_input(self.objects_spec[k])))
        self.drain()  # the inputs first: their leaves come first, in input order
        out_spec = self.visit(out)
        self.drain()
        return out_spec


def collect(merged: Merged, objects_spec: Sequence, out: Any, ctx=None, *,
            default_where: str = "<unknown>:0", paths=None):
    """After the body: the output leaves and the write-back plan."""
    c = _Collector(merged, objects_spec, ctx, default_where, paths)
    out_spec = c.run(out)
    wb = WriteBack(c.n_in)
    for k in range(c.n_in):
        _plan_input(wb, k, c.specs[k], objects_spec[k], c)
    wb.new_specs = [c.specs[k] for k in range(c.n_in, c.n_in + len(c.new_specs))]
    wb.out_spec = out_spec
    wb.simple = not (wb.struct or wb.new_specs or wb.fvar_updates) and is_plain(out_spec)
    return c.leaves, wb


def _plan_input(wb: WriteBack, k: int, new, old, c: _Collector) -> None:
    """What the write-back does with input object ``k``: nothing, a value update, or a structural
    update (new attributes, metadata, a value that is now an object)."""
    in_leaves, out_leaves = c.merged.in_leaves, c.leaves
    if type(new) is RefSpec:
        wb.ref_updates.append(Update(k, new.leaf))
        return
    if type(new) not in (VarSpec, FlaxHijaxSpec):
        if not same_content(new, old, out_leaves, in_leaves):
            wb.struct.append(StructUpdate(k, new))
        return
    changed_meta = not _meta_equal(new.metadata, old.metadata)
    if type(new.value) is Static and _unchanged_static(old, new.value.value) and not changed_meta:
        return
    if type(new) is FlaxHijaxSpec:
        if type(new.value) is not Leaf:
            raise InvalidValueError(f"{c.name_of(k, 'a flax hijax Variable')} now holds a "
                                    "non-array value; only arrays can be written back to a flax "
                                    "hijax Variable")
        wb.fvar_updates.append(Update(k, new.value.index))
        return
    if not old.mode.hijax:
        same = (type(new.value) is Leaf and type(old.value) is Leaf
                and out_leaves[new.value.index] is in_leaves[old.value.index])
        if not same or changed_meta:
            _warn_lojax_write(c.merged.objects[k], c.where_of(c.merged.objects[k]))
        return
    if changed_meta or type(new.value) is not Leaf or type(old.value) is not Leaf:
        wb.struct.append(StructUpdate(k, new))
    elif old.mode.mutable or out_leaves[new.value.index] is not in_leaves[old.value.index]:
        wb.var_updates.append(Update(k, new.value.index))  # (an immutable one cannot change)


def _warn_lojax_write(v, where):
    if where in _warned_lines:
        return
    _warned_lines.add(where)
    path, _, line = where.rpartition(":")
    warnings.warn_explicit(
        f"hijaxc: a write to lojax {type(v).__name__} at {where} is dropped: lojax Variables are "
        "passed by value (convert with to_hijax / vars_as(..., hijax=True) to keep the change).",
        UserWarning, path or "<unknown>", int(line) if line.isdigit() else 0)


def _unchanged_static(old, raw) -> bool:
    """An input Variable still holding the very static value it came in with."""
    return type(old) in (VarSpec, FlaxHijaxSpec) and type(old.value) is Static \
        and old.value.value is raw


def _in_node_input(content) -> bool:
    """Input lists / dicts keep the scalar convention they were split with."""
    if type(content) not in (ListSpec, DictSpec):
        return False
    values = content.items if type(content) is ListSpec else [v for _, v in content.items]
    return any(type(c) is Static and isinstance(c.value, PY_SCALARS) for c in values)


def _meta_equal(a: dict, b: dict) -> bool:
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


def _check_leak(v, raw, name, where):
    for x in jax.tree.leaves(raw):
        if _adapter.is_tracer(x) and _adapter.is_escaped_tracer(x):
            raise TracerLeakError(
                f"{type(v).__name__} {name} (last written at {where}) holds a value traced "
                "inside a "
                "JAX transform (scan / cond / fori_loop / grad / vmap ...) that hijaxc did not "
                "rewrite, so its update cannot leave that transform.  Call the transform directly "
                "in the hijaxc.jit function (hijaxc threads state through it), or pass and return "
                "the state explicitly in the helper.")


def _check_value(v, raw, name, where):
    for x in jax.tree.leaves(raw):
        if not (isinstance(x, ARRAY_TYPES) or _adapter.is_tracer(x)):
            raise InvalidValueError(
                f"{type(v).__name__} {name} holds a non-array value of type {type(x).__name__} "
                f"({x!r:.60}) at {where}; Variables threaded through a hijaxc step may only hold "
                "arrays (or pytrees of arrays).")

"""Merge: rebuild fresh objects from specs and leaves (inside the trace, the copies the body runs
on; after the call, the objects the body created)."""
from typing import Any, Callable, NamedTuple, Sequence

from . import _adapter
from .spec import DictSpec, FlaxHijaxSpec, Leaf, ListSpec, NodeSpec, RefSpec, VarSpec, build
from .variables import new_ref


class Merged(NamedTuple):
    """Fresh copies of the split objects, owned by the current trace."""

    objects: list
    fresh_index: dict  # id(copy) -> object index
    roots: list
    in_leaves: Sequence


def value_of(value_spec, leaves: Sequence) -> Any:
    """A Variable's value (a leaf or a static value; never an object)."""
    return leaves[value_spec.index] if type(value_spec) is Leaf else value_spec.value


def new_object(content, leaves: Sequence) -> Any:
    """An empty object of the kind ``content`` describes (filled by ``fill``; Variables of flax's
    native hijax kind and Refs are complete at once: their value is never an object)."""
    t = type(content)
    if t is FlaxHijaxSpec:  # one pytree leaf inside the trace too, as outside
        return _adapter.new_flax_hijax(content.cls, value_of(content.value, leaves),
                                       content.metadata)
    if t is VarSpec:
        return object.__new__(content.cls)
    if t is RefSpec:
        return new_ref(leaves[content.leaf])
    if t is ListSpec:
        return []
    if t is DictSpec:
        return {}
    return _adapter.new_node(content.cls)


def fill(o: Any, content, leaves: Sequence, obj: Callable[[int], Any], fresh: bool = True) -> None:
    """Put ``content`` into ``o``: a new object (``fresh``) or the caller's own (the write-back of a
    structural change, which keeps a node's bookkeeping state)."""
    t = type(content)
    if t is VarSpec:
        value = build(content.value, leaves, obj)
        if fresh:
            _adapter.init_variable(o, value, dict(content.metadata))
        else:
            _adapter.set_metadata_dict(o, dict(content.metadata))
            _adapter.set_raw(o, value)
    elif t is ListSpec:
        o[:] = [build(c, leaves, obj) for c in content.items]
    elif t is DictSpec:
        o.clear()
        o.update((key, build(c, leaves, obj)) for key, c in content.items)
    elif t is NodeSpec:
        d = _adapter.node_items(o)
        kept = d.get(content.state_key) if content.state_key is not None else None
        d.clear()
        if content.state_key is not None:
            d[content.state_key] = (kept if kept is not None and not fresh
                                    else _adapter.fresh_node_state(content.state))
        for name, c in content.attributes:
            d[name] = build(c, leaves, obj)


def merge(root_specs: Sequence, objects_spec: Sequence, leaves: Sequence) -> Merged:
    """Fresh copies of every object, then the roots over them."""
    objects = [new_object(c, leaves) for c in objects_spec]  # all first: references resolve
    obj = objects.__getitem__
    for o, content in zip(objects, objects_spec):
        fill(o, content, leaves, obj)
    return Merged(objects, {id(o): k for k, o in enumerate(objects)},
                  [build(r, leaves, obj) for r in root_specs], leaves)

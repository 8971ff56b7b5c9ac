"""The static description of what a step threads: named specs, and the one walker that rebuilds
values from them.

``split`` (split.py) describes the caller's objects with these; ``merge`` (merge.py) rebuilds fresh
copies inside the trace; ``collect`` (collect.py) describes them again after the body ran; the
write-back (writeback.py) and the transforms rebuild values with ``build``.

Value specs (where a value sits):

    Leaf(index)               a plain array / number at ``leaves[index]``
    Static(value)             a non-array Python object, kept by reference (static structure)
    Obj(index)                stateful object ``index``: its content spec is ``objects_spec[index]``
    TupleOf(items)            a plain tuple of value specs
    PytreeOf(treedef, items)  any other pytree node, rebuilt with ``tree_unflatten``

Content specs (what a stateful object holds), one per object:

    VarSpec(cls, metadata, mode, value)        a hijaxc or lojax NNX Variable
    FlaxHijaxSpec(cls, metadata, mode, value)  a flax-native hijax Variable (flax's own API)
    RefSpec(leaf)                              a Ref whose value is ``leaves[leaf]``
    NodeSpec(cls, state_key, state, attributes)  a graph node (Module, Optimizer, Rngs, Pytree)
    ListSpec(items) / DictSpec(items)          a list / dict holding state
"""
from typing import Any, Callable, NamedTuple, Sequence, Union

import jax


class Mode(NamedTuple):
    hijax: bool
    mutable: bool


class Leaf(NamedTuple):
    index: int


class Static(NamedTuple):
    value: Any


class Obj(NamedTuple):
    index: int


class TupleOf(NamedTuple):
    items: tuple


class PytreeOf(NamedTuple):
    treedef: Any
    items: tuple


ValueSpec = Union[Leaf, Static, Obj, TupleOf, PytreeOf]


class VarSpec(NamedTuple):
    cls: type
    metadata: dict
    mode: Mode
    value: ValueSpec  # Leaf, Static (a non-array value), or Obj (a Ref box)


class FlaxHijaxSpec(NamedTuple):
    cls: type  # the lojax Variable type it stands for (``var_type``)
    metadata: dict
    mode: Mode
    value: ValueSpec  # Leaf or Static


class RefSpec(NamedTuple):
    leaf: int


class NodeSpec(NamedTuple):
    cls: type
    state_key: Any  # the node's bookkeeping attribute (``_pytree__state``), or None
    state: Any
    attributes: tuple  # ((name, value spec), ...) sorted by name


class ListSpec(NamedTuple):
    items: tuple


class DictSpec(NamedTuple):
    items: tuple  # ((key, value spec), ...) in insertion order


ContentSpec = Union[VarSpec, FlaxHijaxSpec, RefSpec, NodeSpec, ListSpec, DictSpec]
VARIABLE_SPECS = (VarSpec, FlaxHijaxSpec)


def build(spec: ValueSpec, leaves: Sequence, obj: Callable[[int], Any] = None) -> Any:
    """The value ``spec`` describes, over ``leaves``; ``obj(k)`` gives stateful object ``k``."""
    t = type(spec)
    if t is Leaf:
        return leaves[spec.index]
    if t is Static:
        return spec.value
    if t is Obj:
        return obj(spec.index)
    if t is TupleOf:
        return tuple(build(c, leaves, obj) for c in spec.items)
    return jax.tree_util.tree_unflatten(spec.treedef, [build(c, leaves, obj) for c in spec.items])


def is_plain(spec: ValueSpec) -> bool:
    """No stateful object in it (the value can be rebuilt from leaves alone)."""
    t = type(spec)
    if t is Leaf or t is Static:
        return True
    if t is Obj:
        return False
    return all(is_plain(c) for c in spec.items)


def children(content: ContentSpec) -> tuple:
    """``((key, value spec), ...)`` of a node / list / dict content spec."""
    t = type(content)
    if t is NodeSpec:
        return content.attributes
    if t is ListSpec:
        return tuple(enumerate(content.items))
    return content.items


def same_value(a: ValueSpec, b: ValueSpec, a_leaves: Sequence, b_leaves: Sequence) -> bool:
    """Whether two value specs describe the same value: the same objects, the very same leaves."""
    if type(a) is not type(b):
        return False
    t = type(a)
    if t is Obj:
        return a.index == b.index
    if t is Leaf:
        return a_leaves[a.index] is b_leaves[b.index]
    if t is Static:
        return a.value is b.value
    if t is PytreeOf and a.treedef != b.treedef:
        return False
    return len(a.items) == len(b.items) and all(
        same_value(x, y, a_leaves, b_leaves) for x, y in zip(a.items, b.items))


def same_content(new: ContentSpec, old: ContentSpec, new_leaves: Sequence,
                 old_leaves: Sequence) -> bool:
    """Whether a node / list / dict content spec is unchanged by the body."""
    if type(new) is not type(old):
        return False
    a, b = children(new), children(old)
    return len(a) == len(b) and all(
        ka == kb and same_value(ca, cb, new_leaves, old_leaves) for (ka, ca), (kb, cb) in zip(a, b))

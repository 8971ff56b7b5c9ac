"""``vars_as`` / ``with_vars`` / ``to_hijax`` / ``to_lojax`` / ``find_duplicates``.

The conversions return a *new* tree (graph nodes and Variables copied, sharing inside the tree
kept: an object reached twice in the input is one object in the output) whose selected Variables
carry the requested flags.  NNX Variables become hijaxc Variables of the matching type
(``nnx.Param`` -> ``hijaxc.Param``, a subclass of both), so NNX filters still select them.
Arrays are shared, not copied (they are immutable).
"""
from typing import Any

from flax.nnx import filterlib

from . import _adapter, variables
from .errors import InvalidValueError
from .merge import merge
from .spec import VARIABLE_SPECS, Leaf, Mode, Obj, RefSpec, VarSpec
from .split import find_duplicates, split  # noqa: F401  (find_duplicates: public, re-exported)
from .variables import FLAGS


def _selector(only):
    if only is Ellipsis or only is None:
        return lambda path, v: True
    return filterlib.to_predicate(only)


def vars_as(tree: Any, *, hijax: bool = None, ref: bool = None, mutable: bool = None,
            only=Ellipsis) -> Any:
    """A copy of ``tree`` whose Variables (those matched by the NNX filter ``only``) have the given
    flags; flags left as ``None`` keep each Variable's current value."""
    if ref and mutable is False:
        raise InvalidValueError("vars_as(ref=True, mutable=False): a Ref needs a mutable Variable")
    s = split([tree], ["tree"])
    select = _selector(only)
    specs, leaves = list(s.objects_spec), list(s.leaves)
    for k, content in enumerate(s.objects_spec):
        if type(content) in VARIABLE_SPECS and select(s.paths[k][1:], s.objects[k]):
            specs[k] = _converted(content, s.objects[k], specs, leaves,
                                  dict(hijax=hijax, ref=ref, mutable=mutable))
    return merge(s.root_specs, specs, leaves).roots[0]


def _converted(content, v, specs, leaves, flags):
    """``content`` (a Variable's spec) as a hijaxc Variable's with the requested flags; a Ref box
    it needs is appended to ``specs`` / ``leaves``."""
    meta = dict(content.metadata)
    if isinstance(v, variables.Variable):
        h0, r0, m0 = meta[FLAGS]
    else:
        (h0, m0), r0 = variables.mode_of(v), False
    h1 = h0 if flags["hijax"] is None else bool(flags["hijax"])
    r1 = r0 if flags["ref"] is None else bool(flags["ref"])
    m1 = m0 if flags["mutable"] is None else bool(flags["mutable"])
    meta.update(_adapter.FLAX_REQUIRED_METADATA)
    meta[FLAGS] = (h1, r1, m1)
    value = content.value
    if type(value) is Obj:  # currently a Ref box: unwrap to its value leaf
        value = Leaf(specs[value.index].leaf)
    if r1 and m1 and type(value) is Leaf:  # a fresh box for the copy
        specs.append(RefSpec(value.index))
        value = Obj(len(specs) - 1)
    return VarSpec(variables.hijaxc_type(content.cls), meta, Mode(h1, m1), value)


def with_vars(tree, **flags):
    """Same as ``vars_as``."""
    return vars_as(tree, **flags)


def to_hijax(tree, only=Ellipsis):
    """``vars_as(tree, hijax=True)``."""
    return vars_as(tree, hijax=True, only=only)


def to_lojax(tree, only=Ellipsis):
    """``vars_as(tree, hijax=False)``."""
    return vars_as(tree, hijax=False, only=only)

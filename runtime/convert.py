"""``vars_as`` / ``with_vars`` / ``to_hijax`` / ``to_lojax`` / ``find_duplicates``.

The conversions return a *new* tree (graph nodes and Variables copied, sharing inside the tree
kept: an object reached twice in the input is one object in the output) whose selected Variables
carry the requested flags.  NNX Variables become hijaxc Variables of the matching type
(``nnx.Param`` -> ``hijaxc.Param``, a subclass of both), so NNX filters still select them.
Arrays are shared, not copied (they are immutable).
"""
from flax import nnx

from . import _adapter, state, variables
from .errors import InvalidValueError
from .variables import FLAGS, Ref

find_duplicates = state.find_duplicates


def _selector(only):
    if only is Ellipsis or only is None:
        return lambda path, v: True
    try:
        from flax.nnx import filterlib

        pred = filterlib.to_predicate(only)
    except Exception:  # pragma: no cover
        pred = lambda path, v: isinstance(v, only)  # noqa: E731
    return pred


def vars_as(tree, *, hijax=None, ref=None, mutable=None, only=Ellipsis):
    """A copy of ``tree`` whose Variables (those matched by the NNX filter ``only``) have the given
    flags; flags left as ``None`` keep each Variable's current value."""
    s = state.split([tree], ["tree"])
    select = _selector(only)
    specs = list(s.objects_spec)
    leaves = list(s.leaves)
    for k, spec in enumerate(specs):
        if spec[0] not in ("var", "fvar"):
            continue
        v = s.objects[k]
        cls, meta = spec[1], dict(spec[2])
        path = s.paths[k][1:]
        if not select(path, v):
            continue
        if isinstance(v, variables.Variable):
            h0, r0, m0 = meta[FLAGS]
        else:
            h0, m0 = variables.mode_of(v)
            r0 = False
        h1 = h0 if hijax is None else bool(hijax)
        r1 = r0 if ref is None else bool(ref)
        m1 = m0 if mutable is None else bool(mutable)
        if ref and mutable is False:
            raise InvalidValueError("vars_as(ref=True, mutable=False): a Ref needs a mutable Variable")
        meta.update(_adapter.FLAX_REQUIRED_METADATA)
        meta[FLAGS] = (h1, r1, m1)
        value_spec = spec[4]
        if value_spec[0] == "obj":  # currently a Ref box: unwrap to its value leaf
            ref_spec = specs[value_spec[1]]
            value_spec = ("leaf", ref_spec[1])
        if r1 and m1:
            # a fresh box for the copy
            leaves.append(None)
            box_leaf = value_spec[1]
            specs.append(("ref", box_leaf))
            value_spec = ("obj", len(specs) - 1)
        specs[k] = ("var", variables.hijaxc_type(cls), meta, (h1, m1), value_spec)
    m = state.merge(s.root_specs, specs, leaves)
    return m.roots[0]


def with_vars(tree, **flags):
    """Same as ``vars_as``."""
    return vars_as(tree, **flags)


def to_hijax(tree, only=Ellipsis):
    """``vars_as(tree, hijax=True)``."""
    return vars_as(tree, hijax=True, only=only)


def to_lojax(tree, only=Ellipsis):
    """``vars_as(tree, hijax=False)``."""
    return vars_as(tree, hijax=False, only=only)

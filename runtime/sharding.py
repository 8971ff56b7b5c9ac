"""Shardings of state across steps (S11)."""
from typing import Any, NamedTuple, Sequence

import jax

from . import _adapter
from .reach import holds_state
from .spec import Leaf, VarSpec


class Pinned(NamedTuple):
    sharding: Any
    shape: tuple


def pinned_sharding(x) -> Any:
    """The sharding to keep for a state leaf: only an array split over several devices.  A
    replicated (or single-device) Variable takes whatever sharding the computation gives its new
    value, as under ``jax.jit`` and eagerly: updated with a sharded array, it comes out sharded."""
    sh = getattr(x, "sharding", None)
    if sh is None or _adapter.is_tracer(x):
        return None
    try:
        if len(sh.device_set) <= 1 or sh.is_fully_replicated:
            return None
    except Exception:
        return None
    return sh


def state_shardings(objects_spec: Sequence, leaves: Sequence) -> dict:
    """Input leaf index -> ``Pinned`` for every Variable holding a sharded array."""
    out = {}
    for content in objects_spec:
        if type(content) is VarSpec and type(content.value) is Leaf:
            x = leaves[content.value.index]
            sh = pinned_sharding(x)
            if sh is not None:
                out[content.value.index] = Pinned(sh, x.shape)
    return out


def keep(new_leaves: list, plan, objects_spec: Sequence, pinned: dict) -> None:
    """Lay each written-back Variable's new value out as it came in (where the shape is kept)."""
    for k, i in plan.var_updates:
        p = pinned.get(objects_spec[k].value.index)
        if p is not None and getattr(new_leaves[i], "shape", None) == p.shape:
            new_leaves[i] = _adapter.keep_sharding(new_leaves[i], p.sharding)


def key(leaves: Sequence):
    """The multi-device shardings of the leaves, for the trace cache key (None: none)."""
    out = None
    for i, x in enumerate(leaves):
        sh = pinned_sharding(x) if isinstance(x, jax.Array) else None
        if sh is not None:
            out = (out or ()) + ((i, sh),)
    return out


def constrain_tree(tree, sharding):
    """``in_shardings`` / ``out_shardings`` given to ``hijaxc.jit``: constraints on the user's
    plain-array arguments and result."""
    if isinstance(sharding, (tuple, list)) and isinstance(tree, (tuple, list)) \
            and len(tree) == len(sharding):
        return type(tree)(constrain_tree(t, s_) for t, s_ in zip(tree, sharding))
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding)
                        if hasattr(x, "shape") else x, tree)


def constrain_args(args: Sequence, in_shardings) -> list:
    shardings = in_shardings if isinstance(in_shardings, (tuple, list)) \
        else [in_shardings] * len(args)
    return [constrain_tree(a, sh) if sh is not None and not holds_state(a) else a
            for a, sh in zip(args, shardings)]

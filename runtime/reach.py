"""What counts as state, and whether a value holds some: the one reachability module.

``is_stateful(x)``: ``x`` itself is a Variable (hijaxc, NNX, flax-native hijax), a Ref, or a graph
node (Module, Optimizer, Rngs, Pytree).  ``holds_state(x)``: ``x`` is or holds one, through lists,
tuples, dicts and pytrees.  ``holds_caller_state(x, ctx)``: what code running in a trace must make
the step thread (discovery.py).
"""
from typing import Any

import jax
import numpy as np

from . import _adapter
from .variables import Ref

#: values that are plain data, never containers of state
ARRAY_TYPES = (jax.Array, np.ndarray, np.generic, bool, int, float, complex)


def is_stateful(x: Any) -> bool:
    return (isinstance(x, (_adapter.FlaxVariable, Ref)) or _adapter.is_graph_node(x)
            or _adapter.is_flax_hijax(x))


def _items(x, pytrees=True):
    """The values ``x`` holds as a container (or pytree), or None for a leaf."""
    if isinstance(x, (list, tuple)):
        return x
    if isinstance(x, dict):
        return x.values()
    if not pytrees or isinstance(x, ARRAY_TYPES) or x is None or isinstance(x, str):
        return None
    try:
        items = jax.tree_util.tree_leaves(x, is_leaf=lambda y: y is not x and is_stateful(y))
    except Exception:
        return None
    return None if len(items) == 1 and items[0] is x else items


def holds_state(x: Any, pytrees: bool = True, _seen: set = None) -> bool:
    """Whether ``x`` is, or holds through lists, tuples, dicts (and other pytrees, unless
    ``pytrees`` is False), a Variable, Ref or graph node."""
    if is_stateful(x):
        return True
    items = _items(x, pytrees)
    if items is None:
        return False
    seen = _seen if _seen is not None else set()
    if id(x) in seen:
        return False
    seen.add(id(x))
    return any(holds_state(y, pytrees, seen) for y in items)


def holds_caller_state(x: Any, ctx, outer=(), depth: int = 0) -> bool:
    """Whether ``x`` holds state of the caller of the step that ``ctx`` (a StepContext) describes:
    a Variable / Ref (or a Module / container holding one) that is neither a copy owned by that
    trace nor created in it, and that holds concrete values or is a copy owned by an enclosing
    step's trace (``outer`` contexts)."""
    k = id(x)
    if depth > 6 or k in ctx.fresh or k in ctx.created:
        return False
    if isinstance(x, (Ref, _adapter.FlaxVariable)):
        if any(k in o.fresh for o in outer):
            return True
        raw = x._value if isinstance(x, Ref) else _adapter.get_raw(x)
        return not any(_adapter.is_tracer(y) for y in jax.tree.leaves(raw))
    if _adapter.is_graph_node(x):
        if any(k in o.fresh for o in outer):
            return True
        items = _adapter.node_items(x).values()
        if not any(holds_state(y) for y in items):
            # a Module of the caller's holding no state yet: a new attribute is state (not one
            # made in this trace; where flax cannot tell, it is not counted)
            return _adapter.node_from_other_trace(x)
    else:
        items = _items(x)
    return items is not None and any(holds_caller_state(y, ctx, outer, depth + 1) for y in items)

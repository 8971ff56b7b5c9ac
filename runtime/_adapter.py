"""The one place that knows how JAX and Flax differ across the supported environments.

Everything here is feature detection (``hasattr``, signatures, slot names), never a version-string
check, and accessors the rest of the runtime uses instead of reaching into flax or JAX itself.
What hijaxc changes in flax (the structural-change epoch, flax 0.10's ``is_node``) lives in
flax_patches.py.

Differences absorbed here (see ../shared/SPEC.md):
- flax 0.10.4 keeps a Variable's value in the slot ``raw_value``; 0.11+ in ``_raw_value``.  We
  read and write that slot directly (no hooks, no trace-level check): it is the fastest access
  there is and the same for hijaxc and NNX Variables.
- Graph nodes are ``nnx.Object`` (0.10.4) or ``nnx.Pytree`` (0.11+); their per-object bookkeeping
  lives in ``_object__state`` / ``_pytree__state`` and must be created fresh for every rebuilt copy
  (it records the JAX trace the object belongs to).
- flax 0.12 has native hijax Variables (``HijaxVariable``); they are read and written through
  flax's own API.
- ``nnx.cached_partial`` leaves a static cache in flax's graph context on flax that has one.
"""
import inspect

import jax
from flax import nnx

try:  # flax 0.12
    from flax.nnx import graphlib as graph
except ImportError:  # flax 0.10 / 0.11
    from flax.nnx import graph
from flax.nnx import variablelib

FlaxVariable = nnx.Variable
GRAPH_BASE = getattr(nnx, "Pytree", None) or nnx.Object
NODE_STATE_KEYS = frozenset({"_object__state", "_pytree__state"})
#: flax's ``is_node`` (flax_patches.py teaches flax 0.10's that Variables are leaves)
GRAPH_MODULE = graph

_RAW_SLOT = "_raw_value" if "_raw_value" in FlaxVariable.__slots__ else "raw_value"
_raw = FlaxVariable.__dict__[_RAW_SLOT]
RAW_SLOT_DESCRIPTOR = _raw  # (runtime/_speedups.c calls it directly)
_meta = FlaxVariable.__dict__["_var_metadata"]
_trace = FlaxVariable.__dict__["_trace_state"]
#: ``get_raw(v)`` / ``set_raw(v, x)``: the value slot of any (lojax) NNX or hijaxc Variable.
get_raw = _raw.__get__
set_raw = _raw.__set__
get_metadata = _meta.__get__
set_metadata_dict = _meta.__set__
get_trace_state = _trace.__get__
set_trace_state = _trace.__set__

try:
    from flax.nnx.tracers import TraceState
except ImportError:  # pragma: no cover
    TraceState = None

#: flax's thread-local graph context, where ``nnx.cached_partial`` leaves a static cache for the
#: next NNX transform to consume (None where flax has no such cache).
NNX_GRAPH_CONTEXT = getattr(graph, "GRAPH_CONTEXT", None)
if not hasattr(NNX_GRAPH_CONTEXT, "tmp_static_cache"):
    NNX_GRAPH_CONTEXT = None

HijaxVariable = getattr(variablelib, "HijaxVariable", None)
HAS_FLAX_HIJAX = HijaxVariable is not None
#: flax >= 0.12 keeps ``hijax``/``ref`` in every Variable's metadata and reads them back.
FLAX_REQUIRED_METADATA = dict.fromkeys(getattr(FlaxVariable, "required_metadata", ()), False)


# --- Variables ------------------------------------------------------------------------------------
def new_trace_state(v) -> None:
    """Give Variable ``v`` a trace state owned by the current trace (so flax accepts writes)."""
    if TraceState is not None:
        _trace.__set__(v, TraceState())


def init_variable(v, value, metadata) -> None:
    """Fill the slots of a Variable made with ``object.__new__`` (as ``nnx.merge`` does)."""
    new_trace_state(v)
    _meta.__set__(v, metadata)
    _raw.__set__(v, value)


def is_flax_hijax(x) -> bool:
    """A flax-native hijax Variable (flax 0.12 ``var_defaults(hijax=True)``)."""
    return HAS_FLAX_HIJAX and isinstance(x, HijaxVariable)


def flax_variable_parts(v):
    """(type, metadata, value) of an NNX Variable, native hijax ones included."""
    if is_flax_hijax(v):
        return v.var_type, dict(v.get_metadata()), v.get_value()
    return type(v), _meta.__get__(v), _raw.__get__(v)


def new_flax_hijax(cls, value, metadata):
    """A flax-native hijax Variable of ``cls`` holding ``value`` (a tracer inside a trace: flax's
    own primitive makes it there), so that it stays one pytree leaf as it is outside."""
    lojax = object.__new__(cls)
    init_variable(lojax, value, dict(metadata))
    return variablelib._new_hijax_from_variable(lojax)


def flax_hijax_write(v, value) -> None:
    v.set_value(value)


#: flax 0.12: ``v[idx] = x`` is ``set_value(x, index=idx)``, whose full-replace test asks the value
#: for its ``sharding``; a tracer answers with an error message built from every equation traced
#: so far, so a trace writing N Variables costs O(N^2) there.
_SET_VALUE_HAS_INDEX = hasattr(FlaxVariable, "set_value") and (
    "index" in inspect.signature(FlaxVariable.set_value).parameters)


def write_whole_traced(v, value) -> bool:
    """``v[...] = value`` for a flax Variable whose value and the new one are tracers of the same
    shape and dtype: flax's own full replace, without its indexed path (see above).  False where
    it does not apply (then write ``v[...] = value`` as usual)."""
    if not _SET_VALUE_HAS_INDEX or is_flax_hijax(v) or not isinstance(v, FlaxVariable):
        return False
    raw = _raw.__get__(v)
    if not (is_tracer(raw) and is_tracer(value) and raw.shape == value.shape
            and raw.dtype == value.dtype):
        return False
    v.set_value(value)
    return True


def register_pytree(cls, flatten, flatten_with_keys, unflatten) -> None:
    try:
        jax.tree_util.register_pytree_with_keys(
            cls, flatten_with_keys=flatten_with_keys, unflatten_func=unflatten,
            flatten_func=flatten)
    except ValueError:  # already registered (flax 0.11+ registers Variable subclasses itself)
        pass


# --- graph nodes ----------------------------------------------------------------------------------
def is_graph_node(x) -> bool:
    return isinstance(x, GRAPH_BASE)


def node_items(node) -> dict:
    return vars(node)


def new_node(cls):
    return object.__new__(cls)


def fresh_node_state(state):
    """A new ``_object__state``/``_pytree__state`` like ``state`` but owned by the current trace."""
    return type(state)(False, getattr(state, "_is_setup", False))


def swap_node_state(node):
    """Give ``node`` a bookkeeping state owned by the current trace; returns what to restore."""
    d = node_items(node)
    for key in NODE_STATE_KEYS:
        if key in d:
            old = d[key]
            d[key] = fresh_node_state(old)
            return key, old
    return None


def node_from_other_trace(node) -> bool:
    """Whether flax can tell that graph node ``node`` was made outside the current trace (its
    bookkeeping records the trace it was created in).  flax 0.10 on JAX 0.4 cannot (its trace
    state says "valid" inside ``jax.jit`` for a node made outside): False there."""
    d = node_items(node)
    state = next((d[k] for k in NODE_STATE_KEYS if k in d), None)
    trace_state = getattr(state, "_trace_state", None)
    return trace_state is not None and not trace_state.is_valid()


#: Bumped by every attribute write/delete on a graph node (flax_patches.py) and by hijaxc's own
#: structural write-backs.  The steady-state call path compares it with the value it saw last time
#: instead of re-walking the object graph: equal epochs + the same root objects = the same
#: structure.
EPOCH = [0]

# --- optimizer ------------------------------------------------------------------------------------
OPTIMIZER_UPDATE_TAKES_MODEL = "model" in inspect.signature(nnx.Optimizer.update).parameters

# --- jax ------------------------------------------------------------------------------------------
try:  # the concrete array type, without creating an array: importing hijaxc must not start
    from jax._src.array import ArrayImpl  # JAX's backend (jax.distributed.initialize comes first)
except ImportError:  # pragma: no cover
    ArrayImpl = jax.Array
try:  # where JAX records the current trace (trace ancestry, for escaped tracers)
    from jax._src import core as _jax_core
except ImportError:  # pragma: no cover
    _jax_core = None
_AxisType = getattr(jax.sharding, "AxisType", None)
_reshard = getattr(jax.sharding, "reshard", None)
HAS_JIT_TRACE = hasattr(jax.jit(lambda: 0), "trace")
Tracer = jax.core.Tracer


def keep_sharding(x, sharding):
    """``x`` (traced) laid out as ``sharding``, by what the mesh's axis types allow: on a mesh of
    Explicit axes the sharding is part of the type, so a differing one is resharded (and a matching
    one left alone: ``with_sharding_constraint`` would be an assertion there); on Auto or mixed
    axes (and JAX without axis types) it is a sharding constraint for XLA's propagation."""
    types = tuple(getattr(getattr(sharding, "mesh", None), "axis_types", None) or ())
    if (_reshard is not None and _AxisType is not None and types
            and all(t == _AxisType.Explicit for t in types)):
        current = getattr(getattr(x, "aval", None), "sharding", None)
        if current is not None and getattr(current, "spec", None) == sharding.spec:
            return x
        return _reshard(x, sharding)
    return jax.lax.with_sharding_constraint(x, sharding)


def is_tracer(x) -> bool:
    return isinstance(x, Tracer)


def is_escaped_tracer(x) -> bool:
    """A tracer that belongs to no live trace (it leaked out of an inner ``jax`` transform).

    Where JAX records trace ancestry (``parent_trace``), a tracer of neither the current trace nor
    one of its ancestors has escaped; elsewhere only invalidated traces are recognised (and JAX's
    own UnexpectedTracerError, annotated by hijaxc, reports the rest)."""
    t = getattr(x, "_trace", None)
    if t is None:
        return False
    is_valid = getattr(t, "is_valid", None)
    if is_valid is not None and not is_valid():
        return True
    try:
        cur = _jax_core.trace_ctx.trace
    except Exception:
        return False
    if not hasattr(cur, "parent_trace"):
        return False
    p = cur
    while p is not None:
        if p is t:
            return False
        p = getattr(p, "parent_trace", None)
    return True

"""The one place that knows how JAX and Flax differ across the supported environments.

Everything here is feature detection (``hasattr``, signatures, slot names), never a version-string
check.  The rest of the runtime and the compiler ask this module and stay version-agnostic.

Differences absorbed here (see ../shared/SPEC.md):
- flax 0.10.4 keeps a Variable's value in the slot ``raw_value``; 0.11+ in ``raw_value`` /
  ``_raw_value``.  We read and write that slot directly (no hooks, no trace-level check): it is the
  fastest access there is and the same for hijaxc and NNX Variables.
- Graph nodes are ``nnx.Object`` (0.10.4) or ``nnx.Pytree`` (0.11+); their per-object bookkeeping
  lives in ``_object__state`` / ``_pytree__state`` and must be created fresh for every rebuilt copy
  (it records the JAX trace the object belongs to).
- ``nnx.Optimizer.update(grads)`` (0.10.4) vs ``update(model, grads)`` (0.11+).
- flax 0.12 has native hijax Variables (``HijaxVariable``); they are read and written through
  flax's own API.
- Variables are JAX pytrees in flax 0.11+ only; hijaxc's own Variables are pytrees everywhere.
"""
import inspect
import types

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

_RAW_SLOT = "_raw_value" if "_raw_value" in FlaxVariable.__slots__ else "raw_value"
_raw = FlaxVariable.__dict__[_RAW_SLOT]
_meta = FlaxVariable.__dict__["_var_metadata"]
_trace = FlaxVariable.__dict__["_trace_state"]
#: ``get_raw(v)`` / ``set_raw(v, x)``: the value slot of any (lojax) NNX or hijaxc Variable.
get_raw = _raw.__get__
set_raw = _raw.__set__
get_metadata = _meta.__get__
set_metadata_dict = _meta.__set__

#: Library functions whose job is to call the user's callables (``nnx.Sequential.__call__`` calls
#: its layers): compiled code converts them like user code, so that the layers they call are
#: converted too (runtime/callees.py) and a layer's own JAX transforms thread its state.
LIBRARY_COMBINATORS = tuple(
    f for f in (getattr(getattr(nnx, "Sequential", None), "__call__", None),)
    if isinstance(f, types.FunctionType))

#: flax's thread-local graph context, where ``nnx.cached_partial`` leaves a static cache for the
#: next NNX transform to consume (None where flax has no such cache).
NNX_GRAPH_CONTEXT = getattr(graph, "GRAPH_CONTEXT", None)
if not hasattr(NNX_GRAPH_CONTEXT, "tmp_static_cache"):
    NNX_GRAPH_CONTEXT = None

HijaxVariable = getattr(variablelib, "HijaxVariable", None)
HAS_FLAX_HIJAX = HijaxVariable is not None
#: flax >= 0.12 keeps ``hijax``/``ref`` in every Variable's metadata and reads them back.
FLAX_REQUIRED_METADATA = dict.fromkeys(getattr(FlaxVariable, "required_metadata", ()), False)

try:
    from flax.nnx.tracers import TraceState
except ImportError:  # pragma: no cover
    TraceState = None


def is_flax_hijax(x):
    """A flax-native hijax Variable (flax 0.12 ``var_defaults(hijax=True)``)."""
    return HAS_FLAX_HIJAX and isinstance(x, HijaxVariable)


def new_variable(cls, value, metadata):
    """A Variable of ``cls`` built without running ``__init__`` (as ``nnx.merge`` does)."""
    v = object.__new__(cls)
    if TraceState is not None:
        _trace.__set__(v, TraceState())
    _meta.__set__(v, metadata)
    _raw.__set__(v, value)
    return v


def flax_variable_parts(v):
    """(type, metadata, value) of an NNX Variable, native hijax ones included."""
    if is_flax_hijax(v):
        return v.var_type, dict(v.get_metadata()), v.get_value()
    return type(v), _meta.__get__(v), _raw.__get__(v)


def new_flax_hijax(cls, value, metadata):
    """A flax-native hijax Variable of ``cls`` holding ``value`` (a tracer inside a trace: flax's
    own primitive makes it there), so that it stays one pytree leaf as it is outside."""
    lojax = object.__new__(cls)
    if TraceState is not None:
        _trace.__set__(lojax, TraceState())
    _meta.__set__(lojax, dict(metadata))
    _raw.__set__(lojax, value)
    return variablelib._new_hijax_from_variable(lojax)


def flax_hijax_write(v, value):
    v.set_value(value)


def fresh_node_state(state):
    """A new ``_object__state``/``_pytree__state`` like ``state`` but owned by the current trace."""
    return type(state)(False, getattr(state, "_is_setup", False))


def is_graph_node(x):
    return isinstance(x, GRAPH_BASE)


def node_items(node):
    return vars(node)


def new_node(cls):
    return object.__new__(cls)


# --- pytree registration -------------------------------------------------------------------------
def register_pytree(cls, flatten, flatten_with_keys, unflatten):
    try:
        jax.tree_util.register_pytree_with_keys(
            cls, flatten_with_keys=flatten_with_keys, unflatten_func=unflatten, flatten_func=flatten)
    except ValueError:  # already registered (flax 0.11+ registers Variable subclasses itself)
        pass


# --- optimizer -----------------------------------------------------------------------------------
_OPT_UPDATE_TAKES_MODEL = "model" in inspect.signature(nnx.Optimizer.update).parameters


def optimizer_update(optimizer, model, grads):
    """``nnx.Optimizer.update`` in the form this flax version expects."""
    if _OPT_UPDATE_TAKES_MODEL:
        return optimizer.update(model, grads)
    # flax 0.10.4 wants a State of the gradients with exactly the parameters' tree structure
    wrt = getattr(optimizer, "wrt", nnx.Param)
    if is_graph_node(grads):
        grads = nnx.state(grads, wrt)
    params = nnx.state(optimizer.model, wrt)
    grads = jax.tree.unflatten(jax.tree.structure(params), jax.tree.leaves(grads))
    return optimizer.update(grads)


def make_optimizer(model, tx, wrt=nnx.Param):
    try:
        return nnx.Optimizer(model, tx, wrt=wrt)
    except TypeError:
        return nnx.Optimizer(model, tx)


OPTIMIZER_UPDATE_TAKES_MODEL = _OPT_UPDATE_TAKES_MODEL
#: flax 0.11+: ``nnx.merge(..., copy=True)``
MERGE_HAS_COPY = "copy" in inspect.signature(nnx.merge).parameters
#: flax 0.11+ Modules are JAX pytrees.
MODULES_ARE_PYTREES = bool(jax.tree_util.all_leaves([nnx.Module()]) is False) or hasattr(nnx, "Pytree")

# --- jax -----------------------------------------------------------------------------------------
_AxisType = getattr(jax.sharding, "AxisType", None)
_reshard = getattr(jax.sharding, "reshard", None)


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


HAS_JIT_TRACE = hasattr(jax.jit(lambda: 0), "trace")
HAS_HITYPES = hasattr(jax, "new_ref") and HAS_FLAX_HIJAX
Tracer = jax.core.Tracer


def is_tracer(x):
    return isinstance(x, Tracer)


# --- structural-change epoch ----------------------------------------------------------------------
#: Bumped by every attribute write/delete on a graph node (and by hijaxc's own structural
#: write-backs).  The steady-state call path compares it with the value it saw last time instead
#: of re-walking the object graph: equal epochs + the same root objects = the same structure.
EPOCH = [0]


def _install_epoch_hooks(cls):
    set_ = cls.__setattr__
    del_ = cls.__delattr__

    def __setattr__(self, name, value, _set=set_, _epoch=EPOCH):
        _epoch[0] += 1
        _set(self, name, value)

    def __delattr__(self, name, _del=del_, _epoch=EPOCH):
        _epoch[0] += 1
        _del(self, name)

    __setattr__.__wrapped__ = set_
    __delattr__.__wrapped__ = del_
    cls.__setattr__ = __setattr__
    cls.__delattr__ = __delattr__


if not getattr(GRAPH_BASE.__setattr__, "__wrapped__", None):
    _install_epoch_hooks(GRAPH_BASE)


def keep_variables_graph_leaves(variable_type):
    """flax 0.10.4 treats every registered JAX pytree as a graph node, but hijaxc Variables are
    pytrees *and* NNX Variables (graph leaves).  Where flax's ``is_node`` says yes to one of them,
    teach it that Variables are leaves (flax itself checks Variables first everywhere else)."""
    probe = object.__new__(variable_type)
    if getattr(graph, "is_node", None) is None or not graph.is_node(probe):
        return
    original = graph.is_node

    def is_node(x):
        if isinstance(x, FlaxVariable):
            return False
        return original(x)

    is_node.__wrapped__ = original
    graph.is_node = is_node


def is_escaped_tracer(x):
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
        from jax._src import core as _core

        cur = _core.trace_ctx.trace
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

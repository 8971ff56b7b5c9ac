"""What hijaxc changes in flax, in one place; ``install`` runs once, from runtime/__init__.py.

- Every attribute write or delete on a graph node bumps ``_adapter.EPOCH``, so the steady-state
  call (steady_state.py) knows that no structure changed without walking the graphs.
- flax 0.10.4 treats every registered JAX pytree as a graph node, but hijaxc Variables are pytrees
  *and* NNX Variables (graph leaves): its ``is_node`` learns that Variables are leaves.
"""
from . import _adapter


def _install_epoch_hooks(cls):
    set_ = cls.__setattr__
    del_ = cls.__delattr__

    def __setattr__(self, name, value, _set=set_, _epoch=_adapter.EPOCH):
        _epoch[0] += 1
        _set(self, name, value)

    def __delattr__(self, name, _del=del_, _epoch=_adapter.EPOCH):
        _epoch[0] += 1
        _del(self, name)

    __setattr__.__wrapped__ = set_
    __delattr__.__wrapped__ = del_
    cls.__setattr__ = __setattr__
    cls.__delattr__ = __delattr__


def _keep_variables_graph_leaves(variable_type):
    graph = _adapter.GRAPH_MODULE
    probe = object.__new__(variable_type)
    if getattr(graph, "is_node", None) is None or not graph.is_node(probe):
        return
    original = graph.is_node

    def is_node(x):
        if isinstance(x, _adapter.FlaxVariable):
            return False
        return original(x)

    is_node.__wrapped__ = original
    graph.is_node = is_node


def install(variable_type) -> None:
    """Install the patches (idempotent); ``variable_type``: hijaxc's Variable class."""
    base = _adapter.GRAPH_BASE
    if not getattr(base.__setattr__, "__wrapped__", None):
        _install_epoch_hooks(base)
    if not getattr(_adapter.GRAPH_MODULE.is_node, "__wrapped__", None):
        _keep_variables_graph_leaves(variable_type)

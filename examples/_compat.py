"""Small shims so the examples run unchanged on every supported flax/JAX version.

Everything is feature detection (``hasattr`` / ``inspect``), never a version-string check:

- ``Pytree``: ``nnx.Pytree`` (flax 0.11+) or ``nnx.Object`` (flax 0.10).
- ``normal`` / ``uniform``: ``rngs.normal(shape)`` / ``rngs.uniform(shape)`` exist only in newer
  flax; ``jax.random.*(rngs.params(), shape)`` works everywhere.
- ``make_optimizer`` / ``optimizer_update``: ``nnx.Optimizer(model, tx, wrt=...)`` and
  ``optimizer.update(model, grads)`` (flax 0.11+) vs ``nnx.Optimizer(model, tx)`` and
  ``optimizer.update(grads)`` (flax 0.10).
- ``set_eval``: put a Module in inference mode (BatchNorm running averages, no Dropout).
- ``fork_rngs`` / ``as_rngs``: ``rngs.fork(split=n)`` for a ``jax.vmap`` over layers (raw keys on
  flax 0.10, where ``Rngs`` is not a JAX pytree).
- ``MODULES_ARE_PYTREES``: whether a plain ``jax.vmap`` can return a Module (flax 0.11+).
- ``read``: ``v[...]``, or ``.value`` for flax 0.10's ``VariableState``.
"""

import inspect

import jax
from flax import nnx

#: flax 0.10 updates with ``optimizer.update(grads)`` (the model lives inside the optimizer)
_UPDATE_TAKES_MODEL = "model" in inspect.signature(nnx.Optimizer.update).parameters


def make_optimizer(model, tx, wrt=nnx.Param):
    """``nnx.Optimizer(model, tx, wrt=wrt)`` (every supported flax takes ``wrt``)."""
    return nnx.Optimizer(model, tx, wrt=wrt)


def optimizer_update(optimizer, model, grads):
    """``optimizer.update(model, grads)``; on flax 0.10 ``optimizer.update(grads)`` with the
    gradients as a State shaped like the optimizer's parameters."""
    if _UPDATE_TAKES_MODEL:
        return optimizer.update(model, grads)
    if isinstance(grads, nnx.Module):
        grads = nnx.state(grads, optimizer.wrt)
    params = nnx.state(optimizer.model, optimizer.wrt)
    return optimizer.update(jax.tree.unflatten(jax.tree.structure(params), jax.tree.leaves(grads)))


#: the base class of NNX graph-node pytrees (``nnx.Pytree`` from flax 0.11, ``nnx.Object`` before)
Pytree = getattr(nnx, "Pytree", None) or nnx.Object


def normal(rngs, shape, dtype=None):
    """``rngs.normal(shape)`` on every flax version."""
    return jax.random.normal(rngs.params(), shape, **({} if dtype is None else {"dtype": dtype}))


def uniform(rngs, shape, dtype=None):
    """``rngs.uniform(shape)`` on every flax version."""
    return jax.random.uniform(rngs.params(), shape, **({} if dtype is None else {"dtype": dtype}))


def set_eval(module):
    """Inference mode for a Module (``module.eval()``, or ``set_attributes`` where absent)."""
    if hasattr(module, "eval"):
        module.eval()
    else:  # pragma: no cover - every supported flax has Module.eval
        module.set_attributes(deterministic=True, use_running_average=True)
    return module


def fork_rngs(rngs, n):
    """``rngs.fork(split=n)``: ``n`` independent streams stacked along a leading axis, for
    ``jax.vmap``.  Newer flax spells it ``rngs.split(n)`` (``fork(split=)`` is deprecated there);
    flax 0.10 has neither and its ``Rngs`` is not a JAX pytree, so there this returns ``n`` raw
    keys and the vmapped function builds one ``nnx.Rngs`` per key (``as_rngs``)."""
    if "split" in vars(type(rngs)):  # a method, not the attribute-style stream ``rngs.split``
        return rngs.split(n)
    try:
        return rngs.fork(split=n)
    except TypeError:
        return jax.random.split(rngs(), n)


def as_rngs(rngs_or_key):
    """Inside a ``jax.vmap`` over ``fork_rngs(...)``: an ``nnx.Rngs`` either way."""
    return rngs_or_key if isinstance(rngs_or_key, nnx.Rngs) else nnx.Rngs(rngs_or_key)


#: flax 0.11+ Modules are JAX pytrees (so a plain ``jax.vmap`` can return one); flax 0.10's are not.
MODULES_ARE_PYTREES = len(jax.tree_util.tree_leaves(nnx.Module())) == 0


def read(v):
    """``v[...]``; flax 0.10's ``VariableState`` (what ``nnx.split`` returns there) has only
    ``.value``."""
    try:
        return v[...]
    except TypeError:
        return v.value

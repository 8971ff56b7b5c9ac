"""A corpus of real Flax NNX programs (toy examples and guides from the Flax repository), shrunk
to run in seconds on CPU with synthetic data.  Each module exposes

- ``SOURCE``: the file in the Flax repository the program comes from;
- ``run(jit)``: builds fresh objects, runs the program's step functions decorated with ``jit``
  (``lambda f: f`` for eager, ``nnx.jit``, ``hijaxc.jit``) for a few steps, and returns a dict of
  named results (losses, metrics, outputs) and the stateful objects (model, optimizer, metrics,
  rngs) whose complete state is compared;
- optionally ``skip_reason()`` (a string when this environment's flax/jax lacks an API the
  program needs), ``SLOW = True`` (runs only when ``CORPUS_SLOW=1`` or on the newest flax, see
  tests/test_corpus.py) and ``DEVICES = 8`` (run in a subprocess with 8 simulated CPU devices).

The names below feature-detect API differences between flax versions (never version strings).
"""

import inspect

from flax import nnx

#: flax >= 0.11: ``nnx.Optimizer(model, tx, wrt=...)`` and ``optimizer.update(model, grads)``;
#: flax 0.10.4: ``nnx.Optimizer(model, tx)`` and ``optimizer.update(grads)``.
OPT_WRT = "model" in inspect.signature(nnx.Optimizer.update).parameters
#: flax >= 0.11: Modules are pytrees (``nnx.Pytree``) and may hold plain ``jax.Array`` attributes.
PYTREE = getattr(nnx, "Pytree", None) or nnx.Object
#: flax >= 0.11: ``rngs.params.uniform(shape)`` / ``rngs.normal(shape)`` samplers on Rngs.
RNG_SAMPLERS = hasattr(nnx.Rngs, "normal")


def optimizer(model, tx, wrt=nnx.Param):
    """``nnx.Optimizer(model, tx, wrt=wrt)`` (flax 0.10.4's ``wrt`` defaults to Params)."""
    if OPT_WRT:
        return nnx.Optimizer(model, tx, wrt=wrt)
    return nnx.Optimizer(model, tx)


def missing(*names, where=nnx):
    """A skip reason naming the attributes of ``where`` this environment lacks, else None."""
    absent = [n for n in names if not hasattr(where, n)]
    if absent:
        return f"{getattr(where, '__name__', where)} lacks {', '.join(absent)} in this environment"
    return None


#: flax >= 0.11: ``nnx.merge(..., copy=True)``, needed to mutate merged Variables inside ``grad``
#: (flax 0.10.4 has no ``copy`` and always builds new Variables).
MERGE_COPY = "copy" in inspect.signature(nnx.merge).parameters


def merge(*args):
    """``nnx.merge(*args, copy=True)`` where flax has ``copy`` (see ``MERGE_COPY``)."""
    return nnx.merge(*args, copy=True) if MERGE_COPY else nnx.merge(*args)

"""Tracers that would leak out of a trace: stored into objects that are not state (S12), or
written into Variables the step does not thread (S6).

A closure's or global's list, dict or plain object that holds no Variable, Ref or Module is used
as it is while tracing (as under ``jax.jit``): appending to a list that counts traces is a Python
side effect of tracing.  Storing a *tracer* into one would leak it out of the trace, so each trace
snapshots those objects' shallow contents first, and afterwards looks for tracers that were not
there: if it finds one, it puts every snapshot back (S6) and raises ``TracerLeakError``."""
from typing import Any, NamedTuple

import jax

from . import _adapter
from .errors import TracerLeakError
from .variables import Ref


class Snapshot(NamedTuple):
    path: tuple
    obj: Any
    contents: Any  # a copy of the list / dict, or of the object's ``__dict__``


def take(free_statics) -> list:
    return [Snapshot(path, obj, _contents(obj)) for path, obj in free_statics]


def check(snapshots, where: str) -> None:
    """Raise ``TracerLeakError`` (after restoring every snapshot) if a tracer was stored into one
    of the snapshotted objects."""
    for snap in snapshots:
        before = {id(t) for t in _tracers(snap.contents)}
        new = [t for t in _tracers(_contents(snap.obj)) if id(t) not in before]
        if new:
            for s in snapshots:
                _restore(s)
            raise TracerLeakError(
                f"a traced value was stored into {type(snap.obj).__name__} {_fmt(snap.path)} while "
                f"tracing the hijaxc.jit function at {where}; it holds no Variable, Ref or Module, "
                "so it is not state and the value would leak out of the trace (as under jax.jit). "
                "Store it in a Variable, or return it.  The object was left as it was.")


def _contents(obj):
    if isinstance(obj, list):
        return list(obj)
    if isinstance(obj, dict):
        return dict(obj)
    return dict(vars(obj))


def _restore(snap):
    obj, contents = snap.obj, snap.contents
    if isinstance(obj, list):
        obj[:] = contents
    else:
        target = obj if isinstance(obj, dict) else vars(obj)
        target.clear()
        target.update(contents)


def _tracers(x, depth=0):
    if _adapter.is_tracer(x):
        yield x
    elif depth < 8 and isinstance(x, (list, tuple)):
        for y in x:
            yield from _tracers(y, depth + 1)
    elif depth < 8 and isinstance(x, dict):
        for y in x.values():
            yield from _tracers(y, depth + 1)


def _fmt(path):
    root = "global/closure" if path and path[0] == "closure" else str(path[0]) if path else "?"
    return root + "".join(f"[{k!r}]" for k in path[1:])


def restore_foreign_writes(ctx, merged) -> TracerLeakError:
    """Variables written during the trace that the step does not own (not threaded, not created
    inside) now hold tracers: put their values back (S6) and return the error for the first one
    (None if there is none)."""
    leaked = None
    for key, (v, old) in ctx.touched.items():
        if key in merged.fresh_index or key in ctx.created:
            continue
        if any(_adapter.is_tracer(x) for x in jax.tree.leaves(old)):
            continue  # it already held traced values: owned by this (or an inner) trace
        if isinstance(v, Ref):
            v._value = old
        else:
            _adapter.set_raw(v, old)
        if leaked is None:
            leaked = TracerLeakError(
                f"{type(v).__name__} written at {ctx.writes.get(key, '<unknown>')} is not threaded "
                "through this hijaxc.jit step (it is reached through a function hijaxc could not "
                "rewrite, e.g. one without source, or through another function's globals), so the "
                "traced value would leak. Pass it as an argument or close over it in the jitted "
                "function.  Its value was left unchanged.")
    return leaked

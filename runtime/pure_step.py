"""The pure step's two halves, called by generated code around the user's body:

    with trace.begin(leaves) as (args, kwargs, free):   # merge: fresh, trace-owned copies
        return trace.end(body(*args, **kwargs, ...))    # collect: new leaves + write-back plan

The plan rides out of ``jax.jit`` as static pytree aux data (``PlanBox``).
"""
import contextlib
import operator
import threading
from typing import Any, NamedTuple

import jax

from . import leaks, native, sharding, writelog
from .collect import collect
from .merge import merge

MISSING = object()  # an argument that is static (given to the body by ``begin``, not traced)


class StaticArg(NamedTuple):
    position: Any  # int, or None for one passed by keyword
    name: Any  # the keyword, or None
    value: Any


class PlanBox(tuple):
    """Carries the trace-time ``WriteBack`` plan out of ``jax.jit`` as static pytree aux data:
    ``(plan,)``, made by ``box(plan)``.  A tuple subclass, so that unflattening one on every call
    runs no ``__init__`` frame; and it must be a ``PlanBox`` (with a C type such as ``slice``
    instead, jax.jit's C++ dispatch gives up its fast path: ~200 µs more per call)."""

    __slots__ = ()
    plan = property(operator.itemgetter(0))  # (the steady state reads box[0])


_new_tuple = tuple.__new__


def box(plan) -> PlanBox:
    return _new_tuple(PlanBox, (plan,))


def _unflatten_box():
    """``unflatten(plan, children)``: the C ``Boxer`` where the extension is built (no Python
    frame on every call), else a lambda."""
    ext = native.module()
    if ext is not None:
        return ext.Boxer(PlanBox)
    return lambda plan, _: _new_tuple(PlanBox, (plan,))  # (not box(): one frame less per call)


jax.tree_util.register_pytree_node(PlanBox, lambda b: ((), b[0]), _unflatten_box())


class Trace:
    """What one trace of a pure step needs: the split's specs and the static arguments."""

    __slots__ = ("step", "root_specs", "objects_spec", "statics", "_tls", "paths",
                 "free_statics", "state_shardings")

    def __init__(self, step, s, statics):
        self.step = step
        self._tls = threading.local()  # two threads may trace the same structure at once
        self.paths = s.paths
        self.root_specs, self.objects_spec, self.statics = s.root_specs, s.objects_spec, statics
        self.state_shardings = sharding.state_shardings(s.objects_spec, s.leaves)
        names = step.free_names
        self.free_statics = [((names[p[1]],) + p[2:] if len(p) > 1 and p[1] < len(names) else p, o)
                             for p, o in s.free_statics]

    def __hash__(self):
        return id(self)

    def __eq__(self, other):
        return self is other

    @contextlib.contextmanager
    def begin(self, leaves):
        step = self.step
        step.stats["traces"] += 1
        with writelog.StepContext() as ctx:
            m = merge(self.root_specs, self.objects_spec, list(leaves))
            args, kwargs = self._with_statics(m.roots)
            tls = self._tls
            tls.ctx, tls.merged = ctx, m
            self._prepare_discovery(ctx, m)
            ok = False
            snapshots = leaks.take(self.free_statics)
            try:
                if step.user_in_shardings is not None:
                    args = sharding.constrain_args(args, step.user_in_shardings)
                yield tuple(args), {k: v for k, v in kwargs.items() if v is not MISSING}, m.roots[2]
                ok = True
            finally:
                leaked = leaks.restore_foreign_writes(ctx, m)
                tls.ctx = tls.merged = None
            if ok and leaked:
                raise leaked
            if ok:
                leaks.check(snapshots, step.where)

    def _with_statics(self, roots):
        args, kwargs = list(roots[0]), dict(roots[1])
        for st in self.statics:
            if st.position is not None:
                args[st.position] = st.value
            else:
                kwargs[st.name] = st.value
        return args, kwargs

    def _prepare_discovery(self, ctx, m):
        """What ``discovery.view`` needs: the caller's objects mapped to their copies."""
        step = self.step
        calling = getattr(step._calling, "objects", None)
        if calling is None and step._fast is not None:  # a retrace from the steady state
            calling = step._fast.objects
        if calling is not None and len(calling) == len(m.objects):
            ctx.copies = {id(o): c for o, c in zip(calling, m.objects)}
        ctx.fresh = m.fresh_index
        ctx.discover, ctx.owner = step._discover, step

    def end(self, out):
        step = self.step
        if step.user_out_shardings is not None:
            out = sharding.constrain_tree(out, step.user_out_shardings)
        tls = self._tls
        new_leaves, plan = collect(tls.merged, self.objects_spec, out, tls.ctx,
                                   default_where=step.where, paths=self.paths)
        if self.state_shardings:
            sharding.keep(new_leaves, plan, self.objects_spec, self.state_shardings)
        return new_leaves, box(plan)

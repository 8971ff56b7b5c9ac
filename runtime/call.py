"""The call path of a compiled function: split -> jax.jit(pure step) -> write back.

``Step`` owns one compiled user body and its caches.  The steady-state call is the module-level
fast path in ``Step.__call__``: when the stateful roots are the very objects of the previous call
and no graph node changed since (the global ``epoch``, bumped by every attribute write on a graph
node), it skips the graph walk entirely: it reads the cached Variables' raw values into a flat
list, calls the compiled step, and writes the outputs back by index.
"""
import contextlib
import functools
import sys
import threading
import warnings

import jax

from . import _adapter, context, state
from .errors import HijaxcError

_getrefcount = sys.getrefcount
_get_raw, _set_raw = _adapter.get_raw, _adapter.set_raw
MISSING = object()


class _PlanBox:
    """Carries the trace-time ``WriteBack`` plan out of ``jax.jit`` as static pytree aux data."""

    __slots__ = ("plan",)

    def __init__(self, plan):
        self.plan = plan


jax.tree_util.register_pytree_node(_PlanBox, lambda b: ((), b.plan), lambda plan, _: _PlanBox(plan))


class Entry:
    """One traced structure: the jitted pure step (per donation mask) and its specs."""

    __slots__ = ("pure", "jitted", "n_leaves", "var_leaf_idx", "split")

    def __init__(self, pure, split_):
        self.pure = pure
        self.jitted = {}
        self.split = split_


class Step:
    def __init__(self, pure_fn, name, *, free_names=(), free_cells=(), free_globals=None,
                 static_argnums=(), static_argnames=(), donate="auto", aliasing="share",
                 where="<unknown>", jit_kwargs=None):
        self.pure_fn = pure_fn  # generated: pure_fn(trace, *leaves) -> (new leaves, plan box)
        self.name = name
        self.free_names = tuple(free_names)
        self.free_cells = tuple(free_cells)  # cell or None (then looked up in free_globals)
        self.free_globals = free_globals
        self.static_argnums = tuple(static_argnums)
        self.static_argnames = tuple(static_argnames)
        self.donate = donate
        self.aliasing = aliasing
        self.where = where
        self.jit_kwargs = dict(jit_kwargs or {})
        self.cache = {}
        self.max_cache = 64
        self.stats = {"traces": 0, "splits": 0, "fast_calls": 0}
        self._lock = threading.Lock()

    # -- roots ---------------------------------------------------------------------------------
    def free_values(self):
        g = self.free_globals
        out = []
        for name, cell in zip(self.free_names, self.free_cells):
            if cell is not None:
                try:
                    out.append(cell.cell_contents)
                except ValueError:  # empty cell: not yet assigned; the body raises NameError
                    out.append(MISSING)
            else:
                v = g.get(name, MISSING)
                if v is MISSING:
                    v = getattr(__builtins__ if isinstance(__builtins__, dict) else __builtins__, name, MISSING) \
                        if not isinstance(__builtins__, dict) else __builtins__.get(name, MISSING)
                out.append(v)
        return out

    def _partition(self, args, kwargs):
        statics = []
        dyn_args = list(args)
        for i in self.static_argnums:
            i = i if i >= 0 else len(args) + i
            if i < len(args):
                statics.append(("a", i, args[i]))
                dyn_args[i] = MISSING
        dyn_kwargs = dict(kwargs)
        for n in self.static_argnames:
            if n in kwargs:
                statics.append(("k", n, kwargs[n]))
                dyn_kwargs[n] = MISSING
        return tuple(dyn_args), dyn_kwargs, tuple(statics)

    # -- the call ------------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        dyn_args, dyn_kwargs, statics = self._partition(args, kwargs)
        free = self.free_values()
        s = state.split([dyn_args, dyn_kwargs, tuple(free)], ["args", "kwargs", "closure"])
        self.stats["splits"] += 1
        if self.aliasing == "error":
            state.check_aliasing(s, self.where)
        try:
            skey = (s.key, tuple((a, b, _hashable(c)) for a, b, c in statics))
            hash(skey)
        except TypeError as e:
            raise HijaxcError(f"static argument of {self.name} is not hashable: {e}") from None
        with self._lock:
            entry = self.cache.get(skey)
            if entry is None:
                entry = Entry(self._make_pure(s, statics), s)
                if len(self.cache) >= self.max_cache:
                    self.cache.pop(next(iter(self.cache)))
                self.cache[skey] = entry
        leaves = s.leaves
        mask = self._donation_mask(s, leaves)
        jitted = entry.jitted.get(mask)
        if jitted is None:
            jitted = jax.jit(entry.pure, donate_argnums=mask, **self.jit_kwargs)
            entry.jitted[mask] = jitted
        new_leaves, box = jitted(*leaves)
        return box.plan.apply(s.objects, new_leaves)

    def _donation_mask(self, s, leaves):
        if self.donate is not True and self.donate != "auto":
            return ()
        if context.tracing():
            return ()
        out = []
        # a leaf held only by its Variable's slot (+ ``leaves`` list + getrefcount's argument)
        for k, spec in enumerate(s.objects_spec):
            if spec[0] == "var" and spec[3][0] and spec[4][0] == "leaf":
                i = spec[4][1]
                x = leaves[i]
                if isinstance(x, jax.Array) and not _adapter.is_tracer(x) and _getrefcount(x) <= 3:
                    out.append(i)
        return tuple(out)

    def _make_pure(self, s, statics):
        trace = Trace(self, s, statics)
        pure = functools.partial(self.pure_fn, trace)
        functools.update_wrapper(pure, self.pure_fn)
        return pure

    # -- introspection -------------------------------------------------------------------------
    def _prepare(self, args, kwargs):
        dyn_args, dyn_kwargs, statics = self._partition(args, kwargs)
        s = state.split([dyn_args, dyn_kwargs, tuple(self.free_values())], ["args", "kwargs", "closure"])
        return s, self._make_pure(s, statics)

    def lower(self, *args, **kwargs):
        s, pure = self._prepare(args, kwargs)
        return jax.jit(pure, **self.jit_kwargs).lower(*s.leaves)

    def trace(self, *args, **kwargs):
        s, pure = self._prepare(args, kwargs)
        return jax.jit(pure, **self.jit_kwargs).trace(*s.leaves)

    def eval_shape(self, *args, **kwargs):
        s, pure = self._prepare(args, kwargs)
        new_leaves, box = jax.eval_shape(pure, *s.leaves)
        return state._rebuild_abstract(box.plan, s, new_leaves)

    def make_jaxpr(self, *args, **kwargs):
        s, pure = self._prepare(args, kwargs)
        return jax.make_jaxpr(pure)(*s.leaves)

    def threaded(self, *args, **kwargs):
        """Which objects a call with these arguments threads (path -> type name)."""
        dyn_args, dyn_kwargs, statics = self._partition(args, kwargs)
        s = state.split([dyn_args, dyn_kwargs, tuple(self.free_values())],
                        ["args", "kwargs", "closure"])
        return s


def _hashable(x):
    try:
        hash(x)
        return x
    except TypeError:
        return ("id", id(x))


class Trace:
    """What one trace of a pure step needs: the split's specs and the static arguments.  The
    generated pure step calls ``begin`` (merge -> fresh objects) and ``end`` (collect)."""

    __slots__ = ("step", "root_specs", "objects_spec", "statics", "ctx", "merged")

    def __init__(self, step, s, statics):
        self.step = step
        self.root_specs, self.objects_spec, self.statics = s.root_specs, s.objects_spec, statics

    def __hash__(self):
        return id(self)

    def __eq__(self, other):
        return self is other

    @contextlib.contextmanager
    def begin(self, leaves):
        self.step.stats["traces"] += 1
        with context.StepContext() as ctx:
            m = state.merge(self.root_specs, self.objects_spec, list(leaves))
            args, kwargs, free = m.roots
            args, kwargs = list(args), dict(kwargs)
            for kind, k, v in self.statics:
                if kind == "a":
                    args[k] = v
                else:
                    kwargs[k] = v
            self.ctx, self.merged = ctx, m
            try:
                yield tuple(args), {k: v for k, v in kwargs.items() if v is not MISSING}, free
            finally:
                self.ctx = self.merged = None

    def end(self, out):
        new_leaves, plan = state.collect(self.merged, self.objects_spec, out, self.ctx)
        return new_leaves, _PlanBox(plan)

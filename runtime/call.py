"""The call path of a compiled function: split -> jax.jit(pure step) -> write back.

``Step`` owns one compiled user body and its caches.  The steady-state call is the module-level
fast path in ``Step.__call__``: when the stateful roots are the very objects of the previous call
and no graph node changed since (the global ``epoch``, bumped by every attribute write on a graph
node), it skips the graph walk entirely: it reads the cached Variables' raw values into a flat
list, calls the compiled step, and writes the outputs back by index.
"""
import collections
import contextlib
import functools
import itertools
import operator
import sys
import threading
import warnings

import jax

from . import _adapter, context, explain, leaks, state
from .errors import HijaxcError

_getrefcount = sys.getrefcount
_is_not = operator.is_not
_consume = collections.deque(maxlen=0).extend  # runs an iterator to its end in C
_EPOCH = _adapter.EPOCH
_MISS = object()
_ArrayImpl = _adapter.ArrayImpl
_LEAF_TYPES = frozenset({_ArrayImpl, int, float, bool, complex})
_get_raw, _set_raw = _adapter.get_raw, _adapter.set_raw
MISSING = object()
_MAX_DISCOVERED = 256  # places one step may learn (see Step._discover)


class _PlanBox:
    """Carries the trace-time ``WriteBack`` plan out of ``jax.jit`` as static pytree aux data."""

    __slots__ = ("plan",)

    def __init__(self, plan):
        self.plan = plan


jax.tree_util.register_pytree_node(_PlanBox, lambda b: ((), b.plan), lambda plan, _: _PlanBox(plan))


class Entry:
    """One traced structure: the jitted pure step (per donation mask) and its specs."""

    __slots__ = ("pure", "jitted")

    def __init__(self, pure):
        self.pure = pure
        self.jitted = {}  # donation mask -> jax.jit object


class Step:
    def __init__(self, pure_fn, name, *, free_names=(), free_cells=(), free_globals=None,
                 static_argnums=(), static_argnames=(), donate="auto", aliasing="share",
                 where="<unknown>", jit_kwargs=None, observe=None):
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
        # in/out shardings refer to the user's arguments and result, not to the flat step
        self.user_in_shardings = self.jit_kwargs.pop("in_shardings", None)
        self.user_out_shardings = self.jit_kwargs.pop("out_shardings", None)
        self.cache = {}
        self.max_cache = 64
        self.stats = {"traces": 0, "splits": 0, "fast_calls": 0}
        self._lock = threading.Lock()
        self._fast = None
        # Places (a function's globals + name, or a closure cell) where code this step calls found
        # state the compiled function does not name itself: a helper's own global model, say.
        # They are threaded like the function's own free names (S4); see context.view.
        self.extra = []
        self._extra_keys = set()
        self._calling = threading.local()  # the caller's split objects while the step traces
        self.observer = explain.Observer(self, observe or explain.Options())  # trace-time only

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
        for place in self.extra:
            if place[0] == "g":
                out.append(place[1].get(place[2], MISSING))
            else:
                try:
                    out.append(place[1].cell_contents)
                except ValueError:
                    out.append(MISSING)
        if context.tracing():
            # A step called while another traces: the enclosing steps' copies, not the caller's
            # originals; an original no enclosing step threads yet is learnt by the outermost one
            # (context.view), which traces again.
            out = [context.view(v, p) for v, p in zip(out, self._places())]
        return out

    def _places(self):
        g = self.free_globals
        return [("c", cell) if cell is not None else ("g", g, name)
                for name, cell in zip(self.free_names, self.free_cells)] + list(self.extra)

    def _discover(self, place):
        """Called while tracing: thread ``place`` from now on.  True if it is new (retrace)."""
        key = ("g", id(place[1]), place[2]) if place[0] == "g" else ("c", id(place[1]))
        with self._lock:
            if key in self._extra_keys or len(self.extra) >= _MAX_DISCOVERED:
                return False
            self._extra_keys.add(key)
            self.extra.append(place)
            self._fast = None
        return True

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
        try:
            fast = self._fast
            if fast is not None and fast.epoch == _EPOCH[0]:
                try:
                    out = fast.call(self, args, kwargs)
                except context.Rediscover as e:  # a retrace found new state: the slow path threads it
                    if e.step is not self:
                        raise
                    out = _MISS
                if out is not _MISS:
                    return out
            return self._slow_call(args, kwargs)
        except Exception as e:
            _note_user_lines(e)
            raise

    def _slow_call(self, args, kwargs):
        while True:
            n = len(self.extra)
            try:
                return self._slow_call_once(args, kwargs)
            except context.Rediscover as e:
                if e.step is not self:
                    raise  # an enclosing step learnt something: it retraces (and calls us again)
                if len(self.extra) == n:  # (cannot happen: a discovery always adds a place)
                    raise HijaxcError(f"{self.name}: state discovery did not converge") from None

    def _slow_call_once(self, args, kwargs):
        dyn_args, dyn_kwargs, statics = self._partition(args, kwargs)
        free = self.free_values()
        s = state.split([dyn_args, dyn_kwargs, tuple(free)], ["args", "kwargs", "closure"], scalars_static=("closure",))
        self.stats["splits"] += 1
        if self.aliasing == "error":
            state.check_aliasing(s, self.where)
        try:
            skey = (s.key, tuple((a, b, _hashable(c)) for a, b, c in statics), _shardings_key(s.leaves))
            hash(skey)
        except TypeError as e:
            raise HijaxcError(f"static argument of {self.name} is not hashable: {e}") from None
        with self._lock:
            entry = self.cache.pop(skey, None)  # re-inserted below: least recently used goes first
            if entry is not None:
                self.cache[skey] = entry
            else:
                entry = Entry(self._make_pure(s, statics))
                if len(self.cache) >= self.max_cache:
                    self.cache.pop(next(iter(self.cache)))
                self.cache[skey] = entry
        leaves = s.leaves
        mask = self._donation_mask(s, leaves)
        jitted = entry.jitted.get(mask)
        if jitted is None:
            jitted = entry.jitted[mask] = _jitted_for(entry, mask, self.jit_kwargs)
        epoch = _EPOCH[0]
        calling = self._calling
        calling.objects = s.objects
        try:
            new_leaves, box = jitted(*leaves)
        except context.Rediscover:
            with self._lock:
                if self.cache.get(skey) is entry:
                    del self.cache[skey]
            raise
        except Exception as e:
            _note_lost_donation(e, self.name, leaves, mask)
            raise
        finally:
            calling.objects = None
        del leaves
        out = box.plan.apply(s.objects, new_leaves)
        if not context.tracing() and not box.plan.struct:
            self._fast = Fast.record(self, s, entry, box.plan, args, kwargs, statics, epoch)
        return out

    def _donation_mask(self, s, leaves):
        if self.donate is not True and self.donate != "auto":
            return ()
        if context.tracing():
            return ()
        out = []
        # a leaf held only by its Variable's slot (+ ``leaves`` list + getrefcount's argument)
        for k, spec in enumerate(s.objects_spec):
            if spec[0] == "var" and spec[3][0] and spec[3][1] and spec[4][0] == "leaf":
                i = spec[4][1]
                # no local name for the leaf: it would be one more reference
                if type(leaves[i]) is _ArrayImpl and _getrefcount(leaves[i]) <= 3:
                    out.append(i)
        return tuple(out)

    def _make_pure(self, s, statics):
        trace = Trace(self, s, statics)
        pure = functools.partial(self.pure_fn, trace)
        functools.update_wrapper(pure, self.pure_fn)
        return self.observer.wrap(pure, trace)  # explains retraces; runs only while tracing

    # -- introspection -------------------------------------------------------------------------
    def _prepare(self, args, kwargs):
        dyn_args, dyn_kwargs, statics = self._partition(args, kwargs)
        s = state.split([dyn_args, dyn_kwargs, tuple(self.free_values())], ["args", "kwargs", "closure"], scalars_static=("closure",))
        return s, self._make_pure(s, statics)

    def _introspect(self, run, args, kwargs):
        """``run(split, pure)`` with the same state discovery as a call (retraced when code the
        step calls reaches new state)."""
        while True:
            s, pure = self._prepare(args, kwargs)
            self._calling.objects = s.objects
            try:
                return run(s, pure)
            except context.Rediscover as e:
                if e.step is not self:
                    raise
                continue
            finally:
                self._calling.objects = None

    def lower(self, *args, **kwargs):
        return self._introspect(lambda s, pure: jax.jit(pure, **self.jit_kwargs).lower(*s.leaves),
                                args, kwargs)

    def trace(self, *args, **kwargs):
        return self._introspect(lambda s, pure: jax.jit(pure, **self.jit_kwargs).trace(*s.leaves),
                                args, kwargs)

    def eval_shape(self, *args, **kwargs):
        def run(s, pure):
            new_leaves, box = jax.eval_shape(pure, *s.leaves)
            return state._rebuild_abstract(box.plan, s, new_leaves)

        return self._introspect(run, args, kwargs)

    def make_jaxpr(self, *args, **kwargs):
        return self._introspect(lambda s, pure: jax.make_jaxpr(pure)(*s.leaves), args, kwargs)

    def threaded(self, *args, **kwargs):
        """Which objects a call with these arguments threads (path -> type name)."""
        dyn_args, dyn_kwargs, statics = self._partition(args, kwargs)
        s = state.split([dyn_args, dyn_kwargs, tuple(self.free_values())],
                        ["args", "kwargs", "closure"], scalars_static=("closure",))
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

    __slots__ = ("step", "root_specs", "objects_spec", "statics", "_tls", "paths",
                 "free_statics", "state_shardings")

    def __init__(self, step, s, statics):
        self.step = step
        self._tls = threading.local()  # two threads may trace the same structure at once
        self.paths = s.paths
        # S11: a Variable holding a sharded (not replicated) array keeps that sharding
        self.state_shardings = {}
        for spec in s.objects_spec:
            if spec[0] == "var" and spec[4][0] == "leaf":
                sh = _pinned_sharding(s.leaves[spec[4][1]])
                if sh is not None:
                    self.state_shardings[spec[4][1]] = (sh, s.leaves[spec[4][1]].shape)
        self.root_specs, self.objects_spec, self.statics = s.root_specs, s.objects_spec, statics
        names = step.free_names
        self.free_statics = [((names[p[1]],) + p[2:] if len(p) > 1 and p[1] < len(names) else p, o)
                             for p, o in s.free_statics]

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
            tls = self._tls
            tls.ctx, tls.merged = ctx, m
            calling = getattr(self.step._calling, "objects", None)
            if calling is None and self.step._fast is not None:  # a retrace from the fast path
                calling = self.step._fast.objects
            if calling is not None and len(calling) == len(m.objects):
                ctx.copies = {id(o): c for o, c in zip(calling, m.objects)}
            ctx.fresh = m.fresh_index
            ctx.discover, ctx.owner = self.step._discover, self.step
            ok = False
            snapshots = leaks.take(self.free_statics)
            try:
                ins = self.step.user_in_shardings
                if ins is not None:
                    args = [_constrain_tree(a, sh) if sh is not None and not _has_state(a) else a
                            for a, sh in zip(args, ins if isinstance(ins, (tuple, list)) else [ins] * len(args))]
                yield tuple(args), {k: v for k, v in kwargs.items() if v is not MISSING}, free
                ok = True
            finally:
                leaked = _restore_foreign_writes(ctx, m)
                tls.ctx = tls.merged = None
            if ok and leaked:
                raise leaked
            if ok:
                leaks.check(snapshots, self.step.where)

    def end(self, out):
        if self.step.user_out_shardings is not None:
            out = _constrain_tree(out, self.step.user_out_shardings)
        tls = self._tls
        new_leaves, plan = state.collect(tls.merged, self.objects_spec, out, tls.ctx,
                                         default_where=self.step.where, paths=self.paths)
        if self.state_shardings:
            for k, i in plan.var_updates:
                pinned = self.state_shardings.get(self.objects_spec[k][4][1])
                if pinned is not None and getattr(new_leaves[i], "shape", None) == pinned[1]:
                    new_leaves[i] = _adapter.keep_sharding(new_leaves[i], pinned[0])
        return new_leaves, _PlanBox(plan)


class Fast:
    """The steady-state call: valid while the epoch is unchanged and the roots are the same
    objects.  Reads Variables' raw values by index, calls the jitted step, writes back by index.

    Everything per call is a C-level ``map`` over precomputed lists where the layout allows it (it
    does for the usual ``step(model, optimizer, x, y)``): the Variables' leaves come first, in
    order, then the plain arguments; the written-back leaves come first in the outputs."""

    __slots__ = ("epoch", "n_args", "kw_keys", "checks", "leaf_pos", "var_slots", "ref_slots",
                 "n_leaves", "entry", "plan", "updates", "objects", "statics", "free",
                 "dicts", "lists", "container_sig", "donatable", "ref_updates_", "var_objs",
                 "contiguous", "update_objs", "updates_in_order", "full_mask", "donate_prefix",
                 "static_vars")

    @classmethod
    def record(cls, step, s, entry, plan, args, kwargs, statics, epoch):
        # only the simple, common shape: every argument is a stateful object or a plain leaf
        f = cls()
        vals = tuple(args) + tuple(kwargs.values())
        if s.root_specs[1][0] != "obj":
            return None
        kwargs_k = s.root_specs[1][1]
        arg_specs = list(s.root_specs[0][1]) + [c for _, c in s.objects_spec[kwargs_k][1]]
        if len(arg_specs) != len(vals):
            return None
        f.checks, f.leaf_pos = [], []
        for i, (v, spec) in enumerate(zip(vals, arg_specs)):
            if spec[0] == "obj" and not isinstance(v, (list, dict)):
                f.checks.append((i, v))
            elif spec[0] == "leaf" and type(v) in _LEAF_TYPES:
                f.leaf_pos.append((spec[1], i))
            elif spec[0] == "static" and statics:
                continue
            else:
                return None
        free_spec = s.root_specs[2]
        f.free = []
        for v, spec in zip(step.free_values(), free_spec[1]):
            if spec[0] == "leaf":
                return None
            f.free.append(v)
        f.var_slots, f.ref_slots, f.donatable = [], [], []
        f.dicts, f.lists, f.static_vars = [], [], []
        for k, spec in enumerate(s.objects_spec):
            o = s.objects[k]
            if spec[0] == "var" and spec[4][0] == "static":  # S12: re-checked, by identity
                f.static_vars.append((o, spec[4][1]))
            elif spec[0] == "var" and spec[4][0] == "leaf":
                f.var_slots.append((spec[4][1], o))
                if spec[3][0] and spec[3][1]:  # hijax and mutable: written back
                    f.donatable.append(spec[4][1])
            elif spec[0] == "ref":
                f.ref_slots.append((spec[1], o))
            elif spec[0] == "fvar":
                return None
            elif spec[0] == "list":
                f.lists.append(o)
            elif spec[0] == "dict" and k != kwargs_k:
                f.dicts.append(o)
        f.container_sig = _container_sig(f.dicts, f.lists) if f.dicts or f.lists else None
        f.epoch, f.n_args, f.kw_keys = epoch, len(args), tuple(kwargs)
        f.n_leaves, f.entry, f.plan, f.objects, f.statics = len(s.leaves), entry, plan, s.objects, statics
        f.updates = [(s.objects[k], i) for k, i in plan.var_updates]
        f.ref_updates_ = [(s.objects[k], i) for k, i in plan.ref_updates]
        # layout fast paths
        nv = len(f.var_slots)
        f.var_objs = [o for _, o in f.var_slots]
        f.contiguous = ([i for i, _ in f.var_slots] == list(range(nv)) and not f.ref_slots
                        and sorted(i for i, _ in f.leaf_pos) == list(range(nv, f.n_leaves)))
        f.leaf_pos.sort()
        f.update_objs = [o for o, _ in f.updates]
        f.updates_in_order = [i for _, i in f.updates] == list(range(len(f.updates)))
        f.full_mask = tuple(f.donatable)
        f.donate_prefix = f.donatable == list(range(len(f.donatable)))
        return f

    def call(self, step, args, kwargs):
        if len(args) != self.n_args or (kwargs and tuple(kwargs) != self.kw_keys):
            return _MISS
        vals = args + tuple(kwargs.values()) if kwargs else args
        for i, o in self.checks:
            if vals[i] is not o:
                return _MISS
        if self.statics and step._partition(args, kwargs)[2] != self.statics:
            return _MISS
        if self.free:
            for a, b in zip(step.free_values(), self.free):
                if a is not b:
                    return _MISS
        for o, x in self.static_vars:
            if _get_raw(o) is not x:
                return _MISS
        if self.container_sig is not None and not _same_containers(self.dicts, self.lists,
                                                                   self.container_sig):
            return _MISS
        if self.contiguous:
            leaves = list(map(_get_raw, self.var_objs))
            for _, p in self.leaf_pos:
                x = vals[p]
                if type(x) not in _LEAF_TYPES:
                    return _MISS
                leaves.append(x)
        else:
            leaves = [None] * self.n_leaves
            for i, o in self.var_slots:
                leaves[i] = _get_raw(o)
            for i, o in self.ref_slots:
                leaves[i] = o._value
            for i, p in self.leaf_pos:
                x = vals[p]
                if type(x) not in _LEAF_TYPES:
                    return _MISS
                leaves[i] = x
        mask = ()
        donatable = self.donatable
        if donatable and (step.donate == "auto" or step.donate is True):
            # a leaf held only by its Variable's slot (+ ``leaves`` + ``picked`` + the argument)
            picked = leaves[:len(donatable)] if self.donate_prefix else [leaves[i] for i in donatable]
            if max(map(_getrefcount, picked)) <= 4:
                mask = self.full_mask
            else:
                mask = tuple(i for i, c in zip(donatable, map(_getrefcount, picked)) if c <= 4)
            del picked
        entry = self.entry
        jitted = entry.jitted.get(mask)
        if jitted is None:
            jitted = entry.jitted[mask] = _jitted_for(entry, mask, step.jit_kwargs)
        try:
            new_leaves, box = jitted(*leaves)
        except Exception as e:
            _note_lost_donation(e, step.name, leaves, mask)
            raise
        del leaves
        step.stats["fast_calls"] += 1
        plan = box.plan
        if plan is self.plan:
            if self.updates_in_order:
                _consume(map(_set_raw, self.update_objs, new_leaves))
            else:
                for o, i in self.updates:
                    _set_raw(o, new_leaves[i])
            for o, i in self.ref_updates_:
                o._value = new_leaves[i]
            if plan.simple:
                return state._rebuild_plain(plan.out_spec, new_leaves)
        return plan.apply(self.objects, new_leaves)


def _jitted_for(entry, mask, jit_kwargs):
    """The compiled step for a donation mask: reuse one that donates a subset of ``mask`` (always
    safe, saves a compile when e.g. the first call could donate less than later ones)."""
    best = None
    allowed = set(mask)
    for m, j in entry.jitted.items():
        if (best is None or len(m) > len(best[0])) and allowed.issuperset(m):
            best = (m, j)
    if best is not None:
        return best[1]
    return jax.jit(entry.pure, donate_argnums=mask, **jit_kwargs)


def _container_sig(dicts, lists):
    """What the plain lists/dicts in a graph hold (they change without ``__setattr__``): lengths,
    keys, and the values themselves.  The values are kept (compared by identity), not their ids,
    so that a replaced value cannot be mistaken for a new one that reuses its address."""
    chain = itertools.chain.from_iterable
    return (list(map(len, dicts)), list(chain(dicts)), list(chain(map(dict.values, dicts))),
            list(map(len, lists)), list(chain(lists)))


def _same_containers(dicts, lists, sig):
    """``dicts``/``lists`` still hold what ``sig`` recorded (one C-level pass per part: the fast
    path checks the optimizer's ~260 state dicts of a 32-block model on every call)."""
    chain = itertools.chain.from_iterable
    # equal lengths first, so that the identity walks below compare value by value
    return (list(map(len, dicts)) == sig[0] and list(map(len, lists)) == sig[3]
            and list(chain(dicts)) == sig[1]
            and not any(map(_is_not, chain(map(dict.values, dicts)), sig[2]))
            and not any(map(_is_not, chain(lists), sig[4])))


def _note_user_lines(e):
    """Add the user's ``file:line`` for every generated frame in the traceback (PEP 678 notes),
    so the error points at the user's source, not only at the generated file."""
    if getattr(e, "_hijaxc_noted", False) or not hasattr(e, "add_note"):
        return
    from . import location

    lines = []
    tb = e.__traceback__
    while tb is not None:
        mapped = location._ORIGINS.get(tb.tb_frame.f_code.co_filename)
        if mapped:
            where = mapped.get(tb.tb_lineno)
            if where:
                src = _source_line(where)
                lines.append(f'  File "{where.rsplit(":", 1)[0]}", line {where.rsplit(":", 1)[1]}, '
                             f"in {tb.tb_frame.f_code.co_name} (compiled by hijaxc)" + (f"\n    {src}" if src else ""))
        tb = tb.tb_next
    if lines:
        e.add_note("hijaxc: raised while running compiled user code:\n" + "\n".join(lines))
    if type(e).__name__ == "UnexpectedTracerError":
        e.add_note("hijaxc: a Variable probably kept a value traced inside a JAX transform that "
                   "hijaxc did not rewrite (e.g. a helper defined elsewhere calling jax.lax.scan); "
                   "call the transform in the hijaxc.jit function itself, or pass and return the "
                   "state explicitly.")
    try:
        e._hijaxc_noted = True
    except Exception:
        pass


def _note_lost_donation(e, name, leaves, mask):
    """A step that fails while executing, after XLA consumed its donated inputs, cannot restore
    them: the Variables that held them now hold deleted arrays (S6 yields to S9 here; there is no
    copy to go back to without doubling the state's memory).  Say so, and how to avoid it, rather
    than leave the next read to fail with "Array has been deleted"."""
    lost = [i for i in mask if type(leaves[i]) is _ArrayImpl and leaves[i].is_deleted()]
    if lost and hasattr(e, "add_note"):
        e.add_note(f"hijaxc: {name} failed while executing, after donating the buffers of {len(lost)} "
                   "Variable(s) it writes back (donate='auto'): they now hold deleted arrays and "
                   "their state is lost.  Use hijaxc.jit(..., donate=False) where a failure at run "
                   "time must leave the state intact.")


def _source_line(where):
    import linecache

    path, _, line = where.rpartition(":")
    try:
        return linecache.getline(path, int(line)).strip()
    except ValueError:
        return ""


def _pinned_sharding(x):
    """The sharding to keep for a state leaf (S11): only an array split over several devices.  A
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


def _shardings_key(leaves):
    out = None
    for i, x in enumerate(leaves):
        sh = _pinned_sharding(x) if isinstance(x, jax.Array) else None
        if sh is not None:
            out = (out or ()) + ((i, sh),)
    return out


def _has_state(x):
    return bool(state.split([x], ["x"]).objects)


def _constrain_tree(tree, sharding):
    if isinstance(sharding, (tuple, list)) and isinstance(tree, (tuple, list)) and len(tree) == len(sharding):
        return type(tree)(_constrain_tree(t, s_) for t, s_ in zip(tree, sharding))
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding)
                        if hasattr(x, "shape") else x, tree)


def _restore_foreign_writes(ctx, merged):
    """Variables written during the trace that the step does not own (not threaded, not created
    inside) now hold tracers: put their values back (S6) and report the first one."""
    from .errors import TracerLeakError

    leaked = None
    for key, (v, old) in ctx.touched.items():
        if key in merged.fresh_index or key in ctx.created:
            continue
        if any(_adapter.is_tracer(x) for x in jax.tree.leaves(old)):
            continue  # it already held traced values: owned by this (or an inner) trace
        if isinstance(v, state.Ref):
            v._value = old
        else:
            _set_raw(v, old)
        if leaked is None:
            leaked = TracerLeakError(
                f"{type(v).__name__} written at {ctx.writes.get(key, '<unknown>')} is not threaded "
                "through this hijaxc.jit step (it is reached through a function hijaxc could not "
                "rewrite, e.g. one without source, or through another function's globals), so the "
                "traced value would leak. Pass it as an argument or close over it in the jitted "
                "function.  Its value was left unchanged.")
    return leaked

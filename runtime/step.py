"""The call path of a compiled function: split -> jax.jit(pure step) -> write back.

``Step`` owns one compiled user body and its caches.  A call takes the steady state
(steady_state.py) when it applies, else the slow path here: split the roots (arguments, closure
cells, globals, and places learnt while tracing), find or trace the pure step for that structure
(an LRU of ``max_cache`` entries), donate what only the Variables hold, call, write back.
"""
import copy
import functools
import threading

import jax

from . import _adapter, donation, explain, location, sharding, writelog
from .discovery import CellPlace, GlobalPlace, Rediscover, view
from .errors import HijaxcError
from .pure_step import MISSING, StaticArg, Trace
from .spec import build
from .split import check_aliasing, split
from .steady_state import MISS, Fast

_EPOCH = _adapter.EPOCH
_MAX_DISCOVERED = 256  # places one step may learn (see Step._discover)
_BUILTINS = __builtins__ if isinstance(__builtins__, dict) else vars(__builtins__)


class Entry:
    """One traced structure: the pure step, and its compiled steps (per donation mask)."""

    __slots__ = ("pure", "traced", "jitted")

    def __init__(self, pure):
        self.pure = pure
        self.traced = None  # jax.jit(pure): each mask's compiled step calls it (donation.py)
        self.jitted = {}  # donation mask -> donation.Compiled


class Step:
    # ``_fast`` is a slot: ``_speedups.Dispatch`` reads it at its offset on every call
    __slots__ = ("_fast", "__dict__", "__weakref__")

    def __init__(self, pure_fn, name, *, free_names=(), free_cells=(), free_globals=None,
                 static_argnums=(), static_argnames=(), donate="auto", aliasing="share",
                 where="<unknown>", jit_kwargs=None, observe=None):
        self.pure_fn = pure_fn  # generated: pure_fn(trace, *leaves) -> (new leaves, plan box)
        self.name, self.where = name, where
        self.free_names = tuple(free_names)
        # where each free name lives: its closure cell, or the function's globals
        self.places = [CellPlace(cell) if cell is not None else GlobalPlace(free_globals, name)
                       for name, cell in zip(free_names, free_cells)]
        self.static_argnums = tuple(static_argnums)
        self.static_argnames = tuple(static_argnames)
        self.donate, self.aliasing = donate, aliasing
        self.jit_kwargs = dict(jit_kwargs or {})
        # in/out shardings refer to the user's arguments and result, not to the flat step
        self.user_in_shardings = self.jit_kwargs.pop("in_shardings", None)
        self.user_out_shardings = self.jit_kwargs.pop("out_shardings", None)
        self.cache = {}
        self.max_cache = 64
        self.stats = {"traces": 0, "splits": 0, "fast_calls": 0}
        self._lock = threading.Lock()
        self._fast = None
        # Places where code this step calls found state the compiled function does not name
        # itself (a helper's own global model, say), threaded like its own free names (S4).
        self.extra = []
        self._extra_keys = set()
        self._calling = threading.local()  # the caller's split objects while the step traces
        self.observer = explain.Observer(self, observe or explain.Options())  # trace-time only

    # -- roots ---------------------------------------------------------------------------------
    def free_values(self):
        out = [place.read(MISSING) for place in self.places]
        for k, name in enumerate(self.free_names):
            if out[k] is MISSING and type(self.places[k]) is GlobalPlace:
                out[k] = _BUILTINS.get(name, MISSING)
        out.extend(place.read(MISSING) for place in self.extra)
        if writelog.tracing():
            # A step called while another traces: the enclosing steps' copies, not the caller's
            # originals; an original no enclosing step threads yet is learnt by the outermost one
            # (discovery.view), which traces again.
            out = [view(v, p) for v, p in zip(out, self.places + self.extra)]
        return out

    def _discover(self, place):
        """Called while tracing: thread ``place`` from now on.  True if it is new (retrace)."""
        key = place.key()
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
                statics.append(StaticArg(i, None, args[i]))
                dyn_args[i] = MISSING
        dyn_kwargs = dict(kwargs)
        for n in self.static_argnames:
            if n in kwargs:
                statics.append(StaticArg(None, n, kwargs[n]))
                dyn_kwargs[n] = MISSING
        return tuple(dyn_args), dyn_kwargs, tuple(statics)

    def _split(self, args, kwargs):
        dyn_args, dyn_kwargs, statics = self._partition(args, kwargs)
        s = split([dyn_args, dyn_kwargs, tuple(self.free_values())], ["args", "kwargs", "closure"],
                  scalars_static=("closure",))
        return s, statics

    # -- the call ------------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        return self.call(args, kwargs)

    def call(self, args: tuple, kwargs: dict):
        """A call with these arguments: the steady state where it applies, else the slow path.
        (``JitFunction.__call__`` inlines these lines: one Python frame less per call.)"""
        fast = self._fast
        if fast is not None and fast.epoch == _EPOCH[0]:
            try:
                out = fast.call(args, kwargs)
            except (Exception, Rediscover) as e:
                return self.after_fast_error(e, args, kwargs)
            if out is not MISS:
                return out
        return self.slow_call(args, kwargs)

    def after_fast_error(self, e: BaseException, args: tuple, kwargs: dict):
        """The steady-state call raised ``e``: a retrace that found new state goes the slow path
        (which threads it; an enclosing step's discovery goes up to that step); any other error
        is re-raised with the user's lines noted."""
        if isinstance(e, Rediscover):
            if e.step is self:
                return self.slow_call(args, kwargs)
            raise e
        location.note_user_lines(e)
        raise e

    def slow_call(self, args: tuple, kwargs: dict):
        try:
            return self._slow_call(args, kwargs)
        except Exception as e:
            location.note_user_lines(e)
            raise

    def _slow_call(self, args, kwargs):
        while True:
            n = len(self.extra)
            try:
                return self._slow_call_once(args, kwargs)
            except Rediscover as e:
                if e.step is not self:
                    raise  # an enclosing step learnt something: it retraces (and calls us again)
                if len(self.extra) == n:  # (cannot happen: a discovery always adds a place)
                    raise HijaxcError(f"{self.name}: state discovery did not converge") from None

    def _entry(self, s, statics):
        """The cached pure step for this structure (least recently used evicted first)."""
        try:
            skey = (s.key, tuple((st.position, st.name, _hashable(st.value)) for st in statics),
                    sharding.key(s.leaves))
            hash(skey)
        except TypeError as e:
            raise HijaxcError(f"static argument of {self.name} is not hashable: {e}") from None
        with self._lock:
            entry = self.cache.pop(skey, None)  # re-inserted: the most recently used goes last
            if entry is None:
                entry = Entry(self._make_pure(s, statics))
                if len(self.cache) >= self.max_cache:
                    self.cache.pop(next(iter(self.cache)))
            self.cache[skey] = entry
        return skey, entry

    def _slow_call_once(self, args, kwargs):
        s, statics = self._split(args, kwargs)
        self.stats["splits"] += 1
        if self.aliasing == "error":
            check_aliasing(s, self.where)
        skey, entry = self._entry(s, statics)
        leaves = s.leaves
        mask = self._donation_mask(s, leaves)
        compiled = donation.compiled_for(entry, mask, len(leaves), self.jit_kwargs)
        epoch = _EPOCH[0]
        self._calling.objects = s.objects
        try:
            new_leaves, box = compiled.jitted(*donation.pack(compiled, leaves))
        except Rediscover:
            with self._lock:
                if self.cache.get(skey) is entry:
                    del self.cache[skey]
            raise
        except Exception as e:
            donation.note_lost(e, self.name, leaves, mask)
            raise
        finally:
            self._calling.objects = None
        del leaves
        plan = box.plan
        out = plan.apply(s.objects, new_leaves)
        if not writelog.tracing() and not plan.struct:
            self._fast = Fast.record(self, s, entry, plan, args, kwargs, statics, epoch)
        return out

    def _donation_mask(self, s, leaves):
        if (self.donate is not True and self.donate != "auto") or writelog.tracing():
            return ()
        return donation.mask(s.objects_spec, leaves)

    def _make_pure(self, s, statics):
        trace = Trace(self, s, statics)
        pure = functools.partial(self.pure_fn, trace)
        functools.update_wrapper(pure, self.pure_fn)
        return self.observer.wrap(pure, trace)  # explains retraces; runs only while tracing

    # -- introspection -------------------------------------------------------------------------
    def _introspect(self, run, args, kwargs):
        """``run(split, pure)`` with the same state discovery as a call (retraced when code the
        step calls reaches new state)."""
        while True:
            s, statics = self._split(args, kwargs)
            pure = self._make_pure(s, statics)
            self._calling.objects = s.objects
            try:
                return run(s, pure)
            except Rediscover as e:
                if e.step is not self:
                    raise
            finally:
                self._calling.objects = None

    def lower(self, *args, **kwargs):
        return self._introspect(lambda s, pure: jax.jit(pure, **self.jit_kwargs).lower(*s.leaves),
                                args, kwargs)

    def trace(self, *args, **kwargs):
        return self._introspect(lambda s, pure: jax.jit(pure, **self.jit_kwargs).trace(*s.leaves),
                                args, kwargs)

    def eval_shape(self, *args, **kwargs):
        """The return value with ShapeDtypeStructs; the caller's state untouched."""
        def run(s, pure):
            new_leaves, box = jax.eval_shape(pure, *s.leaves)
            plan = box.plan
            if plan.simple:
                return build(plan.out_spec, new_leaves)
            return plan.apply(copy.deepcopy(s.objects), new_leaves)

        return self._introspect(run, args, kwargs)

    def make_jaxpr(self, *args, **kwargs):
        return self._introspect(lambda s, pure: jax.make_jaxpr(pure)(*s.leaves), args, kwargs)

    def threaded(self, *args, **kwargs):
        """The split a call with these arguments makes (which objects it threads)."""
        return self._split(args, kwargs)[0]


def _hashable(x):
    try:
        hash(x)
        return x
    except TypeError:
        return ("id", id(x))

"""The steady-state call: the same root objects as last time and no structural change since.

``Fast.record`` (after a slow call) keeps what the next call needs as flat lists and builds
``Fast.call``, which skips the graph walk entirely.  It is valid while the global epoch (bumped by
every attribute write on a graph node) is unchanged and the roots are the same objects.

``Fast.call(args, kwargs)`` is specialised to the recorded layout: only the checks this structure
needs, and per Variable two passes -- ``_gather`` reads the value slots and the reference counts
(the donation check, S9), ``_scatter`` writes the outputs back.  The usual
``step(model, optimizer, x, y)`` has the layout the C extension (``native``) serves whole: the
Variables' leaves first, in order, then the plain arguments; the written-back leaves first in the
outputs; then ``Fast.call`` is a ``_speedups.FastCall``, which runs the same steps as the closure
below with no Python frame.  Otherwise (other layouts, no extension, ``HIJAXC_PURE_PYTHON=1``) it
is that closure; its passes are then the extension's C functions where built, else C-level
``map``s over the slot descriptor (about three times the cost per Variable).  Both read
``_gather`` and ``_scatter`` from this module on each call, so tests can swap them.
"""
import collections
import itertools
import operator
import sys
from functools import partial
from itertools import compress, islice

from . import _adapter, donation, native
from .spec import DictSpec, FlaxHijaxSpec, Leaf, ListSpec, Obj, RefSpec, Static, VarSpec, build

_getrefcount = sys.getrefcount
_is_not = operator.is_not
_consume = collections.deque(maxlen=0).extend  # runs an iterator to its end in C
_get_raw, _set_raw = _adapter.get_raw, _adapter.set_raw
LEAF_TYPES = frozenset({_adapter.ArrayImpl, int, float, bool, complex})
MISS = object()  # the steady state does not apply: take the slow path


def _py_gather(objects: list, n: int) -> tuple:
    """``(values, counts)``: the objects' value slots, and the reference counts of the first
    ``n`` values (``donation.ref_counts``)."""
    values = list(map(_get_raw, objects))
    try:  # (ref_counts inlined for the usual case: no Python frame per call)
        return values, bytes(map(_getrefcount, islice(values, n)))
    except ValueError:  # a count above 255
        return values, donation.ref_counts(lambda: islice(values, n))


def _py_scatter(objects: list, values: list) -> None:
    _consume(map(_set_raw, objects, values))


def _c_passes():
    """``_speedups``' gather/scatter bound to the value slot, or None where the extension is not
    built, disabled, or counts differently from the Python passes (checked, not assumed)."""
    ext = native.module()
    if ext is None:
        return None
    raw = _adapter.RAW_SLOT_DESCRIPTOR
    gather, scatter = partial(ext.gather, raw), partial(ext.scatter, raw)
    v = _adapter.FlaxVariable.__new__(_adapter.FlaxVariable)
    _set_raw(v, object())
    if gather([v], 1)[1] != _py_gather([v], 1)[1]:
        return None
    return gather, scatter


def use_speedups(on: bool = True) -> bool:
    """Take the C extension (where built) or the Python code paths for the steady states
    recorded from now on; returns whether the C ones are in use."""
    global _gather, _scatter, _c_call
    c = _c_passes() if on else None
    _gather, _scatter = c if c is not None else (_py_gather, _py_scatter)
    _c_call = None if c is None else partial(native.module().FastCall, c_gather=c[0],
                                             c_scatter=c[1], passes=globals())
    return c is not None


use_speedups()


class Fast:
    """What the steady-state call needs, recorded after a slow call; ``call(args, kwargs)`` is the
    call itself (``MISS`` where the steady state does not apply)."""

    __slots__ = ("epoch", "n_args", "kw_keys", "checks", "leaf_pos", "var_slots", "ref_slots",
                 "n_leaves", "entry", "plan", "updates", "objects", "statics", "free",
                 "dicts", "lists", "container_sig", "donatable", "ref_updates", "var_objs",
                 "contiguous", "update_objs", "updates_in_order", "donate_prefix",
                 "static_vars", "call")

    @classmethod
    def record(cls, step, s, entry, plan, args, kwargs, statics, epoch):
        """The steady state after a slow call, or None where the layout is not the simple, common
        one: every argument a stateful object or a plain leaf, no flax hijax Variable."""
        f = cls()
        if not f._record_roots(step, s, args, kwargs, statics):
            return None
        if not f._record_objects(s):
            return None
        f.epoch, f.n_args, f.kw_keys = epoch, len(args), tuple(kwargs)
        f.n_leaves, f.entry, f.plan, f.objects, f.statics = \
            len(s.leaves), entry, plan, s.objects, statics
        f.updates = [(s.objects[k], i) for k, i in plan.var_updates]
        f.ref_updates = [(s.objects[k], i) for k, i in plan.ref_updates]
        f._record_layout()
        f.call = _make_call(f, step)
        return f

    def _record_roots(self, step, s, args, kwargs, statics):
        vals = tuple(args) + tuple(kwargs.values())
        args_spec, kwargs_spec, free_spec = s.root_specs
        if type(kwargs_spec) is not Obj:
            return False
        arg_specs = list(args_spec.items) + [c for _, c in s.objects_spec[kwargs_spec.index].items]
        if len(arg_specs) != len(vals):
            return False
        self.checks, self.leaf_pos = [], []
        for i, (v, spec) in enumerate(zip(vals, arg_specs)):
            if type(spec) is Obj and not isinstance(v, (list, dict)):
                self.checks.append((i, v))
            elif type(spec) is Leaf and type(v) in LEAF_TYPES:
                self.leaf_pos.append((spec.index, i))
            elif not (type(spec) is Static and statics):
                return False
        if any(type(spec) is Leaf for spec in free_spec.items):
            return False
        self.free = list(step.free_values())
        return True

    def _record_objects(self, s):
        self.var_slots, self.ref_slots, self.donatable = [], [], []
        self.dicts, self.lists, self.static_vars = [], [], []
        kwargs_k = s.root_specs[1].index
        for k, content in enumerate(s.objects_spec):
            o, t = s.objects[k], type(content)
            if t is VarSpec and type(content.value) is Static:  # S12: re-checked, by identity
                self.static_vars.append((o, content.value.value))
            elif t is VarSpec and type(content.value) is Leaf:
                self.var_slots.append((content.value.index, o))
                if content.mode.hijax and content.mode.mutable:  # written back
                    self.donatable.append(content.value.index)
            elif t is RefSpec:
                self.ref_slots.append((content.leaf, o))
            elif t is FlaxHijaxSpec:
                return False
            elif t is ListSpec:
                self.lists.append(o)
            elif t is DictSpec and k != kwargs_k:
                self.dicts.append(o)
        self.container_sig = (container_sig(self.dicts, self.lists)
                              if self.dicts or self.lists else None)
        return True

    def _record_layout(self):
        nv = len(self.var_slots)
        self.var_objs = [o for _, o in self.var_slots]
        self.leaf_pos.sort()
        plain_leaves = [i for i, _ in self.leaf_pos]
        self.contiguous = ([i for i, _ in self.var_slots] == list(range(nv)) and not self.ref_slots
                           and plain_leaves == list(range(nv, self.n_leaves)))
        self.update_objs = [o for o, _ in self.updates]
        self.updates_in_order = [i for _, i in self.updates] == list(range(len(self.updates)))
        self.donate_prefix = self.donatable == list(range(len(self.donatable)))

    def same_extras(self, step, args, kwargs):
        """The checks beyond the roots' identity, for the structures that need them: static
        arguments, closure/global values, Variables with static contents, plain containers."""
        if self.statics and step._partition(args, kwargs)[2] != self.statics:
            return False
        if self.free:
            for a, b in zip(step.free_values(), self.free):
                if a is not b:
                    return False
        for o, x in self.static_vars:
            if _get_raw(o) is not x:
                return False
        return self.container_sig is None or same_containers(self.dicts, self.lists,
                                                             self.container_sig)

    def read_leaves(self, vals):
        """The step's input leaves in a layout that is not contiguous (or None: an argument is no
        longer a plain leaf)."""
        leaves = [None] * self.n_leaves
        for i, o in self.var_slots:
            leaves[i] = _get_raw(o)
        for i, o in self.ref_slots:
            leaves[i] = o._value
        for i, p in self.leaf_pos:
            x = vals[p]
            if type(x) not in LEAF_TYPES:
                return None
            leaves[i] = x
        return leaves

    def write_back(self, new_leaves):
        """The outputs into the caller's Variables and Refs, for the recorded plan."""
        if self.updates_in_order:
            _scatter(self.update_objs, new_leaves)
        else:
            for o, i in self.updates:
                _set_raw(o, new_leaves[i])
        for o, i in self.ref_updates:
            o._value = new_leaves[i]


class _CallParts:
    """What a steady-state call of ``f``'s layout needs beyond ``f`` itself."""

    __slots__ = ("donation", "n_counted", "reads", "update_objs", "out_of", "simple_roots")

    def __init__(self, f: Fast, step):
        donating = bool(f.donatable) and (step.donate == "auto" or step.donate is True)
        # the counts come from _gather where the donated leaves are its first ones, else reads()
        self.n_counted = len(f.donatable) if donating and f.contiguous and f.donate_prefix else 0
        self.reads = _donation_reads(f) if donating and not self.n_counted else None
        self.donation = Donation(f, step) if donating else Donation.none(f, step)
        self.update_objs = f.update_objs if f.updates_in_order and not f.ref_updates else None
        self.out_of = _output_builder(f.plan)
        self.simple_roots = not f.kw_keys and not _needs_extras(f)

    def c_serves(self, f: Fast) -> bool:
        """The layout ``_speedups.FastCall`` serves whole."""
        return (_c_call is not None and f.contiguous and self.simple_roots and self.reads is None
                and self.update_objs is not None and f.plan.simple)


def _make_call(f: Fast, step):
    """``f.call(args, kwargs)``: the steady-state call specialised to ``f``'s layout."""
    parts = _CallParts(f, step)
    if parts.c_serves(f):
        return _make_c_call(f, step, parts)
    return _make_py_call(f, step, parts)


def _make_c_call(f: Fast, step, parts: _CallParts):
    """The C ``FastCall``: the steps of ``_make_py_call``'s closure for the layout it serves."""
    donation_, name = parts.donation, step.name
    spec = f.plan.out_spec
    return _c_call(
        n_args=f.n_args, checks=tuple(f.checks), descr=_adapter.RAW_SLOT_DESCRIPTOR,
        var_objs=f.var_objs, n_counted=parts.n_counted,
        plain_pos=tuple(p for _, p in f.leaf_pos), leaf_types=LEAF_TYPES, donation=donation_,
        plan=f.plan, objects=f.objects, update_objs=parts.update_objs,
        out_index=spec.index if type(spec) is Leaf else -1, out_of=parts.out_of,
        stats=step.stats, miss=MISS,
        on_error=lambda e, leaves: donation.note_lost(e, name, leaves, donation_.mask))


def _make_py_call(f: Fast, step, parts: _CallParts):
    """The steady-state call as a closure over ``f``'s layout (any layout ``Fast`` records)."""
    var_objs, plain_pos, contiguous = f.var_objs, [p for _, p in f.leaf_pos], f.contiguous
    objects, recorded_plan, stats, name = f.objects, f.plan, step.stats, step.name
    n_counted, reads, donation_, out_of = parts.n_counted, parts.reads, parts.donation, parts.out_of
    update_objs, simple_roots = parts.update_objs, parts.simple_roots
    same_roots = _roots_check(f, step)
    n_args, checks = f.n_args, f.checks

    def call(args, kwargs):
        if len(args) != n_args:
            return MISS
        if simple_roots and not kwargs:  # (same_roots, inlined for the usual call)
            for i, o in checks:
                if args[i] is not o:
                    return MISS
        else:
            args = same_roots(args, kwargs)
            if args is None:
                return MISS
        if contiguous:
            leaves, counts = _gather(var_objs, n_counted)
            if plain_pos:
                plain = list(map(args.__getitem__, plain_pos))
                if not all(map(LEAF_TYPES.__contains__, map(type, plain))):
                    return MISS
                leaves += plain
        else:
            leaves, counts = f.read_leaves(args), b""
            if leaves is None:
                return MISS
        if reads is not None:
            counts = reads(leaves)
        if counts != donation_.counts:
            donation_.choose(counts)
        compiled = donation_.compiled
        try:
            k = compiled.split_at  # (donation.pack, inlined for the usual masks)
            new_leaves, box = compiled.jitted(*((leaves[:k], leaves[k:]) if k >= 0
                                                else donation_.pack(leaves)))
        except Exception as e:
            donation.note_lost(e, name, leaves, compiled.mask)
            raise
        del leaves
        stats["fast_calls"] += 1
        plan = box[0]  # (PlanBox.plan)
        if plan is not recorded_plan or not plan.simple:  # a retrace changed the plan
            return plan.apply(objects, new_leaves)
        if update_objs is not None:
            _scatter(update_objs, new_leaves)
        else:
            f.write_back(new_leaves)
        return out_of(new_leaves)

    return call


def _needs_extras(f: Fast) -> bool:
    return bool(f.statics or f.free or f.static_vars or f.container_sig is not None)


def _roots_check(f: Fast, step):
    """``same_roots(args, kwargs)``: the positional and keyword arguments as one tuple where the
    call has the recorded roots (and, where the structure needs them, the same statics, closure
    values, static Variable contents and plain containers), else None."""
    n_args, kw_keys, checks = f.n_args, f.kw_keys, f.checks
    extras = _needs_extras(f)
    (i0, o0), = checks if len(checks) == 1 else ((None, None),)

    def same_roots(args, kwargs):
        if len(args) != n_args:
            return None
        if kwargs or kw_keys:
            if tuple(kwargs) != kw_keys:
                return None
            vals = args + tuple(kwargs.values())
        else:
            vals = args
        if i0 is not None:
            if vals[i0] is not o0:
                return None
        else:
            for i, o in checks:
                if vals[i] is not o:
                    return None
        if extras and not f.same_extras(step, args, kwargs):
            return None
        return vals

    return same_roots


def _donation_reads(f: Fast):
    """``reads(leaves)``: the reference counts of the written-back leaves, for the layouts
    ``_gather`` does not count itself."""
    donatable = f.donatable

    def reads(leaves):
        try:  # (ref_counts inlined for the usual case)
            return bytes(map(_getrefcount, map(leaves.__getitem__, donatable)))
        except ValueError:  # a count above 255
            return donation.ref_counts(lambda: map(leaves.__getitem__, donatable))

    return reads


class Donation:
    """The compiled step for the current reference counts: it donates the written-back leaves
    that only their Variable holds (S9).  The last choice is kept, so a loop whose caller holds
    the same arrays on every call (the step's own output, say) compares one ``bytes`` and hashes
    nothing.  ``compiled.jitted`` takes the leaves as ``pack(leaves)`` gives them
    (``donation.Compiled``; the C call slices them itself where ``compiled.split_at`` allows)."""

    __slots__ = ("entry", "donatable", "n_leaves", "jit_kwargs", "counts", "compiled")

    def __init__(self, f: Fast, step):
        self.entry, self.donatable, self.jit_kwargs = f.entry, f.donatable, step.jit_kwargs
        self.n_leaves, self.counts, self.compiled = f.n_leaves, None, None

    @classmethod
    def none(cls, f: Fast, step):
        """Nothing donated: every call's counts are ``b""``."""
        d = cls(f, step)
        d._take(b"", ())
        return d

    def choose(self, counts: bytes) -> None:
        self._take(counts, tuple(compress(self.donatable, map(donation.is_sole_holder, counts))))

    def _take(self, counts: bytes, mask: tuple) -> None:
        self.compiled = donation.compiled_for(self.entry, mask, self.n_leaves, self.jit_kwargs)
        self.counts = counts

    @property
    def mask(self) -> tuple:
        return self.compiled.mask

    @property
    def split_at(self) -> int:
        return self.compiled.split_at

    def pack(self, leaves: list) -> tuple:
        return donation.pack(self.compiled, leaves)


def _output_builder(plan):
    """``out_of(new_leaves)``: the step's return value for a plan whose result holds no object."""
    spec = plan.out_spec
    if type(spec) is Leaf:
        return operator.itemgetter(spec.index)
    if type(spec) is Static:
        value = spec.value
        return lambda leaves: value
    return lambda leaves: build(spec, leaves)


def container_sig(dicts, lists):
    """What the plain lists/dicts in a graph hold (they change without ``__setattr__``): lengths,
    keys, and the values themselves.  The values are kept (compared by identity), not their ids,
    so that a replaced value cannot be mistaken for a new one that reuses its address."""
    chain = itertools.chain.from_iterable
    return (list(map(len, dicts)), list(chain(dicts)), list(chain(map(dict.values, dicts))),
            list(map(len, lists)), list(chain(lists)))


def same_containers(dicts, lists, sig):
    """``dicts``/``lists`` still hold what ``sig`` recorded (one C-level pass per part: the steady
    state checks the optimizer's ~260 state dicts of a 32-block model on every call)."""
    chain = itertools.chain.from_iterable
    # equal lengths first, so that the identity walks below compare value by value
    return (list(map(len, dicts)) == sig[0] and list(map(len, lists)) == sig[3]
            and list(chain(dicts)) == sig[1]
            and not any(map(_is_not, chain(map(dict.values, dicts)), sig[2]))
            and not any(map(_is_not, chain(lists), sig[4])))

"""The steady-state call: the same root objects as last time and no structural change since.

``Fast.record`` (after a slow call) keeps what the next call needs as flat lists; ``Fast.call``
reads the Variables' raw values by index, calls the compiled step and writes the outputs back by
index, skipping the graph walk entirely.  It is valid while the global epoch (bumped by every
attribute write on a graph node) is unchanged and the roots are the same objects.

Everything per call is a C-level ``map`` over precomputed lists where the layout allows it (it
does for the usual ``step(model, optimizer, x, y)``): the Variables' leaves come first, in order,
then the plain arguments; the written-back leaves come first in the outputs.
"""
import collections
import itertools
import operator
import sys
from itertools import islice

from . import _adapter, donation
from .spec import DictSpec, FlaxHijaxSpec, Leaf, ListSpec, Obj, RefSpec, Static, VarSpec, build

_getrefcount = sys.getrefcount
_is_not = operator.is_not
_consume = collections.deque(maxlen=0).extend  # runs an iterator to its end in C
_get_raw, _set_raw = _adapter.get_raw, _adapter.set_raw
LEAF_TYPES = frozenset({_adapter.ArrayImpl, int, float, bool, complex})
MISS = object()  # the steady state does not apply: take the slow path


class Fast:
    __slots__ = ("epoch", "n_args", "kw_keys", "checks", "leaf_pos", "var_slots", "ref_slots",
                 "n_leaves", "entry", "plan", "updates", "objects", "statics", "free",
                 "dicts", "lists", "container_sig", "donatable", "ref_updates_", "var_objs",
                 "contiguous", "update_objs", "updates_in_order", "full_mask", "donate_prefix",
                 "static_vars", "full_jitted")

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
        f.ref_updates_ = [(s.objects[k], i) for k, i in plan.ref_updates]
        f._record_layout()
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
        plain_leaves = sorted(i for i, _ in self.leaf_pos)
        self.contiguous = ([i for i, _ in self.var_slots] == list(range(nv)) and not self.ref_slots
                           and plain_leaves == list(range(nv, self.n_leaves)))
        self.leaf_pos.sort()
        self.update_objs = [o for o, _ in self.updates]
        self.updates_in_order = [i for _, i in self.updates] == list(range(len(self.updates)))
        self.full_mask = tuple(self.donatable)
        self.full_jitted = None
        self.donate_prefix = self.donatable == list(range(len(self.donatable)))

    def same_roots(self, step, args, kwargs, vals):
        for i, o in self.checks:
            if vals[i] is not o:
                return False
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
        if self.contiguous:
            leaves = list(map(_get_raw, self.var_objs))
            for _, p in self.leaf_pos:
                x = vals[p]
                if type(x) not in LEAF_TYPES:
                    return None
                leaves.append(x)
            return leaves
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

    def donation_mask(self, step, leaves):
        """The written-back leaves held only by their Variable's slot (+ ``leaves`` + the
        argument of ``getrefcount``): an array the user still holds is never donated (S9)."""
        donatable = self.donatable
        if not donatable or not (step.donate == "auto" or step.donate is True):
            return ()
        picked = (islice(leaves, len(donatable)) if self.donate_prefix
                  else map(leaves.__getitem__, donatable))
        if max(map(_getrefcount, picked)) <= 3:
            return self.full_mask
        return tuple(i for i in donatable if _getrefcount(leaves[i]) <= 3)

    def call(self, step, args, kwargs):
        if len(args) != self.n_args or (kwargs and tuple(kwargs) != self.kw_keys):
            return MISS
        vals = args + tuple(kwargs.values()) if kwargs else args
        if not self.same_roots(step, args, kwargs, vals):
            return MISS
        leaves = self.read_leaves(vals)
        if leaves is None:
            return MISS
        mask = self.donation_mask(step, leaves)
        if mask is self.full_mask and self.full_jitted is not None:
            jitted = self.full_jitted  # (no hash of a mask as long as the state)
        else:
            entry = self.entry
            jitted = entry.jitted.get(mask)
            if jitted is None:
                jitted = entry.jitted[mask] = donation.jitted_for(entry, mask, step.jit_kwargs)
            if mask is self.full_mask:
                self.full_jitted = jitted
        try:
            new_leaves, box = jitted(*leaves)
        except Exception as e:
            donation.note_lost(e, step.name, leaves, mask)
            raise
        del leaves
        step.stats["fast_calls"] += 1
        return self.write_back(box.plan, new_leaves)

    def write_back(self, plan, new_leaves):
        if plan is not self.plan:
            return plan.apply(self.objects, new_leaves)
        if self.updates_in_order:
            _consume(map(_set_raw, self.update_objs, new_leaves))
        else:
            for o, i in self.updates:
                _set_raw(o, new_leaves[i])
        for o, i in self.ref_updates_:
            o._value = new_leaves[i]
        if plan.simple:
            return build(plan.out_spec, new_leaves)
        return plan.apply(self.objects, new_leaves)


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

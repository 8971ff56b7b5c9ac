"""The write-back plan: what to do with a step's output leaves, decided at trace time.

After the compiled step returned, ``WriteBack.apply`` updates the caller's original objects in place
(identity kept), creates the objects that were made inside, and rebuilds the return value.  Nothing
is touched before the step succeeded, so a failure anywhere leaves caller state as it was (S6).
"""
from typing import Any, NamedTuple, Sequence

from . import _adapter
from .merge import fill, new_object
from .spec import build

_set_raw = _adapter.set_raw


class Update(NamedTuple):
    object: int  # index into the caller's split objects
    leaf: int  # index into the step's output leaves


class StructUpdate(NamedTuple):
    object: int
    content: Any  # the object's content spec after the body


class WriteBack:
    """``var_updates`` / ``ref_updates`` / ``fvar_updates``: the hijax Variables, Refs and flax
    hijax Variables of the input whose value changed (the hot loop of the steady-state call);
    ``struct``: input objects whose structure or metadata changed; ``new_specs``: content specs
    of objects created inside (object index ``n_in + j``); ``out_spec``: the return value;
    ``simple``: only values changed and the result holds no object."""

    __slots__ = ("var_updates", "ref_updates", "fvar_updates", "struct", "new_specs", "out_spec",
                 "n_in", "simple")

    def __init__(self, n_in: int):
        self.var_updates, self.ref_updates, self.fvar_updates = [], [], []
        self.struct, self.new_specs = [], []
        self.n_in, self.out_spec, self.simple = n_in, None, False

    # the plan rides in the output pytree as static aux data: jax compares and hashes it
    def __eq__(self, other):
        return self is other

    def __hash__(self):
        return id(self)

    def apply(self, objects: Sequence, leaves: Sequence) -> Any:
        for k, i in self.var_updates:
            _set_raw(objects[k], leaves[i])
        for k, i in self.ref_updates:
            objects[k]._value = leaves[i]
        if self.simple:
            return build(self.out_spec, leaves)
        for k, i in self.fvar_updates:
            _adapter.flax_hijax_write(objects[k], leaves[i])
        new = [new_object(c, leaves) for c in self.new_specs]  # all first: references resolve
        n_in = self.n_in

        def obj(k):
            return objects[k] if k < n_in else new[k - n_in]

        for o, content in zip(new, self.new_specs):
            fill(o, content, leaves, obj)
        for k, content in self.struct:
            fill(objects[k], content, leaves, obj, fresh=False)
        if self.struct:
            _adapter.EPOCH[0] += 1
        return build(self.out_spec, leaves, obj)

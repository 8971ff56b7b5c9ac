"""hijaxc's Variables and Refs.

A hijaxc ``Variable`` is an ``nnx.Variable`` subclass, so it lives in NNX Modules and Pytrees and
``nnx.split``/``merge``/``state`` and filters handle it like any NNX Variable, in every supported
flax.  Its value sits in flax's own value slot (read and written directly, which is what keeps the
call path fast); its hijaxc flags live in the metadata under the key ``"hijaxc"`` as the tuple
``(hijax, ref, mutable)`` so that every flax copy/merge carries them along.  For flax, a hijaxc
Variable is always a plain ("lojax") Variable: hijax semantics come from hijaxc's compiler, not
from JAX hi-types, which is why they work on JAX versions that have none.
"""
import copy
import operator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import _adapter, config, location, writelog
from .errors import ImmutableVariableError, InvalidValueError

FLAGS = "hijaxc"
_get_raw, _set_raw, _get_meta = _adapter.get_raw, _adapter.set_raw, _adapter.get_metadata


class Ref:
    """A mutable box: the fallback representation of a Variable created with ``ref=True``.

    ``r[...]`` reads and ``r[...] = x`` writes; inside ``hijaxc.jit`` a Ref is threaded like a
    Variable (by reference, aliasing kept)."""

    __slots__ = ("_value",)

    def __init__(self, value):
        self._value = _as_array(value)
        writelog.on_create(self)

    def __getitem__(self, idx):
        return self._value if idx is Ellipsis else self._value[idx]

    def __setitem__(self, idx, value):
        writelog.on_write(self, self._value)
        self._value = _assign(self._value, idx, value)

    @property
    def value(self):
        return self._value

    def __repr__(self):
        r = repr(self._value)
        return "Ref" + r[r.index("("):] if r.startswith("Array(") else f"Ref({r})"

    def __len__(self):
        return len(self._value)


def _as_array(x):
    if isinstance(x, (bool, int, float, complex, np.ndarray, np.generic)):
        return jnp.asarray(x)
    return x


_WHOLE = object()  # set_value(x) / v.value = x: replace, whatever the shape


def _assign(old, idx, new):
    """The value after ``old[idx] = new``, computed functionally (never mutating ``old``)."""
    if idx is _WHOLE:
        return new
    if idx is Ellipsis:
        if isinstance(old, (jax.Array, np.ndarray)) and not isinstance(new, (dict, list, tuple)):
            shape, dtype = getattr(new, "shape", None), getattr(new, "dtype", None)
            if shape == old.shape and dtype == old.dtype:
                return new
            return jnp.asarray(old).at[...].set(new)
        return new
    if isinstance(old, dict):
        out = dict(old)
        out[idx] = new
        return out
    if isinstance(old, list):
        out = list(old)
        out[idx] = new
        return out
    return jnp.asarray(old).at[idx].set(new)


def _copy_raw(raw):
    return new_ref(raw._value) if isinstance(raw, Ref) else raw


def _flags(v):
    return _get_meta(v)[FLAGS]


class Variable(nnx.Variable):
    """A mutable value that survives ``hijaxc.jit``.

    ``Variable(value, *, hijax=None, ref=None, mutable=True, **metadata)``: ``hijax`` (default
    from ``var_defaults()``, normally True) passes it by reference into compiled functions;
    ``ref=True`` holds the value in a ``Ref`` box; ``mutable=False`` makes every write raise
    ``ImmutableVariableError``.
    """

    def __class_getitem__(cls, item):  # ``Variable[jax.Array]`` in annotations
        return cls

    # flax builds Variables without __init__ (merge, unflatten, copies): same bookkeeping
    @classmethod
    def from_metadata(cls, value, attributes):
        return new(cls, value, dict(attributes))

    @classmethod
    def _new(cls, value, metadata):
        return new(cls, value, dict(metadata))

    def copy(self, *args, **kwargs):
        return new(type(self), _copy_raw(_get_raw(self)), dict(_get_meta(self)))

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        out = new(type(self), copy.deepcopy(_get_raw(self), memo),
                  copy.deepcopy(dict(_get_meta(self)), memo))
        memo[id(self)] = out
        return out

    def __init_subclass__(cls, **kwargs):
        # Skip flax's own pytree registration (0.11+) and register ours, the same everywhere.
        super(nnx.Variable, cls).__init_subclass__(**kwargs)
        _register(cls)

    @classmethod
    def _variable_meta_call(cls, *args, **kwargs):  # flax 0.12's metaclass hook: no HijaxVariable
        return type.__call__(cls, *args, **kwargs)

    def __init__(self, value, *, hijax=None, ref=None, mutable=True, **metadata):
        defaults = config.current()
        hijax = defaults.hijax if hijax is None else bool(hijax)
        ref = defaults.ref if ref is None else bool(ref)
        if ref and not mutable:
            raise InvalidValueError(
                f"Variable(ref=True, mutable=False) at {location.user_location()}: a Ref is a "
                "mutable box; create the Variable with ref=False or mutable=True.")
        if isinstance(value, Variable):
            raise InvalidValueError(
                f"cannot store a Variable inside a Variable ({location.user_location()})")
        meta = dict(_adapter.FLAX_REQUIRED_METADATA)
        meta.update(metadata)
        meta[FLAGS] = (hijax, ref, bool(mutable))
        _adapter.init_variable(self, Ref(value) if ref else value, meta)
        writelog.on_create(self)

    # -- flags -------------------------------------------------------------------------------------
    @property
    def hijax(self):
        return _flags(self)[0]

    @property
    def ref(self):
        # A Ref needs a mutable Variable: an immutable view keeps the intent and restores it.
        f = _flags(self)
        return f[1] and f[2]

    @property
    def mutable(self):
        return _flags(self)[2]

    # -- value access ------------------------------------------------------------------------------
    def get_raw_value(self):
        raw = _get_raw(self)
        if isinstance(raw, Ref) and not self.ref:
            return raw._value
        return raw

    def get_value(self, *, index=Ellipsis):
        raw = _get_raw(self)
        if isinstance(raw, Ref):
            raw = raw._value
        return raw if index is Ellipsis else raw[index]

    def set_value(self, value, *, index=None):
        """Replace the value (no ``index``), or write ``value`` at ``index``."""
        self._write(_WHOLE if index is None else index, value, None)

    def _write(self, index, value, where):
        if not _flags(self)[2]:
            raise ImmutableVariableError(
                f"cannot write to immutable {type(self).__name__} "
                f"at {where or location.user_location()}; it was created or converted with "
                "mutable=False (convert it with vars_as(..., mutable=True) to write to it).")
        if isinstance(value, Variable):
            value = value.get_value()
        if isinstance(value, (str, bytes)) and writelog.tracing():
            raise InvalidValueError(
                f"cannot store {type(value).__name__} {value!r:.40} in {type(self).__name__} at "
                f"{where or location.user_location()}: inside a hijaxc step Variables hold arrays")
        raw = _get_raw(self)
        writelog.on_write(self, raw)
        if isinstance(raw, Ref):
            raw._value = _assign(raw._value, index, value)
        else:
            _set_raw(self, _assign(raw, index, value))

    def set_raw_value(self, value, **_):
        self.set_value(value)

    value = property(get_value, lambda self, v: self.set_value(v))

    def __getitem__(self, idx):
        return self.get_value(index=idx)

    def __setitem__(self, idx, value):
        self.set_value(value, index=idx)

    def __len__(self):
        return len(self.get_value())

    def __iter__(self):
        return iter(self.get_value())

    def __contains__(self, item):
        return item in self.get_value()

    def __jax_array__(self):
        return jnp.asarray(self.get_value())

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.get_value(), dtype=dtype)

    def __hash__(self):
        return id(self)

    def __setattr__(self, name, value):
        # Metadata writes (``v.sharding = ...``); no trace-level check: hijaxc threads Variables.
        if name in ("value",):
            return self.set_value(value)
        _get_meta(self)[name] = value

    def copy_from(self, other):
        self.set_value(other.get_value())

    def update_from_state(self, state):
        _set_raw(self, _get_raw(state))
        _adapter.set_metadata_dict(self, dict(_get_meta(state)))

    # -- repr in the seeds' style ------------------------------------------------------------------
    def __nnx_repr__(self):
        from flax.nnx import reprlib

        yield reprlib.Object(type=type(self).__name__, comment=_size_comment(self.get_value()))
        yield reprlib.Attr("value", self.get_raw_value())
        for k, v in _get_meta(self).items():
            if k == FLAGS or (k in _adapter.FLAX_REQUIRED_METADATA and not v):
                continue
            yield reprlib.Attr(k, v)
        hijax, ref, mutable = _flags(self)
        yield reprlib.Attr("hijax", hijax)
        if ref and mutable:
            yield reprlib.Attr("ref", True)
        if not mutable:
            yield reprlib.Attr("mutable", False)

    def __repr__(self):
        return "".join(_render(self))

    def __treescope_repr__(self, path, subtree_renderer):  # notebooks: fall back to the text repr
        import treescope

        return treescope.rendering_parts.text(repr(self))


def _render(v):
    it = v.__nnx_repr__()
    head = next(it)
    lines = [f"{head.type}({head.comment}\n"]
    for attr in it:
        val = repr(attr.value) if not isinstance(attr.value, str) else repr(attr.value)
        val = val.replace("\n", "\n  ")
        lines.append(f"  {attr.key}={val},\n")
    if len(lines) > 1:
        lines[-1] = lines[-1][:-2] + "\n"
    lines.append(")")
    return lines


def _size_comment(value):
    try:
        return _size_comment_or_fail(value)
    except TypeError:  # extended dtypes (PRNG keys) have no NumPy itemsize
        return ""


def _size_comment_or_fail(value):
    leaves = [x for x in jax.tree.leaves(value) if hasattr(x, "dtype") and hasattr(x, "size")]
    if not leaves:
        return ""
    n = sum(int(x.size) for x in leaves)
    b = sum(int(x.size) * np.dtype(x.dtype).itemsize for x in leaves)
    return f" # {n:,} ({_human_bytes(b)})"


def _human_bytes(b):
    for unit in ("B", "KB", "MB", "GB"):
        if b < 1000 or unit == "GB":
            return f"{b:.1f} {unit}".replace(".0 ", " ") if unit != "B" else f"{b} B"
        b /= 1000


def new(cls, raw, meta):
    """Build a Variable of ``cls`` from its raw value and metadata without ``__init__``."""
    v = object.__new__(cls)
    _adapter.init_variable(v, raw, meta)
    writelog.on_create(v)
    return v


# -- operators act on the value --------------------------------------------------------------------
def _binop(op):
    return lambda self, other: op(
        self.get_value(), other.get_value() if isinstance(other, nnx.Variable) else other)


def _rbinop(op):
    return lambda self, other: op(other, self.get_value())


for _name, _op in [("add", operator.add), ("sub", operator.sub), ("mul", operator.mul),
                   ("truediv", operator.truediv), ("floordiv", operator.floordiv),
                   ("mod", operator.mod), ("pow", operator.pow), ("matmul", operator.matmul),
                   ("and", operator.and_), ("or", operator.or_), ("xor", operator.xor),
                   ("lshift", operator.lshift), ("rshift", operator.rshift)]:
    setattr(Variable, f"__{_name}__", _binop(_op))
    setattr(Variable, f"__r{_name}__", _rbinop(_op))

    def _inplace(self, other, _op=_op):
        self.set_value(_op(self.get_value(), other))
        return self

    setattr(Variable, f"__i{_name}__", _inplace)
for _name, _op in [("lt", operator.lt), ("le", operator.le), ("gt", operator.gt),
                   ("ge", operator.ge)]:
    setattr(Variable, f"__{_name}__", _binop(_op))
Variable.__eq__ = lambda self, other: self is other or (
    _binop(operator.eq)(self, other) if not isinstance(other, (str, type(None))) else False)
Variable.__ne__ = lambda self, other: self is not other and _binop(operator.ne)(self, other)
for _name, _op in [("neg", operator.neg), ("pos", operator.pos), ("abs", operator.abs),
                   ("invert", operator.invert)]:
    setattr(Variable, f"__{_name}__", (lambda op: lambda self: op(self.get_value()))(_op))


# -- pytree registration -------------------------------------------------------------------------
def _flatten(v):
    raw = _get_raw(v)
    meta = _get_meta(v)
    is_ref = isinstance(raw, Ref)
    items = tuple(sorted(meta.items(), key=lambda kv: kv[0]))
    return (raw._value if is_ref else raw,), (items, is_ref)


def _flatten_with_keys(v):
    children, aux = _flatten(v)
    return ((jax.tree_util.GetAttrKey("value"), children[0]),), aux


def _unflatten_for(cls):
    def unflatten(aux, children):
        items, is_ref = aux
        value = children[0]
        return new(cls, new_ref(value) if is_ref else value, dict(items))

    return unflatten


def new_ref(value):
    r = object.__new__(Ref)
    r._value = value
    return r


def _register(cls):
    _adapter.register_pytree(cls, _flatten, _flatten_with_keys, _unflatten_for(cls))


_register(Variable)
jax.tree_util.register_pytree_node(Ref, lambda r: ((r._value,), None), lambda _, c: new_ref(c[0]))

# -- hijaxc counterparts of NNX Variable types ---------------------------------------------------
_MIRRORS = {}


def hijaxc_type(flax_type):
    """The hijaxc Variable type standing for an NNX Variable type (``nnx.Param`` -> ``Param``):
    a subclass of both, so NNX filters (``nnx.Param``) still select it."""
    if issubclass(flax_type, Variable):
        return flax_type
    t = _MIRRORS.get(flax_type)
    if t is None:
        t = type(flax_type.__name__, (Variable, flax_type),
                 {"__module__": flax_type.__module__, "__qualname__": flax_type.__qualname__})
        _MIRRORS[flax_type] = t
    return t


class Param(Variable, nnx.Param):
    """A trainable parameter (an ``nnx.Param``)."""


class BatchStat(Variable, nnx.BatchStat):
    """A batch statistic (an ``nnx.BatchStat``)."""


_MIRRORS[nnx.Variable] = Variable
_MIRRORS[nnx.Param] = Param
_MIRRORS[nnx.BatchStat] = BatchStat


def is_variable(x):
    """Any Variable hijaxc threads: hijaxc's, NNX's (lojax or flax-native hijax)."""
    return isinstance(x, nnx.Variable)


def mode_of(v):
    """(hijax, mutable) of any Variable: hijaxc flags, or hijaxc's default for an NNX Variable."""
    if isinstance(v, Variable):
        f = _flags(v)
        return f[0], f[2]
    if _adapter.is_flax_hijax(v):
        return True, True
    f = _get_meta(v).get(FLAGS)
    if f is not None:
        return f[0], f[2]
    return config.current().hijax, True

"""Observability of the trace cache: why a compiled function traced again, how often, at what cost.

Everything here runs only while JAX traces a pure step (``Observer.wrap`` wraps the function that
``jax.jit`` traces; a compiled call never runs Python), so the steady-state call pays nothing.

Per step, an ``Observer`` keeps a bounded list of ``TraceRecord``: the *signature* of each traced
call -- ``{(path, aspect): Item}``, one item per argument, static argument, Variable (value,
type, mode, metadata), Python scalar in configuration and container, by object path as the user
writes it (``model.l1.kernel``, ``steps``, ``config['lr']``).  A new trace is compared with the
closest earlier one; the differences are

- logged at INFO on the ``hijaxc`` logger (``hijaxc.jit(f, explain=True)`` or
  ``HIJAXC_EXPLAIN_RETRACES=1``) with the trace and compile time, and
- counted per path, so that after ``WARN_AFTER_TRACES`` traces a ``RetraceWarning`` names the
  path that keeps changing and how to keep it fixed.

Compile time comes from ``jax.monitoring`` duration events (lowering + backend compile) that
follow the trace on the same thread; the log line waits for them.
"""
from __future__ import annotations

import collections
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .discovery import GlobalPlace
from .pure_step import MISSING
from .spec import (
    VARIABLE_SPECS,
    DictSpec,
    Leaf,
    ListSpec,
    NodeSpec,
    Obj,
    PytreeOf,
    RefSpec,
    Static,
    TupleOf,
)

logger = logging.getLogger("hijaxc")

#: Warn once per function when it has traced more than this many times (0 turns it off);
#: ``hijaxc.jit(..., warn_after_traces=n)`` overrides it for one function.
WARN_AFTER_TRACES: int = 8
#: Environment variable: ``1`` explains the retraces of every compiled function.
ENV_EXPLAIN = "HIJAXC_EXPLAIN_RETRACES"
#: Earlier traces kept per function to compare a new trace with.
MAX_RECORDS = 32
#: Differences listed in one log line (the rest are counted).
MAX_LISTED = 12



class RetraceWarning(UserWarning):
    """A compiled function keeps tracing again (see ``hijaxc.jit(..., warn_after_traces=)``)."""


class CacheInfo(NamedTuple):
    """``f.cache_info()``: traces (of calls), hits (calls served without tracing), fast_calls
    (calls that took the steady-state path, which traces again only for new shapes), entries and
    max_entries of the structure cache."""

    traces: int
    hits: int
    fast_calls: int
    entries: int
    max_entries: int


class Options(NamedTuple):
    """What ``hijaxc.jit`` tells a step about observability."""

    explain: bool = False
    warn_after_traces: int | None = None  # None: WARN_AFTER_TRACES
    params: tuple = ()  # positional parameter names of the user function (args index -> name)


class Item(NamedTuple):
    """One entry of a signature: how the path is reached, what it shows, what it compares."""

    role: str  # argument | static argument | attribute | item | key | free variable
    category: str  # shape | static | config | mode | type | structure
    text: str
    cmp: Any


class Change(NamedTuple):
    path: str
    kind: str  # changed | new | removed
    category: str
    text: str
    topic: str = ""  # what keeps changing, for the warning: the path, or "the items of vs"
    aspect: str = ""  # of a changed Variable: "", type, mode, metadata
    old: str = ""
    new: str = ""

    def __str__(self) -> str:
        return self.text


class _TraceView(NamedTuple):
    """What a signature reads of a ``pure_step.Trace`` (not the trace itself: it holds the last
    trace's tracers)."""
    root_specs: Any
    objects_spec: Any
    statics: Any
    state_shardings: Any


class TraceRecord:
    """One trace, and its signature made when first read: only a retrace compares signatures,
    and a first trace making one for every Variable cost ~15 ms and ~5,000 objects kept alive
    on a 100-layer model (enough to tip the first call into a full garbage collection)."""

    __slots__ = ("number", "_view", "_avals", "_params", "_names", "_signature")

    def __init__(self, number: int, trace, leaves, params, step):
        self.number = number
        self._view = _TraceView(trace.root_specs, trace.objects_spec, trace.statics,
                                getattr(trace, "state_shardings", None))
        self._avals = [getattr(x, "aval", x) for x in leaves]  # (tracers: keep no trace alive)
        self._params, self._names = params, _free_names(step)
        self._signature = None

    @property
    def signature(self) -> dict:
        if self._signature is None:
            self._signature = signature(self._view, self._avals, self._params, self._names)
            self._view = self._avals = None
        return self._signature


@dataclass
class _Pending:
    message: str
    trace_s: float
    lower_s: float = 0.0


@dataclass
class Observer:
    """Per-step trace bookkeeping; all of it runs at trace time."""

    step: Any
    options: Options = field(default_factory=Options)
    records: collections.deque = field(
        default_factory=lambda: collections.deque(maxlen=MAX_RECORDS))
    traces: int = 0
    fast_traces: int = 0
    changes: collections.Counter = field(default_factory=collections.Counter)
    categories: dict = field(default_factory=dict)
    warned: bool = False

    def reset(self) -> None:
        self.records.clear()
        self.changes.clear()
        self.categories.clear()
        self.traces = self.fast_traces = 0
        self.warned = False

    @property
    def explaining(self) -> bool:
        return self.options.explain or os.environ.get(ENV_EXPLAIN, "").lower() not in (
            "", "0", "false", "no", "off")

    def wrap(self, pure: Callable, trace: Any) -> Callable:
        """``pure`` (what ``jax.jit`` traces) observed: runs only while tracing."""

        def observed(*leaves):
            kind = self._kind(trace)
            if kind is None:
                return pure(*leaves)
            _flush_stale()
            t0 = time.perf_counter()
            _TLS.depth = getattr(_TLS, "depth", 0) + 1
            try:
                out = pure(*leaves)
            finally:
                _TLS.depth -= 1
                self.traces += 1  # failed traces too (a call that retraces after discovering state)
                self.fast_traces += kind == "fast"
            self._traced(trace, leaves, time.perf_counter() - t0)
            return out

        observed.__dict__.update(getattr(pure, "__dict__", {}))
        for a in ("__module__", "__name__", "__qualname__", "__doc__", "__wrapped__"):
            try:
                setattr(observed, a, getattr(pure, a))
            except AttributeError:
                pass
        observed.__hx_trace__ = trace
        return observed

    def _kind(self, trace):
        """'call' (slow path), 'fast' (a retrace under the steady-state path) or None (lower,
        eval_shape, make_jaxpr: not a call)."""
        step = self.step
        try:
            entries = [e.pure for e in list(step.cache.values())]
        except RuntimeError:  # resized by another thread: count it as a call
            return "call"
        fast = step._fast
        if fast is not None:
            entries.append(fast.entry.pure)
        if not any(getattr(p, "__hx_trace__", None) is trace for p in entries):
            return None
        return "fast" if getattr(step._calling, "objects", None) is None else "call"

    def _traced(self, trace, leaves, trace_s):
        record = TraceRecord(self.traces, trace, leaves, self.options.params, self.step)
        changes = None
        if self.records:
            changes = closest_changes(record.signature, self.records)
            for c in changes:
                self.changes[c.topic or c.path] += 1
                self.categories[c.topic or c.path] = c.category
        self.records.append(record)
        self._maybe_warn()
        if changes is None or not self.explaining:
            return
        msg = format_retrace(self.step.name, self.step.where, self.traces, changes)
        if getattr(_TLS, "depth", 0) > 0:  # nested in another trace: compiled as part of it
            logger.info("%s [trace %s; compiled with the enclosing function]", msg, _ms(trace_s))
        else:
            _ensure_listener()
            _TLS.pending = _Pending(msg, trace_s)

    def _maybe_warn(self):
        limit = self.options.warn_after_traces
        limit = WARN_AFTER_TRACES if limit is None else limit
        if self.warned or not limit or self.traces <= limit:
            return
        self.warned = True
        path, n = self.changes.most_common(1)[0] if self.changes else ("", 0)
        category = self.categories.get(path, "")
        file, _, line = self.step.where.rpartition(":")
        warnings.warn_explicit(
            f"hijaxc: {self.step.name} ({self.step.where}) has traced {self.traces} times"
            + (f"; {path} changed in {n} of {self.traces - 1} retraces" if path else "")
            + f". {_ADVICE.get(category, _ADVICE[''])} Log each retrace with hijaxc.jit(..., "
            "explain=True) or HIJAXC_EXPLAIN_RETRACES=1; silence this with "
            "hijaxc.jit(..., warn_after_traces=0).", RetraceWarning, file or "<unknown>",
            int(line) if line.isdigit() else 0)


_ADVICE = {
    "shape": "Keep its shape and dtype fixed between calls (pad or bucket inputs to a few sizes).",
    "static": "Each new value of a static argument traces again: drop it from "
              "static_argnums/static_argnames so it is traced, or use few distinct values.",
    "config": "A Python scalar on a Module or in a global/closure is configuration, baked into the "
              "trace: hold it in a Variable or pass it as an array argument.",
    "structure": "Create attributes, list items and dict keys before the first call so the "
                 "structure stays fixed.",
    "mode": "Keep the Variables' mode flags (hijax, mutable) fixed between calls.",
    "type": "Keep the same types (Variable classes, pytree types) between calls.",
    "": "Keep argument shapes, static arguments and the objects' structure fixed between calls.",
}


# --- signatures ------------------------------------------------------------------------------
def signature(trace, leaves, params, names) -> dict:
    """``{(path components, aspect): Item}`` of one trace (a ``_TraceView``, and its leaves or
    their avals), in the split's visiting order."""
    return _Walk(trace, leaves).roots(params, names)


class _Walk:
    """Walks a trace's specs (spec.py) the way ``split`` visited them."""

    def __init__(self, trace, leaves):
        self.out, self.seen = {}, {}
        self.trace, self.leaves, self.specs = trace, leaves, trace.objects_spec
        self.shardings = getattr(trace, "state_shardings", {}) or {}

    def add(self, path, aspect, role, category, text, cmp):
        self.out[(path, aspect)] = Item(role, category, text, cmp)

    def roots(self, params, names):
        args_spec, kwargs_spec, free_spec = self.trace.root_specs
        for j, c in enumerate(args_spec.items):
            self.value(c, (params[j] if j < len(params) else f"args[{j}]",), "argument")
        if type(kwargs_spec) is Obj:
            self.seen[kwargs_spec.index] = ("**kwargs",)
            for key, c in self.specs[kwargs_spec.index].items:
                self.value(c, (str(key),), "argument")
        for j, c in enumerate(free_spec.items):
            self.value(c, (names[j] if j < len(names) else f"<free {j}>",), "free variable")
        for st in self.trace.statics:
            k = st.position
            name = (params[k] if k < len(params) else f"args[{k}]") if k is not None else st.name
            self.add((name,), "", "static argument", "static", _short(st.value),
                     _static_cmp(st.value))
        return self.out

    def children(self, specs, path, role, label):
        for j, c in enumerate(specs):
            self.value(c, path + (label(j),), role)

    def value(self, spec, path, role):
        t = type(spec)
        if t is Leaf:
            sh = self.shardings.get(spec.index)
            text = _aval_text(self.leaves[spec.index]) + (
                f" sharded {_sharding_text(sh.sharding)}" if sh else "")
            self.add(path, "", role, "shape", text, text)
        elif t is Static and spec.value is not MISSING:
            self.add(path, "", role, "config", _short(spec.value), _static_cmp(spec.value))
        elif t is TupleOf:
            self.add(path, "", role, "type", f"tuple of {len(spec.items)}", "tuple")
            self.children(spec.items, path, "item", lambda j: f"[{j}]")
        elif t is PytreeOf:
            self.add(path, "", role, "type", f"pytree {_short(spec.treedef)}", spec.treedef)
            self.children(spec.items, path, "item", lambda j: f"[{j}]")
        elif t is Obj:
            k = spec.index
            if k in self.seen:
                first = "".join(self.seen[k])
                self.add(path, "", role, "structure", f"same object as {first}", ("alias", first))
            else:
                self.seen[k] = path
                self.content(self.specs[k], path, role)

    def content(self, spec, path, role):
        t = type(spec)
        if t in VARIABLE_SPECS:
            self.variable(spec, path, role)
        elif t is RefSpec:
            text = _aval_text(self.leaves[spec.leaf])
            self.add(path, "", role, "shape", "Ref " + text, text)
        elif t is ListSpec:
            self.add(path, "", role, "type", "list", "list")
            self.children(spec.items, path, "item", lambda j: f"[{j}]")
        elif t is DictSpec:
            self.add(path, "", role, "type", "dict", "dict")
            for key, c in spec.items:
                self.value(c, path + (f"[{key!r}]",), "key")
        elif t is NodeSpec:
            self.add(path, "", role, "type", spec.cls.__name__, spec.cls)
            for name, c in spec.attributes:
                internal = isinstance(name, str) and name.startswith(("_pytree__", "_object__"))
                role_ = "internal attribute" if internal else "attribute"
                self.value(c, path + (f".{name}",), role_)

    def variable(self, spec, path, role):
        if type(spec.value) is not Obj:  # an array leaf, or a non-array value kept as static
            self.value(spec.value, path, role)
        else:
            self.add(path, "", role, "structure", "Variable holding a Ref", "ref")
            self.value(spec.value, path + (".ref",), "attribute")
        self.add(path, "type", role, "type", spec.cls.__name__, spec.cls)
        mode = spec.mode
        mode_text = ("hijax" if mode.hijax else "lojax") + ("" if mode.mutable else ", immutable")
        self.add(path, "mode", role, "mode", mode_text, tuple(mode))
        meta = {k: v for k, v in dict(spec.metadata).items() if k not in _MODE_METADATA}
        if meta:
            self.add(path, "metadata", role, "config", _short(meta), _static_cmp(_meta_items(meta)))


_MODE_METADATA = frozenset({"hijax", "ref", "mutable", "hijaxc"})  # reported as the mode


def _free_names(step):
    names = list(getattr(step, "free_names", ()))
    for place in getattr(step, "extra", ()):
        names.append(place.name if isinstance(place, GlobalPlace) else "<closure cell>")
    return names


def _aval_text(x) -> str:
    aval = getattr(x, "aval", x)  # (a leaf, or its aval)
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is None or dtype is None:
        return type(x).__name__
    weak = " (weak type)" if getattr(aval, "weak_type", False) else ""
    return f"{getattr(dtype, 'name', dtype)}[{','.join(map(str, shape))}]{weak}"


def _sharding_text(sh) -> str:
    spec = getattr(sh, "spec", None)
    return str(spec) if spec is not None else type(sh).__name__


def _short(x, limit=60) -> str:
    try:
        text = repr(x)
    except Exception:  # noqa: BLE001  (any user object's repr may raise)
        text = f"<{type(x).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _meta_items(meta):
    return tuple(sorted(meta.items(), key=lambda kv: kv[0]))


def _static_cmp(x):
    try:
        hash(x)
        return (type(x), x)
    except TypeError:
        return ("id", id(x))


# --- comparing -------------------------------------------------------------------------------
def diff(old: dict, new: dict) -> list[Change]:
    """The differences from signature ``old`` to ``new``; a new/removed subtree is one change;
    flax's own bookkeeping attributes only when nothing else differs."""
    out = _diff(old, new)
    user = [c for c in out if c.category != "internal"]
    return user or out


def _diff(old, new):
    out = []
    new_roots, gone_roots = [], []
    for key, item in new.items():
        path, aspect = key
        o = old.get(key)
        if o is None:
            if aspect or _under(path, new_roots):
                continue
            new_roots.append(path)
            out.append(_change(path, "new", item))
        elif not _cmp_equal(o.cmp, item.cmp):
            suffix = f" ({aspect})" if aspect else ""
            cat = "internal" if item.role == "internal attribute" else item.category
            if aspect == "" and item.category == "shape" and o.category != "shape":
                cat = "type"
            out.append(Change("".join(path), "changed", cat,
                              f"{''.join(path)}{suffix}: {o.text} -> {item.text}", "", aspect,
                              o.text, item.text))
    for key, item in old.items():
        path, aspect = key
        if key in new or aspect or _under(path, gone_roots):
            continue
        gone_roots.append(path)
        out.append(_change(path, "removed", item))
    return out


def _cmp_equal(a, b):
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001  (arrays and user objects without a plain truth value)
        return a is b


def _under(path, roots):
    return any(path[:len(r)] == r for r in roots)


def _change(path, kind, item):
    p = "".join(path)
    if item.role == "static argument":  # passed in one call, left to its default in the other
        old, new = ("(not passed)", item.text) if kind == "new" else (item.text, "(not passed)")
        return Change(p, "changed", "static", f"{p}: {old} -> {new}")
    cat = "shape" if item.role == "argument" and item.category == "shape" else "structure"
    if item.role == "internal attribute":
        cat = "internal"
    parent = "".join(path[:-1])
    topic = f"the {item.role.split()[-1]}s of {parent}" if parent else f"the {item.role}s"
    text = f"{kind} {item.role} {p}" + (f": {item.text}" if kind == "new" else "")
    return Change(p, kind, cat, text,
                  topic)


def closest_changes(sig: dict, records) -> list[Change]:
    best = None
    for rec in reversed(records):
        d = diff(rec.signature, sig)
        if best is None or len(d) < len(best):
            best = d
            if not d:
                break
    return best


def _grouped(changes: list[Change]) -> list[str]:
    """Changes that read the same but for the path (a mode flag flipped on every Variable) are
    listed once with a count and the first paths."""
    groups: dict = {}
    for c in changes:
        key = (c.aspect, c.old, c.new) if c.kind == "changed" and c.aspect else id(c)
        groups.setdefault(key, []).append(c)
    out = []
    for key, cs in groups.items():
        if isinstance(key, tuple) and len(cs) > 2:
            paths = ", ".join(c.path for c in cs[:3]) + (", ..." if len(cs) > 3 else "")
            out.append(f"{key[0]} of {len(cs)} Variables ({paths}): {key[1]} -> {key[2]}")
        else:
            out.extend(c.text for c in cs)
    return out


def format_retrace(name: str, where: str, number: int, changes: list[Change]) -> str:
    if changes:
        changes = _grouped(changes)
        listed = "; ".join(changes[:MAX_LISTED])
        if len(changes) > MAX_LISTED:
            listed += f"; and {len(changes) - MAX_LISTED} more"
    else:
        listed = ("no difference from an earlier trace (its cache entry was evicted or cleared, "
                  "or which buffers can be donated changed)")
    return f"retrace #{number} of {name} ({where}): {listed}"


# --- compile time: jax.monitoring events that follow the trace on the same thread -------------
_TLS = threading.local()
_LOWER_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_listener_lock = threading.Lock()
_listening = [False]


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def _emit(p: _Pending, compile_s: float | None, note: str = "") -> None:
    cost = f"trace {_ms(p.trace_s)}"
    if compile_s is not None:
        cost += f", compile {_ms(p.lower_s + compile_s)}"
    logger.info("%s [%s%s]", p.message, cost, note)


def _flush_stale() -> None:
    p = getattr(_TLS, "pending", None)
    if p is not None:  # its compile event never came (a persistent-cache hit, a failure)
        _TLS.pending = None
        _emit(p, None, "; not compiled")


def _on_duration(event, duration, *args, **kwargs) -> None:
    p = getattr(_TLS, "pending", None)
    if p is None:
        return
    if event == _LOWER_EVENT:
        p.lower_s += duration
    elif event == _COMPILE_EVENT:
        _TLS.pending = None
        _emit(p, duration)


def _ensure_listener() -> None:
    if _listening[0]:
        return
    with _listener_lock:
        if not _listening[0]:
            import jax.monitoring

            jax.monitoring.register_event_duration_secs_listener(_on_duration)
            _listening[0] = True


# --- f.cache_info() / f.cache_clear() ---------------------------------------------------------
def cache_info(step) -> CacheInfo:
    """Counts of a step; ``hits`` are calls that ran without tracing (slow-path calls are counted
    by their splits, fast ones by ``stats['fast_calls']``; the traces of each are subtracted)."""
    obs = step.observer
    stats = step.stats
    slow_traces = obs.traces - obs.fast_traces
    hits = max(0, stats["splits"] - slow_traces) + max(0, stats["fast_calls"] - obs.fast_traces)
    return CacheInfo(obs.traces, hits, stats["fast_calls"], len(step.cache), step.max_cache)


def cache_clear(step) -> None:
    """Drop every traced entry (the next call traces again) and reset the counts."""
    with step._lock:
        step.cache.clear()
        step._fast = None
        for k in step.stats:
            step.stats[k] = 0
        step.observer.reset()

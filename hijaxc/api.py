"""The public compiler API: ``jit``, ``show``, ``make_jaxpr``.

The conversion itself is a flat list of stages, one module each::

    parsed   = parse.parse(fn)                          # source -> gast
    analysis = analyse.analyse(parsed, fn)              # free names, threaded candidates, errors
    node     = rewrite(parsed, analysis, fn)            # the passes of hijaxc/passes/, in order
    source   = load.render(node, ...)                   # ast.unparse + origin comments
    codes    = load.compile_module(source, ...)         # linecache + compile
    body, pure_step = load.bind(codes, fn, runtime)     # over the user's own cells and globals
"""
from __future__ import annotations

import functools
import inspect
import types
import warnings
from typing import Any, Callable, Literal, NamedTuple, Sequence, overload

import gast

from . import analyse, cache, load, parse
from . import runtime as _rt
from .passes import (
    callees,
    declarations,
    foreign,
    lambda_def,
    mutations,
    private_names,
    super_call,
    threaded_params,
    transforms,
)
from .runtime import explain as _explain
from .runtime import step as _step
from .runtime.errors import SourceUnavailableError, UnsupportedSyntaxError
from .transformer import Context

_NNX_GRAPH_CONTEXT = _rt._adapter.NNX_GRAPH_CONTEXT
_EPOCH, _MISS = _rt._adapter.EPOCH, _rt.steady_state.MISS
_Rediscover = _rt.discovery.Rediscover


class _PyDispatch:
    """``JitFunction``'s call where the C extension is absent; with it, ``_speedups.Dispatch``
    runs the steady state of ``JitFunction._call`` with no Python frame (runtime/_dispatch.c)."""

    __slots__ = ("_step", "_plain")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(args, kwargs)


def _dispatch_base() -> type:
    ext = _rt.native.module()
    if ext is None:
        return _PyDispatch
    ext.configure(_EPOCH, _MISS, _Rediscover, _NNX_GRAPH_CONTEXT, _step.Step,
                  _rt.steady_state.Fast)
    return ext.Dispatch

def rewrite(parsed: parse.Parsed, analysis: analyse.Analysis, fn: types.FunctionType):
    """The user's function -> the body hijaxc traces: each pass's docstring shows what it does."""
    ctx = Context.make(parsed, analysis, fn)
    node = lambda_def.transform(parsed.node, ctx)
    node = callees.transform(node, ctx)  # first: decides on the user's own expressions
    node = super_call.transform(node, ctx)
    node = private_names.transform(node, ctx)
    node = transforms.transform(node, ctx)
    node = foreign.transform(node, ctx)  # after transforms: wraps the roots left standing
    node = mutations.transform(node, ctx)
    node = declarations.transform(node, ctx)
    node = threaded_params.transform(node, ctx)
    return gast.fix_missing_locations(node)


class Transformed:
    """The result of compiling one function (cached per code object and closure layout)."""

    __slots__ = ("source", "codes", "threaded", "fallback", "filename", "analysis")


def transform(fn):
    def make():
        t = Transformed()
        try:
            parsed = parse.parse(fn)
        except SourceUnavailableError as e:
            where = _rt.location.user_location()
            path, _, line = where.rpartition(":")
            warnings.warn_explicit(
                f"hijaxc: {e}; falling back to threading arguments and closure cells without "
                "rewriting the function (globals it reads are not threaded).", UserWarning,
                path, int(line) if line.isdigit() else 0)
            t.fallback, t.source, t.codes, t.analysis = True, None, None, None
            t.threaded = fn.__code__.co_freevars[:len(fn.__closure__ or ())]
            return t
        analysis = analyse.analyse(parsed, fn)
        node = rewrite(parsed, analysis, fn)
        source, gen_map, _ = load.render(node, parsed, fn, analysis)
        t.codes = load.compile_module(source, gen_map, fn.__qualname__)
        t.source, t.filename, t.analysis = source, t.codes[2], analysis
        t.threaded, t.fallback = tuple(analysis.threaded), False
        return t

    return cache.get_or_make(fn, make, None)


def convert_callee(fn):
    """``fn`` rewritten like a compiled function but threading nothing (it is called during a
    trace, on the trace's objects): transforms redirected, mutations located, its own calls routed
    through the runtime.  None when it cannot be converted (no source, a generator): the runtime
    then calls it as it is.  Registered with ``runtime.callees``; cached per code object."""

    def make():
        try:
            parsed = parse.parse(fn)
            analysis = analyse.analyse(parsed, fn, callee=True)
        except (SourceUnavailableError, UnsupportedSyntaxError):
            return None
        try:
            node = rewrite(parsed, analysis, fn)
            source, gen_map, _ = load.render(node, parsed, fn, analysis, pure=False)
            return load.compile_module(source, gen_map, fn.__qualname__), source
        except Exception as e:  # a compiler bug must not break a call that works unconverted
            warnings.warn(f"hijaxc: could not convert {fn.__qualname__} "
                          f"({fn.__code__.co_filename}:{fn.__code__.co_firstlineno}), called from "
                          f"compiled code: {type(e).__name__}: {e}; calling it unconverted "
                          "(JAX transforms inside it do not thread state)", RuntimeWarning,
                          stacklevel=1)
            return None

    made = cache.get_or_make(fn, make, "callee")
    if made is None:
        return None
    return load.bind(made[0], fn, _rt)[0]


def converted_source(fn: Callable) -> str | None:
    """The generated source of a function as converted when called from compiled code (None when
    it is not converted); for debugging: ``hijaxc.show`` prints only the compiled function."""
    if isinstance(fn, types.MethodType):
        fn = fn.__func__
    if convert_callee(fn) is None:
        return None
    return cache.get_or_make(fn, lambda: None, "callee")[1]


_rt.callees.set_converter(convert_callee)


def _fallback_pure(fn, names):
    """Pure step for a function without source: fresh objects go in through new closure cells."""
    index = {n: i for i, n in enumerate(fn.__code__.co_freevars)}

    def pure(trace, *leaves):
        with trace.begin(leaves) as (args, kwargs, free):
            cells = list(fn.__closure__ or ())
            for n, v in zip(names, free, strict=False):
                cells[index[n]] = types.CellType(v)
            g = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__,
                                   tuple(cells) or None)
            g.__kwdefaults__ = fn.__kwdefaults__
            return trace.end(g(*args, **kwargs))

    pure.__name__ = f"{fn.__name__}__pure_step"
    return pure


class Target(NamedTuple):
    """What a callable compiles to: the Python function, and the arguments bound in front of (and
    the keywords bound under) the caller's."""

    fn: types.FunctionType
    args: tuple
    kwargs: dict


def resolve_target(fun: Callable) -> Target:
    """The Python function behind any callable ``jax.jit`` accepts (S13): functions, bound methods,
    ``functools.partial`` (nested too), a ``hijaxc.jit`` or ``jax.jit`` object (compiled as the
    function it wraps: one jit over the whole step, as jit-inside-jit would trace), and callable
    objects such as Module instances (their class's ``__call__``, the instance bound first)."""
    if isinstance(fun, types.FunctionType):
        return Target(fun, (), {})
    if isinstance(fun, functools.partial):
        inner = resolve_target(fun.func)
        return Target(inner.fn, inner.args + tuple(fun.args), {**inner.kwargs, **fun.keywords})
    if isinstance(fun, JitFunction):
        inner = resolve_target(fun._fn)
        return Target(inner.fn, fun._bound + inner.args, {**inner.kwargs, **fun._bound_kw})
    if isinstance(fun, types.MethodType):
        inner = resolve_target(fun.__func__)
        return Target(inner.fn, (fun.__self__,) + inner.args, inner.kwargs)
    wrapped = getattr(fun, "__wrapped__", None)
    if wrapped is not None and hasattr(fun, "lower"):  # a jax.jit-wrapped function
        return resolve_target(wrapped)
    # the class's own ``__call__`` function (not callable(): its code is what we inspect)
    call = getattr(type(fun), "__call__", None)  # noqa: B004
    if isinstance(call, types.FunctionType):
        return Target(call, (fun,), {})
    raise TypeError(f"hijaxc.jit needs a Python callable (function, method, functools.partial, "
                    f"or an object whose class defines __call__ in Python), got "
                    f"{type(fun).__name__}: {fun!r:.80}")


def static_positions(fn: types.FunctionType, n_bound: int, argnums, argnames):
    """``(argnums, argnames)`` of ``fn``'s own signature, each completed from the other as
    ``jax.jit`` does: given only numbers, the names of those positional-or-keyword parameters are
    static too (and the other way round), so a static argument is static however it is passed.
    ``argnums`` count the caller's arguments (after ``n_bound`` bound ones)."""
    argnums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    argnames = (argnames,) if isinstance(argnames, str) else tuple(argnames)
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = []
    positional = [p.name if p.kind is p.POSITIONAL_OR_KEYWORD else None for p in params
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    nums = tuple(i + n_bound if i >= 0 else i for i in argnums)
    if argnums and not argnames:
        argnames = tuple(positional[i] for i in nums if -len(positional) <= i < len(positional)
                         and positional[i] is not None)
    elif argnames and not argnums:
        nums = tuple(i for i, name in enumerate(positional) if name in argnames)
    return nums, argnames


def _new_jit_function(cls: type) -> JitFunction:
    """An uninitialised ``cls`` (a ``JitFunction``), for copies and pickles (``__reduce__``)."""
    obj = cls.__new__(cls)
    obj._step, obj._plain = None, False
    return obj


class JitFunction(_dispatch_base()):
    """What ``hijaxc.jit`` returns: call it like the function; ``.lower``, ``.trace``,
    ``.eval_shape``, ``__wrapped__``; a descriptor, so it decorates methods too."""

    def __init__(self, fun: Callable, *, static_argnums: int | Sequence[int] = (),
                 static_argnames: str | Sequence[str] = (), donate: str = "auto",
                 aliasing: Literal["share", "error"] = "share", explain: bool = False,
                 warn_after_traces: int | None = None, **jit_kwargs: Any) -> None:
        if aliasing not in ("share", "error"):
            raise ValueError(f"aliasing must be 'share' or 'error', got {aliasing!r}")
        target = resolve_target(fun)
        self._fn, self._bound, self._bound_kw = target.fn, target.args, target.kwargs
        functools.update_wrapper(self, target.fn)
        self.__wrapped__ = fun
        self._options = dict(static_argnums=static_argnums, static_argnames=static_argnames,
                             donate=donate, aliasing=aliasing, jit_kwargs=jit_kwargs,
                             explain=explain, warn_after_traces=warn_after_traces)
        self._step = None
        self._plain = not (self._bound or self._bound_kw)  # the C entry may try the steady state

    def _options_kwargs(self):
        o = dict(self._options)
        return {**o.pop("jit_kwargs"), **o}

    # compile lazily (decoration stays cheap; globals defined after the def are seen)
    @property
    def step(self):
        st = self._step
        if st is None:
            st = self._step = self._make_step()
        return st

    def _make_step(self):
        fn = self._fn
        t = transform(fn)
        names = t.threaded
        if t.fallback:
            pure = _fallback_pure(fn, names)
        else:
            _, pure = load.bind(t.codes, fn, _rt)
        cells = dict(zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=False))
        o = self._options
        argnums, argnames = static_positions(fn, len(self._bound), o["static_argnums"],
                                             o["static_argnames"])
        return _step.Step(
            pure, fn.__name__, free_names=names, free_cells=[cells.get(n) for n in names],
            free_globals=fn.__globals__,
            static_argnums=argnums, static_argnames=argnames, donate=o["donate"],
            aliasing=o["aliasing"], where=f"{fn.__code__.co_filename}:{fn.__code__.co_firstlineno}",
            jit_kwargs=o["jit_kwargs"],
            observe=_explain.Options(o.get("explain", False), o.get("warn_after_traces"),
                                     fn.__code__.co_varnames[:fn.__code__.co_argcount]))

    def _args(self, args, kwargs):
        if self._bound:
            args = self._bound + args
        if self._bound_kw:
            kwargs = {**self._bound_kw, **kwargs}
        return args, kwargs

    def _call(self, args: tuple, kwargs: dict) -> Any:
        """The call (``_speedups.Dispatch`` does its steady state in C where it applies)."""
        if _NNX_GRAPH_CONTEXT is not None and _NNX_GRAPH_CONTEXT.tmp_static_cache is not None:
            # called through nnx.cached_partial: its cached objects are clones sharing the
            # caller's Variables; hijaxc keeps its own cache, flax's must be consumed
            _NNX_GRAPH_CONTEXT.tmp_static_cache = None
        if self._bound or self._bound_kw:
            args, kwargs = self._args(args, kwargs)
        else:
            self._plain = True  # (again: a deep copy or an unpickled one starts without it)
        step = self._step or self.step
        fast = step._fast  # Step.call, inlined (issue 15: each Python frame is ~3 % at N = 10)
        if fast is not None and fast.epoch == _EPOCH[0]:
            try:
                out = fast.call(args, kwargs)
            except (Exception, _Rediscover) as e:
                return step.after_fast_error(e, args, kwargs)
            if out is not _MISS:
                return out
        return step.slow_call(args, kwargs)

    # The C base's slots (``_step``, ``_plain``) are not in ``__dict__``: a shallow copy shares the
    # compiled step, as it did when ``_step`` lived in ``__dict__``; a deep copy (or a pickle)
    # starts without one and compiles on its first call.
    def __copy__(self) -> JitFunction:
        other = _new_jit_function(type(self))
        other.__dict__.update(self.__dict__)
        other._step, other._plain = self._step, self._plain
        return other

    def __reduce__(self):
        return _new_jit_function, (type(self),), dict(self.__dict__)

    def __get__(self, obj: Any, objtype: type | None = None) -> JitFunction:
        if obj is None:
            return self
        bound = JitFunction.__new__(JitFunction)
        bound.__dict__.update(self.__dict__)
        bound._bound = (obj,) + tuple(self._bound)
        bound._step = self.step  # share caches between instances
        bound._plain = False
        return bound

    def lower(self, *args: Any, **kwargs: Any) -> Any:
        return self.step.lower(*self._args(args, kwargs)[0], **self._args(args, kwargs)[1])

    def trace(self, *args: Any, **kwargs: Any) -> Any:
        if not _rt._adapter.HAS_JIT_TRACE:
            raise AttributeError("this JAX has no jit(...).trace; use .lower")
        a, k = self._args(args, kwargs)
        return self.step.trace(*a, **k)

    def eval_shape(self, *args: Any, **kwargs: Any) -> Any:
        a, k = self._args(args, kwargs)
        return self.step.eval_shape(*a, **k)

    def cache_info(self) -> _explain.CacheInfo:
        """``CacheInfo(traces, hits, fast_calls, entries, max_entries)``, like
        ``functools.lru_cache``'s: traces of calls, calls served without tracing, of those the
        steady-state ones, and the entries (one per traced structure) of the bounded cache."""
        return _explain.cache_info(self.step)

    def cache_clear(self) -> None:
        """Forget every traced entry (the next call traces again) and reset the counts."""
        _explain.cache_clear(self.step)

    def __repr__(self) -> str:
        return f"<hijaxc.jit {self._fn.__qualname__}>"


def cached_partial(f: Callable, *cached_args: Any) -> JitFunction:
    """``nnx.cached_partial`` for hijaxc: ``f`` (a function or a ``hijaxc.jit`` one, whose options
    are kept) with ``cached_args`` bound in front.  hijaxc's steady state already skips the graph
    walk while the same objects come back, so unlike flax's this needs no clones: the bound objects
    are the caller's own, and structural changes inside reach them as in any call."""
    if isinstance(f, JitFunction):
        return JitFunction(functools.partial(f, *cached_args), **f._options_kwargs())
    return JitFunction(functools.partial(f, *cached_args))


@overload
def jit(fun: Callable, *, static_argnums: int | Sequence[int] = (),
        static_argnames: str | Sequence[str] = (), donate: str = "auto",
        aliasing: Literal["share", "error"] = "share", explain: bool = False,
        warn_after_traces: int | None = None, **jit_kwargs: Any) -> JitFunction: ...


@overload
def jit(fun: None = None, *, static_argnums: int | Sequence[int] = (),
        static_argnames: str | Sequence[str] = (), donate: str = "auto",
        aliasing: Literal["share", "error"] = "share", explain: bool = False,
        warn_after_traces: int | None = None,
        **jit_kwargs: Any) -> Callable[[Callable], JitFunction]: ...


def jit(fun: Callable | None = None, *, static_argnums: int | Sequence[int] = (),
        static_argnames: str | Sequence[str] = (), donate: str = "auto",
        aliasing: Literal["share", "error"] = "share", explain: bool = False,
        warn_after_traces: int | None = None,
        **jit_kwargs: Any) -> JitFunction | Callable[[Callable], JitFunction]:
    """Compile ``fun`` so the Variables it reaches keep hijax semantics under ``jax.jit``.

    Usable bare (``@hijaxc.jit``) and with options (``@hijaxc.jit(static_argnums=1)``).  Extra
    keyword arguments (``in_shardings``, ``out_shardings``, ...) go to ``jax.jit``.
    ``explain=True`` logs every retrace (logger ``hijaxc``, INFO) with what changed;
    ``warn_after_traces`` (default ``hijaxc.runtime.explain.WARN_AFTER_TRACES``, 8; 0 turns it
    off): warn once when the function has traced more than that many times.
    """
    if fun is None:
        return functools.partial(jit, static_argnums=static_argnums,
                                 static_argnames=static_argnames, donate=donate, aliasing=aliasing,
                                 explain=explain, warn_after_traces=warn_after_traces, **jit_kwargs)
    return JitFunction(fun, static_argnums=static_argnums, static_argnames=static_argnames,
                       donate=donate, aliasing=aliasing, explain=explain,
                       warn_after_traces=warn_after_traces, **jit_kwargs)


def _as_jit(f):
    return f if isinstance(f, JitFunction) else JitFunction(f)


def show(f: Callable, *args: Any, diff: bool = False, **kwargs: Any) -> str:
    """The generated Python source of ``f`` (pure step and body); with example arguments, also
    which objects a call threads.  ``diff=True``: a unified diff from the user's source (``-``)
    to the generated body (``+``) instead."""
    j = _as_jit(f)
    t = transform(j._fn)
    if t.fallback:
        text = (f"# hijaxc: no source for {j._fn.__qualname__}; threaded through closure cells "
                f"without rewriting: {', '.join(t.threaded) or '-'}\n")
    elif diff:
        from .diff import source_diff

        text = source_diff(j._fn, t.source)
    else:
        text = t.source
    if args or kwargs:
        a, k = j._args(args, kwargs)
        s = j.step.threaded(*a, **k)
        lines = ["", "# threaded objects for these arguments (path: type):"]
        for k_, obj in enumerate(s.objects):
            if isinstance(obj, (list, dict)):
                continue
            lines.append(f"#   {_path(s.paths[k_], j, t)}: {type(obj).__name__}")
        text += "\n".join(lines) + "\n"
    return text


def _path(p, j, t):
    root = p[0]
    rest = p[1:]
    if root == "closure" and rest:
        name = t.threaded[rest[0]]
        rest = rest[1:]
    elif root == "args" and rest:
        try:
            params = list(inspect.signature(j._fn).parameters)
            name = params[rest[0]] if rest[0] < len(params) else f"args[{rest[0]}]"
        except (TypeError, ValueError):
            name = f"args[{rest[0]}]"
        rest = rest[1:]
    elif root == "kwargs" and rest:
        name, rest = str(rest[0]), rest[1:]
    else:
        name = root
    return name + "".join(f".{r}" if isinstance(r, str) else f"[{r}]" for r in rest)


def make_jaxpr(f: Callable, **jaxpr_kwargs: Any) -> Callable[..., Any]:
    """``make_jaxpr(f)(*args)``: the jaxpr of the pure step, threaded state as inputs/outputs."""
    j = _as_jit(f)

    def run(*args, **kwargs):
        a, k = j._args(args, kwargs)
        return j.step.make_jaxpr(*a, **k)

    return run

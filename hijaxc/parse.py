"""Stage 1 — parse: a live function -> (gast tree of its definition, source info).

``inspect.getsource`` -> dedent -> ``gast.parse``; decorators are stripped (the function is compiled
as written, without re-applying ``@hijaxc.jit``), and a lambda is trimmed out of the line that holds
it by matching its line and argument names.

    >>> def f(v):
    ...     v[...] += 1
    >>> parsed = parse(f)            # doctest: +SKIP
    >>> type(parsed.node).__name__   # doctest: +SKIP
    'FunctionDef'
"""
import inspect
import linecache
import textwrap
from dataclasses import dataclass

import gast

from .runtime.errors import SourceUnavailableError, UnsupportedSyntaxError

#: Counts real parses (tests check that later calls re-parse nothing).
PARSE_COUNT = [0]


@dataclass
class Parsed:
    node: object  # gast.FunctionDef or gast.Lambda (decorators removed)
    module: object  # the gast.Module holding it
    filename: str
    line_offset: int  # add to a node's lineno to get the line in ``filename``
    source: str


def parse(fn):
    code = fn.__code__
    filename = code.co_filename
    try:
        lines, start = inspect.getsourcelines(fn)
    except (OSError, TypeError) as e:
        raise SourceUnavailableError(
            f"source of {fn.__qualname__} ({filename}:{code.co_firstlineno}) is unavailable: {e}"
        ) from None
    PARSE_COUNT[0] += 1
    source = textwrap.dedent("".join(lines))
    start = max(start, 1)
    if fn.__name__ == "<lambda>":
        return _parse_lambda(fn, source, filename, start)
    if code.co_flags & (inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR):
        raise UnsupportedSyntaxError(f"{fn.__qualname__} is a generator (`yield`); hijaxc.jit "
                                     "needs a function that returns", filename,
                                     _first_yield_line(source, start) or code.co_firstlineno)
    if code.co_flags & inspect.CO_COROUTINE:
        raise UnsupportedSyntaxError(f"{fn.__qualname__} is an async function; hijaxc.jit cannot "
                                     "compile coroutines", filename, code.co_firstlineno)
    try:
        module = gast.parse(source)
    except SyntaxError as e:
        raise SourceUnavailableError(
            f"source of {fn.__qualname__} does not parse on its own: {e}") from None
    node = module.body[0]
    if isinstance(node, gast.AsyncFunctionDef):
        raise UnsupportedSyntaxError(f"{fn.__qualname__} is an async function", filename, start)
    if not isinstance(node, gast.FunctionDef):
        raise SourceUnavailableError(f"could not find the definition of {fn.__qualname__}")
    node.decorator_list = []
    return Parsed(node, module, filename, start - 1, source)


def _parse_lambda(fn, source, filename, start):
    # the lambda's line(s) may not parse alone: try growing prefixes/suffixes of the statement
    text = source.strip()
    candidates = [text, "(" + text + ")", text.rstrip(",") , "x = " + text.split("=", 1)[-1]]
    module = None
    for t in candidates:
        try:
            module = gast.parse(t)
            break
        except SyntaxError:
            continue
    if module is None:
        raise SourceUnavailableError(f"could not isolate the lambda at {filename}:{start}")
    want = list(fn.__code__.co_varnames[: fn.__code__.co_argcount])
    found = [n for n in gast.walk(module) if isinstance(n, gast.Lambda)
             and [a.id for a in n.args.args] == want]
    if len(found) != 1:
        raise SourceUnavailableError(
            f"found {len(found)} lambdas with arguments {want} at {filename}:{start}; cannot tell "
            "which one to compile (give it a name with def)")
    return Parsed(found[0], module, filename, start - 1, text)


def source_line(filename, lineno):
    return linecache.getline(filename, lineno).rstrip()


def _first_yield_line(source, start):
    try:
        node = gast.parse(source).body[0]
    except (SyntaxError, IndexError):
        return None
    stack = list(gast.iter_child_nodes(node))
    lines = []
    while stack:
        n = stack.pop()
        if isinstance(n, (gast.Yield, gast.YieldFrom)):
            lines.append(n.lineno)
        if not isinstance(n, (gast.FunctionDef, gast.AsyncFunctionDef, gast.Lambda)):
            stack.extend(gast.iter_child_nodes(n))
    return min(lines) + start - 1 if lines else None

"""Stage 2 — analyse: which names a function reads from outside (closure cells, globals),
which of them may hold state, and which constructs hijaxc cannot compile.

Scopes and def-use come from beniget: the function is analysed on its own, so every identifier it
(or a function nested in it) uses without binding is "unbound" to beniget — exactly the free names
we must resolve against the closure and the globals at call time.

    def step(x):              free: model (global), counter (closure), jnp (global module)
        counter[...] += 1     threaded candidates: model, counter
        return model(jnp.sin(x))
"""
import builtins
import inspect
import types
from dataclasses import dataclass, field

import beniget
import gast

from .runtime import reach as _reach
from .runtime.errors import UnsupportedSyntaxError

# Values that never hold state: resolving them at transform time keeps them out of the threaded
# set (the body reads them directly, live).
_NEVER_STATE = (types.ModuleType, type, types.BuiltinFunctionType, types.FunctionType,
                types.MethodType, int, float, str, bool, bytes, complex, type(None))


class _Chains(beniget.DefUseChains):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.free = {}

    def unbound_identifier(self, name, node):  # beniget's hook; collect instead of warning
        self.free.setdefault(name, node)

    def warn(self, msg, node):  # silence beniget's own printing
        pass


@dataclass
class Analysis:
    free_names: list  # every free name, in first-use order
    threaded: list  # candidates that may hold state (resolved per call)
    closure_names: set
    rebinds: set = field(default_factory=set)  # names declared global/nonlocal and assigned
    # a converted callee's candidates: read through the runtime (``__hx.foreign``), which gives
    # the trace's copy of state the step threads and makes the step thread state it does not yet
    foreign: list = field(default_factory=list)


def analyse(parsed, fn, callee=False):
    """``callee``: a function called from compiled code (converted at trace time, see
    ``runtime/callees.py``): nothing is threaded into it as a parameter (it runs inside the trace);
    its candidates become ``foreign`` reads instead."""
    node = parsed.node
    declared, assigns = _walk_body(parsed, fn)
    body = [node] if not isinstance(node, gast.Lambda) else [gast.Expr(value=node)]
    chains = _Chains()
    chains.visit(gast.Module(body=body, type_ignores=[]))
    free = list(chains.free)
    closure = dict(zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=False))
    threaded = _candidates(free, closure, fn.__globals__)
    if callee:
        return Analysis(free, [], set(closure) & set(free), set(), foreign=threaded)
    rebinds = _rebinds(declared, assigns, closure, parsed, fn)
    threaded = [n for n in threaded if n not in rebinds]
    return Analysis(free, threaded, set(closure) & set(free), rebinds)


def _walk_body(parsed, fn):
    """One walk: the ``global``/``nonlocal`` declarations (name -> node) and the assignments;
    ``yield`` and async constructs are rejected."""
    filename, off = parsed.filename, parsed.line_offset
    declared = {}
    assigns = []
    for n in _own_nodes(parsed.node):
        if isinstance(n, (gast.Global, gast.Nonlocal)):
            for name in n.names:
                declared[name] = n
        elif isinstance(n, (gast.Assign, gast.AugAssign, gast.AnnAssign)):
            assigns.append(n)
        elif isinstance(n, (gast.Yield, gast.YieldFrom)):
            raise UnsupportedSyntaxError(
                f"`yield` in {fn.__qualname__}: hijaxc.jit compiles functions, not generators",
                filename, n.lineno + off)
        if isinstance(n, (gast.Await, gast.AsyncFor, gast.AsyncWith)):
            raise UnsupportedSyntaxError(f"`await`/async construct in {fn.__qualname__}", filename,
                                         n.lineno + off)
    return declared, assigns


def _candidates(free, closure, g):
    """The free names that may hold state (their value now is not a module, function, constant)."""
    threaded = []
    for name in free:
        if name in closure:
            try:
                value = closure[name].cell_contents
            except ValueError:
                value = None
        elif name in g:
            value = g[name]
        elif hasattr(builtins, name):
            continue
        else:  # not defined yet: may be assigned later; resolve at call time
            value = None
        if value is not None and isinstance(value, _NEVER_STATE):
            continue
        threaded.append(name)
    return threaded


def _rebinds(declared, assigns, closure, parsed, fn):
    """``global x`` / ``nonlocal x`` followed by an assignment rebinds x: unsupported if x holds
    state (it is threaded)."""

    rebinds = set()
    for n in assigns if declared else ():
        targets = n.targets if isinstance(n, gast.Assign) else [n.target]
        for t in targets:
            if not (isinstance(t, gast.Name) and t.id in declared):
                continue
            rebinds.add(t.id)
            value = closure[t.id].cell_contents if t.id in closure else fn.__globals__.get(t.id)
            if value is not None and (_reach.is_stateful(value)
                                      or isinstance(value, (list, dict))):
                kind = "global" if isinstance(declared[t.id], gast.Global) else "nonlocal"
                raise UnsupportedSyntaxError(
                    f"`{kind} {t.id}` rebinds {t.id!r}, which holds {type(value).__name__} "
                    f"state that hijaxc threads through {fn.__qualname__}; mutate it in place "
                    f"({t.id}[...] = ...) or return the new value instead", parsed.filename,
                    t.lineno + parsed.line_offset)
    return rebinds


def _own_nodes(root):
    """Every node of ``root`` outside nested functions and lambdas (a nested generator is fine)."""
    stack = [root]
    while stack:
        n = stack.pop()
        yield n
        for c in gast.iter_child_nodes(n):
            if not isinstance(c, (gast.FunctionDef, gast.AsyncFunctionDef, gast.Lambda)):
                stack.append(c)
            else:
                yield c  # the def itself (its name binding), not its body


def is_static_callable(value):
    return inspect.isfunction(value) or inspect.isbuiltin(value)

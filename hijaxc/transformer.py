"""The base of every rewrite pass (``hijaxc/passes/``) and the context they share.

``Transformer`` is a ``gast.NodeTransformer`` that gives every node a visitor puts in the tree the
source position of the node it replaces (nodes the pass reuses keep their own), so no pass can lose
the ``# file:line`` origin comments of the generated code.  ``Context`` holds what the passes read
and never change: the analysis (``analyse.Analysis``), the live values of free names, where the
function comes from, and the facts about it that a method's rewrites need.
"""
from __future__ import annotations

import builtins
import types
from dataclasses import dataclass
from typing import Callable

import gast

from .analyse import Analysis
from .parse import Parsed

RUNTIME = "__hx"  # the runtime module's alias in generated code
CELLS = "__hx_cells"  # a converted callee's own closure cells, by name (for ``foreign_cell``)

_POSITION = ("lineno", "col_offset", "end_lineno", "end_col_offset")


@dataclass(frozen=True)
class Context:
    analysis: Analysis
    env: Callable[[str], object]  # free name -> its live value (None when unbound)
    filename: str
    line_offset: int  # add to a node's lineno to get the line in ``filename``
    self_name: str | None  # the first parameter (``self`` of a method)
    class_cell: bool  # the function has the ``__class__`` cell (it uses zero-argument super())
    mangle_prefix: str | None  # ``_Cls`` for a function defined in class ``Cls``
    local_defs: frozenset  # functions defined in the body (already generated code once compiled)

    @classmethod
    def make(cls, parsed: Parsed, analysis: Analysis, fn: types.FunctionType) -> Context:
        node = parsed.node
        params = node.args.posonlyargs + node.args.args
        owner = _class_of(fn.__qualname__)
        prefix = "_" + owner.lstrip("_") if owner and owner.strip("_") else None
        local_defs = [n.name for n in gast.walk(node)
                      if isinstance(n, gast.FunctionDef) and n is not node]
        return cls(analysis, _environment(fn), parsed.filename, parsed.line_offset,
                   params[0].id if params else None, "__class__" in fn.__code__.co_freevars,
                   prefix, frozenset(mangle(n, prefix) for n in local_defs))

    def loc(self, node: gast.AST) -> str:
        """``file:line`` of a node in the user's file."""
        return f"{self.filename}:{getattr(node, 'lineno', 0) + self.line_offset}"

    def is_free_unthreaded(self, name: str) -> bool:
        """A free name the body reads live (a module, a function, a constant ...)."""
        return name in self.analysis.free_names and name not in self.analysis.threaded

    def resolve(self, expr: gast.expr) -> object:
        """The live value a Name/Attribute chain refers to, or None."""
        if isinstance(expr, gast.Name):
            return self.env(expr.id)
        if isinstance(expr, gast.Attribute):
            base = self.resolve(expr.value)
            return getattr(base, expr.attr, None) if base is not None else None
        return None


def mangle(name: str, prefix: str | None) -> str:
    """``__n`` -> ``_Cls__n``, as Python does in a class body (never ``__dunder__`` or ``__hx``)."""
    if prefix and name.startswith("__") and not name.endswith("__") \
            and not name.startswith(RUNTIME):
        return prefix + name
    return name


def _class_of(qualname):
    """The innermost class a function with this qualname is defined in (Python mangles private
    names by it, through nested functions too): ``A.f.<locals>.g`` -> ``A``; ``f.<locals>.g`` ->
    None."""
    parts = qualname.split(".")
    cls = None
    for i, p in enumerate(parts[:-1]):
        if p != "<locals>" and parts[i + 1] != "<locals>":
            cls = p
    return cls


def _environment(fn):
    closure = dict(zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=False))

    def env(name):
        if name in closure:
            try:
                return closure[name].cell_contents
            except ValueError:  # an empty cell: assigned later
                return None
        if name in fn.__globals__:
            return fn.__globals__[name]
        return getattr(builtins, name, None)

    return env


class Transformer(gast.NodeTransformer):
    """A pass: ``node = Pass.transform(node, ctx)``.  Whatever a visitor returns in place of a node
    gets that node's source position (nodes the visitor reuses keep their own); a visitor that adds
    nodes in place calls ``copy_origin`` itself, and ``api.rewrite`` fills any position still
    missing from the parent's at the end."""

    def __init__(self, ctx: Context):
        self.ctx = ctx

    @classmethod
    def transform(cls, node: gast.AST, ctx: Context) -> gast.AST:
        return cls(ctx).visit(node)

    def visit(self, node):
        visitor = getattr(self, "visit_" + node.__class__.__name__, None)
        if visitor is None:  # (most nodes: skip NodeTransformer.visit's own dispatch)
            return self.generic_visit(node)
        result = visitor(node)
        if result is not node and result is not None:
            for new in result if isinstance(result, list) else [result]:
                copy_origin(node, new)
        return result


def copy_origin(old: gast.AST, new: gast.AST) -> gast.AST:
    """Give every node of ``new`` without a source position the position of ``old``."""
    for n in gast.walk(new):
        if "lineno" in n._attributes and getattr(n, "lineno", None) is None:
            for attr in _POSITION:
                if getattr(old, attr, None) is not None:
                    setattr(n, attr, getattr(old, attr))
    return new

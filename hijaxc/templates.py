"""Generated code written as code: parse a template string, substitute names and nodes.

    >>> import gast
    >>> v = gast.parse("v").body[0].value
    >>> node = replace_as_expression("__hx.setitem(target, ..., value, where)", target=v,
    ...                              value=constant(1), where=constant("f.py:3"))
    >>> unparse(node)
    "__hx.setitem(v, ..., 1, 'f.py:3')"

A replacement is a gast node (inserted as it is, in the placeholder's context: ``Load`` or
``Store``) or a ``str`` (a new identifier: the placeholder is renamed, in a ``Name``, an
attribute name or a ``def``'s name).  Template nodes carry no source position: the pass that
inserts them gets the position of the node it replaces (``transformer.Transformer``).
"""
from __future__ import annotations

import ast
import copy
import functools

import gast

_POSITION = ("lineno", "col_offset", "end_lineno", "end_col_offset")


@functools.lru_cache(maxsize=None)
def _parsed(template: str) -> gast.Module:
    module = gast.parse(template)
    for n in gast.walk(module):
        for attr in _POSITION:
            if hasattr(n, attr):
                delattr(n, attr)
    return module


class _Substitute(gast.NodeTransformer):
    def __init__(self, subs):
        self.subs = subs

    def visit_Name(self, node):
        new = self.subs.get(node.id)
        if new is None:
            return node
        if isinstance(new, str):
            node.id = new
            return node
        _set_context(new, node.ctx)
        return new

    def visit_Attribute(self, node):
        self.generic_visit(node)
        new = self.subs.get(node.attr)
        if isinstance(new, str):
            node.attr = new
        return node

    def visit_FunctionDef(self, node):
        self.generic_visit(node)
        new = self.subs.get(node.name)
        if isinstance(new, str):
            node.name = new
        return node


def _set_context(node, ctx):
    """The placeholder's context, down through tuple/list/starred targets (``a, b = ...``)."""
    if "ctx" not in node._fields:
        return
    node.ctx = type(ctx)()
    if isinstance(node, (gast.Tuple, gast.List)):
        for e in node.elts:
            _set_context(e, ctx)
    elif isinstance(node, gast.Starred):
        _set_context(node.value, ctx)


def replace(template: str, **subs) -> list:
    """The statements of ``template`` with ``subs`` substituted."""
    for key, value in subs.items():
        if not isinstance(value, (str, gast.AST)):
            raise TypeError(f"template replacement {key}={value!r}: expected a gast node or an "
                            "identifier (str)")
    module = copy.deepcopy(_parsed(template))
    return _Substitute(subs).visit(module).body


def replace_as_expression(template: str, **subs) -> gast.expr:
    """The single expression ``template`` with ``subs`` substituted."""
    body = replace(template, **subs)
    if len(body) != 1 or not isinstance(body[0], gast.Expr):
        raise ValueError(f"template is not a single expression: {template!r}")
    return body[0].value


def constant(value: object) -> gast.Constant:
    """A literal (``None``, a number, a string)."""
    return gast.Constant(value=value, kind=None)


def name(identifier: str, ctx: type = gast.Load) -> gast.Name:
    """A bare name (``ctx=gast.Param`` for a parameter)."""
    return gast.Name(id=identifier, ctx=ctx(), annotation=None, type_comment=None)


def unparse(node: gast.AST) -> str:
    """Source text of a gast node (for docstrings and tests; ``load.render`` renders functions)."""
    tree = gast.gast_to_ast(node)
    return ast.unparse(ast.fix_missing_locations(tree))

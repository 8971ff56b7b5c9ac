"""A lambda compiled on its own becomes a function (every later stage works on a ``def``)::

    lambda x: counter[...] * x        ->   def __lambda__(x):
                                               return counter[...] * x
"""
import gast

from .. import templates
from ..transformer import Context, copy_origin


def transform(node: gast.AST, ctx: Context) -> gast.FunctionDef:
    if not isinstance(node, gast.Lambda):
        return node
    (fn,) = templates.replace("def __lambda__():\n    return body", body=node.body)
    fn.args = node.args
    return copy_origin(node, fn)

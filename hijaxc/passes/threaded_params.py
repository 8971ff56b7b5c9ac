"""Threaded free names become keyword-only parameters, so the body uses the fresh, trace-owned
copies that the pure step passes in instead of the caller's objects::

    def train_step(x, y):                ->   def train_step(x, y, *, model, optimizer):
        ... model ... optimizer ...               ... model ... optimizer ...
"""
import gast

from .. import templates
from ..transformer import Context, copy_origin


def transform(node: gast.FunctionDef, ctx: Context) -> gast.FunctionDef:
    for name in ctx.analysis.threaded:
        node.args.kwonlyargs.append(copy_origin(node, templates.name(name, gast.Param)))
        node.args.kw_defaults.append(None)
    return node

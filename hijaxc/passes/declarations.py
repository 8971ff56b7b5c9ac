"""Threaded names are parameters of the body now: they leave ``global`` / ``nonlocal``
declarations (only in-place mutation reaches this pass: rebinding a threaded name is rejected by
the analysis)::

    global counter, jnp        ->   global jnp
    global counter             ->   pass
"""
import gast

from .. import templates
from ..transformer import Context, Transformer


class Declarations(Transformer):
    def visit_Global(self, node):
        names = [n for n in node.names if n not in self.ctx.analysis.threaded]
        if not names:
            return templates.replace("pass")[0]
        node.names = names
        return node

    visit_Nonlocal = visit_Global


def transform(node: gast.AST, ctx: Context) -> gast.AST:
    return Declarations.transform(node, ctx) if ctx.analysis.threaded else node

"""In a converted callee (a function called from compiled code, run inside the trace), the free
names that may hold state are read through the runtime, which gives the trace's copy of state the
step threads and makes the step thread state it does not yet::

    def scaled(x):                 def scaled(x):
        return x * counter[...]    ->    return x * __hx.foreign(counter, globals(), 'counter')[...]

A closure variable is read through the callee's own cells: ``__hx.foreign_cell(stats, __hx_cells,
'stats')``.  A compiled function (not a callee) has no foreign names: it is returned unchanged.
"""
import gast

from .. import templates
from ..transformer import Context, Transformer


class ForeignReads(Transformer):
    def visit_Name(self, node):
        if not isinstance(node.ctx, gast.Load) or node.id not in self.ctx.analysis.foreign:
            return node
        if node.id in self.ctx.analysis.closure_names:
            template = "__hx.foreign_cell(name, __hx_cells, key)"
        else:
            template = "__hx.foreign(name, globals(), key)"
        return templates.replace_as_expression(template, name=node.id,
                                               key=templates.constant(node.id))


def transform(node: gast.AST, ctx: Context) -> gast.AST:
    return ForeignReads.transform(node, ctx) if ctx.analysis.foreign else node

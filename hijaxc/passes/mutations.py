"""Explicit mutations become runtime calls that carry their source location (the runtime checks
immutability and aliasing there, and names the user's line in its errors)::

    v[...] += 1                ->   __hx_t0, __hx_i0 = (v, ...)
                                    __hx.setitem(__hx_t0, __hx_i0, __hx_t0[__hx_i0] + 1, 'f.py:3')
    metrics['y'] = y           ->   __hx.setitem(metrics, 'y', y, 'f.py:4')
    v[1:3] = x                 ->   __hx.setitem(v, slice(1, 3, None), x, 'f.py:5')

An augmented assignment evaluates its target and index once, as Python does (``__hx_t<n>``,
``__hx_i<n>``, numbered through the whole function).
"""
import gast

from .. import templates
from ..transformer import Context, Transformer


def index_value(node: gast.expr) -> gast.expr:
    """A subscript's index as an ordinary expression (``1:3`` -> ``slice(1, 3, None)``)."""
    if isinstance(node, gast.Slice):
        none = templates.constant(None)
        return templates.replace_as_expression(
            "slice(lower, upper, step)", lower=node.lower or none, upper=node.upper or none,
            step=node.step or templates.constant(None))
    if isinstance(node, gast.Tuple):
        node.elts = [index_value(e) for e in node.elts]
    return node


class Mutations(Transformer):
    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.counter = 0

    def visit_Assign(self, node):
        if len(node.targets) != 1 or not isinstance(node.targets[0], gast.Subscript):
            return node
        target = node.targets[0]
        return templates.replace("__hx.setitem(target, index, value, where)", target=target.value,
                                 index=index_value(target.slice), value=node.value,
                                 where=templates.constant(self.ctx.loc(node)))

    def visit_AugAssign(self, node):
        if not isinstance(node.target, gast.Subscript):
            return node
        t, i = f"__hx_t{self.counter}", f"__hx_i{self.counter}"
        self.counter += 1
        new_value = templates.replace_as_expression("t[i] + value", t=t, i=i, value=node.value)
        new_value.op = node.op
        return templates.replace("t, i = target, index\n"
                                 "__hx.setitem(t, i, new_value, where)",
                                 t=t, i=i, target=node.target.value,
                                 index=index_value(node.target.slice), new_value=new_value,
                                 where=templates.constant(self.ctx.loc(node)))


transform = Mutations.transform

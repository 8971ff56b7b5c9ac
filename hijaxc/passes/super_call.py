"""Zero-argument ``super()`` needs the class body's ``__class__`` cell and the method's first
argument; outside the class body (in generated code) they are passed explicitly, over the method's
own ``__class__`` cell::

    def bump(self, x):                       def bump(self, x):
        super().bump(x)                 ->       super(__class__, self).bump(x)
"""
import gast

from .. import templates
from ..transformer import Context, Transformer


def is_implicit_super(node: gast.Call, ctx: Context) -> bool:
    """``super()`` in a method that has the ``__class__`` cell (so it can be made explicit)."""
    f = node.func
    return (isinstance(f, gast.Name) and f.id == "super" and not node.args and not node.keywords
            and ctx.class_cell and ctx.self_name is not None)


class ExplicitSuper(Transformer):
    def visit_Call(self, node):
        if is_implicit_super(node, self.ctx):
            return templates.replace_as_expression("super(__class__, self)",
                                                   self=self.ctx.self_name)
        self.generic_visit(node)
        return node


def transform(node: gast.AST, ctx: Context) -> gast.AST:
    return ExplicitSuper.transform(node, ctx) if ctx.class_cell else node

"""Private names are mangled as the class body would have mangled them (the generated function is
compiled outside the class)::

    class Child(Base):
        def bump(self, x):                   def bump(self, x):
            return self.__helper(x)     ->       return self._Child__helper(x)

Names, attributes and nested ``def`` names; ``__dunder__`` names and the runtime's ``__hx*`` names
stay as they are.  A function not defined in a class is returned unchanged.
"""
import gast

from ..transformer import Context, Transformer, mangle


class PrivateNames(Transformer):
    def visit_FunctionDef(self, node):
        node.name = mangle(node.name, self.ctx.mangle_prefix)
        self.generic_visit(node)
        return node

    def visit_Name(self, node):
        node.id = mangle(node.id, self.ctx.mangle_prefix)
        return node

    def visit_Attribute(self, node):
        node.attr = mangle(node.attr, self.ctx.mangle_prefix)
        self.generic_visit(node)
        return node


def transform(node: gast.AST, ctx: Context) -> gast.AST:
    return PrivateNames.transform(node, ctx) if ctx.mangle_prefix else node

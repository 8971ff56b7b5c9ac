"""JAX control flow and transforms, however imported (``jax.lax.scan``, ``lax.scan``,
``from jax.lax import scan as s``), are redirected to the runtime's state-threading versions
(``runtime/transforms.py``; ``KNOWN`` maps a JAX function's identity to its counterpart's name)::

    jax.lax.fori_loop(0, n, body, x)    ->   __hx.fori_loop(0, n, body, x)
    s(f, c, xs)                         ->   __hx.scan(f, c, xs)

Only names read live are resolved (free, not threaded): a parameter or a local that happens to hold
``jax.grad`` is left alone.  Runs before ``foreign`` (which would wrap the chain's root).
"""
import gast

from .. import templates
from ..runtime import transforms as _transforms
from ..transformer import Transformer


def counterpart(value: object) -> str | None:
    """The name of the runtime's version of ``value`` (a JAX transform), or None."""
    try:
        return _transforms.KNOWN.get(id(value)) if value is not None else None
    except TypeError:
        return None


def _redirect(name):
    return templates.replace_as_expression("__hx.counterpart", counterpart=name)


class Transforms(Transformer):
    def visit_Name(self, node):
        if isinstance(node.ctx, gast.Load) and self.ctx.is_free_unthreaded(node.id):
            name = counterpart(self.ctx.env(node.id))
            if name:
                return _redirect(name)
        return node

    def visit_Attribute(self, node):
        if isinstance(node.ctx, gast.Load):
            root = node
            while isinstance(root, gast.Attribute):
                root = root.value
            if isinstance(root, gast.Name) and self.ctx.is_free_unthreaded(root.id):
                name = counterpart(self.ctx.resolve(node))
                if name:
                    return _redirect(name)
        self.generic_visit(node)
        return node


transform = Transforms.transform

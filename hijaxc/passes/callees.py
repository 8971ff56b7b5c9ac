"""Calls that may enter the user's other functions go through the runtime, which converts those
functions with these same passes at trace time (``runtime/callees.py``), so a Module method running
``fori_loop`` over ``self`` threads its state too::

    y = model(x)                        ->   y = __hx.callee(model)(x)
    optimizer.update(model, grads)      ->   __hx.callee(optimizer.update)(model, grads)

Calls the compiler can resolve to library code through a free name (``jnp.sin``, a class), array
methods (``x.sum()``), functions defined in the body and the runtime's own functions are left
alone; builtins (``print``) are routed, and the runtime calls them as they are.  Runs first: it
decides on the user's own expressions, before other passes rename or redirect them.
"""
import types

import gast
import jax

from .. import templates
from ..runtime import callees as _callees
from ..transformer import RUNTIME, Transformer, copy_origin
from .super_call import is_implicit_super
from .transforms import counterpart

# Method names of arrays (and a few of dicts and lists): ``x.sum()``, ``d.items()`` never enter user
# code that needs converting.  A user method of the same name called through anything but the
# method's own ``self`` is called unconverted (as without this pass); common user method names
# (``add``, ``update``, ``get``, ``apply`` ...) are deliberately not in the list.
_PLAIN_METHODS = frozenset(
    [n for n in dir(jax.Array) if not n.startswith("_")] + ["items", "keys", "values", "append",
                                                             "extend"])
_NEVER_USER = (types.BuiltinFunctionType, types.BuiltinMethodType, types.ModuleType, type,
               types.MethodWrapperType, types.WrapperDescriptorType, types.MethodDescriptorType)


def may_run_user_code(value: object) -> bool:
    """Whether calling ``value`` (resolved at transform time) may run a user function."""
    if value is None:
        return True  # not known yet: the runtime decides at trace time
    if isinstance(value, _NEVER_USER):
        return False
    if isinstance(value, types.FunctionType):
        return _callees.is_user_code(value.__code__)
    if isinstance(value, types.MethodType):
        return may_run_user_code(value.__func__)
    # the class's own ``__call__`` function (not callable(): its code is what we inspect)
    call = getattr(type(value), "__call__", None)  # noqa: B004
    return isinstance(call, types.FunctionType) and _callees.is_user_code(call.__code__)


def _root(expr):
    while isinstance(expr, gast.Attribute):
        expr = expr.value
    return expr


class RouteCalls(Transformer):
    def visit_Call(self, node):
        if is_implicit_super(node, self.ctx):  # made explicit by ``super_call``; never routed
            return node
        route = self.may_enter_user_code(node.func)  # (decided on the user's own expression)
        self.generic_visit(node)
        if route:
            node.func = copy_origin(
                node.func, templates.replace_as_expression("__hx.callee(func)", func=node.func))
        return node

    def may_enter_user_code(self, func):
        if isinstance(func, gast.Name):
            return self._name_may_enter(func)
        if isinstance(func, gast.Attribute):
            return self._attribute_may_enter(func)
        if isinstance(func, gast.Call):
            return self._result_may_enter(func)
        return not isinstance(func, (gast.Lambda, gast.Constant))

    def _name_may_enter(self, func):
        # (``local_defs`` holds mangled names and ``func.id`` is the user's own: a private-named
        # local def in a method is routed, harmlessly: the runtime calls generated code as it is)
        if func.id in self.ctx.local_defs or func.id == RUNTIME:
            return False
        if self.ctx.is_free_unthreaded(func.id):
            return may_run_user_code(self.ctx.env(func.id))
        return True

    def _attribute_may_enter(self, func):
        root = func
        while isinstance(root, (gast.Attribute, gast.Subscript, gast.Call)):
            if isinstance(root, gast.Subscript) and isinstance(root.value, gast.Attribute) \
                    and root.value.attr == "at":
                return False  # x.at[i].set(v)
            root = root.func if isinstance(root, gast.Call) else root.value
        if isinstance(root, gast.Name) and root.id == RUNTIME:
            return False
        rooted_at_self = isinstance(root, gast.Name) and root.id == self.ctx.self_name
        if func.attr in _PLAIN_METHODS and not rooted_at_self:
            return False
        if isinstance(root, gast.Name) and not rooted_at_self \
                and self.ctx.is_free_unthreaded(root.id):
            return may_run_user_code(self.ctx.resolve(func))
        return True

    def _result_may_enter(self, func):
        """``f(...)(x)``: what a runtime transform returns is not user code (but
        ``functools.partial(helper, v)(x)`` may well be)."""
        root = _root(func.func)
        if isinstance(root, gast.Name) and root.id == RUNTIME:
            return False
        if isinstance(root, gast.Name) and self.ctx.is_free_unthreaded(root.id) \
                and counterpart(self.ctx.resolve(func.func)):
            return False  # jax.grad(f)(x): redirected to the runtime's version
        return True


transform = RouteCalls.transform

"""Stage 3 — rewrite: the user's function -> the body hijaxc traces.

Three rewrites, each keeping the original statement's line so the generated code can be commented
with its origin:

1. Threaded free names become keyword-only parameters, so the body uses the fresh, trace-owned
   copies that the pure step passes in instead of the caller's objects::

       def train_step(x, y):            ->   def train_step(x, y, *, model, optimizer):
           ... model ... optimizer ...           ... model ... optimizer ...

2. Explicit mutations become runtime calls that carry their source location::

       v[...] += 1                      ->   __hx_t0, __hx_i0 = v, ...
                                             __hx.setitem(__hx_t0, __hx_i0, __hx_t0[__hx_i0] + 1, 'f.py:3')
       metrics['y'] = y                 ->   __hx.setitem(metrics, 'y', y, 'f.py:4')

3. JAX control flow and transforms (however imported: ``jax.lax.scan``, ``lax.scan``,
   ``from jax.lax import scan as s``) are redirected to the runtime's state-threading versions::

       jax.lax.fori_loop(0, n, body, x) ->   __hx.fori_loop(0, n, body, x)

4. Calls that may enter the user's other functions go through the runtime, which converts those
   functions the same way (``runtime/callees.py``), so a Module method running ``fori_loop`` over
   ``self`` threads its state too.  Calls the compiler can resolve to library code (``jnp.sin``,
   ``print``, a class) or to an array method (``x.sum()``) are left alone::

       y = model(x)                     ->   y = __hx.callee(model)(x)

Two fixes make a method compile outside its class body: zero-argument ``super()`` becomes
``super(__class__, self)`` (over the method's own ``__class__`` cell), and private names are
mangled as the class body would have (``self.__n`` -> ``self._Cls__n``).
"""
import types

import gast
import jax

from .runtime import callees as _callees
from .runtime import transforms as _transforms

# Method names of arrays (and a few of dicts and lists): ``x.sum()``, ``d.items()`` never enter user
# code that needs converting.  A user method of the same name called through anything but the
# method's own ``self`` is called unconverted (as without this rewrite); common user method names
# (``add``, ``update``, ``get``, ``apply`` ...) are deliberately not in the list.
_PLAIN_METHODS = frozenset(
    [n for n in dir(jax.Array) if not n.startswith("_")] + ["items", "keys", "values", "append",
                                                             "extend"])
_NEVER_USER = (types.BuiltinFunctionType, types.BuiltinMethodType, types.ModuleType, type,
               types.MethodWrapperType, types.WrapperDescriptorType, types.MethodDescriptorType)

RUNTIME = "__hx"
CELLS = "__hx_cells"  # a converted callee's own closure cells, by name (for ``foreign_cell``)


def _known(value):
    try:
        return _transforms.KNOWN.get(id(value)) if value is not None else None
    except TypeError:
        return None


def _resolve(expr, env):
    """The live value a Name/Attribute chain refers to, or None."""
    if isinstance(expr, gast.Name):
        return env(expr.id)
    if isinstance(expr, gast.Attribute):
        base = _resolve(expr.value, env)
        return getattr(base, expr.attr, None) if base is not None else None
    return None


def _may_enter_user_code(value):
    """Whether calling ``value`` (resolved at transform time) may run a user function."""
    if value is None:
        return True  # not known yet: the runtime decides at trace time
    if isinstance(value, _NEVER_USER):
        return False
    if isinstance(value, types.FunctionType):
        return _callees.is_user_code(value.__code__)
    if isinstance(value, types.MethodType):
        return _may_enter_user_code(value.__func__)
    call = getattr(type(value), "__call__", None)
    return isinstance(call, types.FunctionType) and _callees.is_user_code(call.__code__)


def _class_of(qualname):
    """The innermost class a function with this qualname is defined in (Python mangles private
    names by it, through nested functions too): ``A.f.<locals>.g`` -> ``A``; ``f.<locals>.g`` ->
    None."""
    parts = qualname.split(".")
    cls = None
    for i, p in enumerate(parts[:-1]):
        if p != "<locals>" and parts[i + 1] != "<locals>":
            cls = p
    return cls


class Rewriter(gast.NodeTransformer):
    def __init__(self, analysis, env, filename, line_offset, self_name=None, class_cell=False,
                 mangle_class=None, local_defs=()):
        self.analysis = analysis
        self.env = env  # name -> live value (free names only)
        self.filename = filename
        self.off = line_offset
        self.counter = 0
        self.local_names = set()
        self.self_name = self_name  # the first parameter (``self`` of a method)
        self.class_cell = class_cell  # the function has the ``__class__`` cell (uses super())
        self.mangle_prefix = "_" + mangle_class.lstrip("_") if mangle_class and mangle_class.strip("_") else None
        # functions defined in the body (generated code already: no need to convert them)
        self.local_defs = {self._mangle(n) for n in local_defs}
        self.foreign = set(analysis.foreign)

    def _mangle(self, name):
        if self.mangle_prefix and name.startswith("__") and not name.endswith("__") \
                and not name.startswith("__hx"):
            return self.mangle_prefix + name
        return name

    def visit_FunctionDef(self, node):
        node.name = self._mangle(node.name)
        self.generic_visit(node)
        return node

    # 4. calls into user code
    def visit_Call(self, node):
        f = node.func
        if (isinstance(f, gast.Name) and f.id == "super" and not node.args and not node.keywords
                and self.class_cell and self.self_name):
            node.args = [self._copy_loc(_name("__class__"), node),
                         self._copy_loc(_name(self.self_name), node)]
            return node
        route = self._may_enter_user_code(node.func)  # (decided on the user's own expression)
        self.generic_visit(node)
        if route:
            node.func = self._copy_loc(_call("callee", [node.func]), node.func)
        return node

    def _free_value(self, name):
        if name in self.analysis.free_names and name not in self.analysis.threaded:
            return True, self.env(name)
        return False, None

    def _may_enter_user_code(self, func):
        if isinstance(func, gast.Name):
            if func.id in self.local_defs or func.id == RUNTIME:
                return False
            known, value = self._free_value(func.id)
            return _may_enter_user_code(value) if known else True
        if isinstance(func, gast.Attribute):
            root = func
            while isinstance(root, (gast.Attribute, gast.Subscript, gast.Call)):
                if isinstance(root, gast.Subscript) and isinstance(root.value, gast.Attribute) \
                        and root.value.attr == "at":
                    return False  # x.at[i].set(v)
                root = root.func if isinstance(root, gast.Call) else root.value
            if isinstance(root, gast.Name) and root.id == RUNTIME:
                return False
            rooted_at_self = isinstance(root, gast.Name) and root.id == self.self_name
            if func.attr in _PLAIN_METHODS and not rooted_at_self:
                return False
            if isinstance(root, gast.Name) and not rooted_at_self:
                known, _ = self._free_value(root.id)
                if known:
                    return _may_enter_user_code(_resolve(func, self.env))
            return True
        if isinstance(func, gast.Call):  # f(...)(x): what a runtime transform returns is not user code
            inner = func.func
            root = inner
            while isinstance(root, gast.Attribute):
                root = root.value
            # (but ``functools.partial(helper, v)(x)`` may well be)
            if isinstance(root, gast.Name) and root.id == RUNTIME:
                return False
            if isinstance(root, gast.Name) and self._free_value(root.id)[0] \
                    and _known(_resolve(inner, self.env)):
                return False  # jax.grad(f)(x): redirected to the runtime's version
            return True
        return not isinstance(func, (gast.Lambda, gast.Constant))

    def loc(self, node):
        return f"{self.filename}:{getattr(node, 'lineno', 0) + self.off}"

    def _copy_loc(self, new, old):
        for n in gast.walk(new):
            if isinstance(n, (gast.stmt, gast.expr)):
                n.lineno = getattr(old, "lineno", 1)
                n.col_offset = getattr(old, "col_offset", 0)
                n.end_lineno = getattr(old, "end_lineno", n.lineno)
                n.end_col_offset = getattr(old, "end_col_offset", 0)
        return new

    # 3. transforms
    def visit_Name(self, node):
        node.id = self._mangle(node.id)
        if isinstance(node.ctx, gast.Load) and node.id in self.foreign:
            # a converted callee's own global / closure state: the trace's copy (runtime decides)
            if node.id in self.analysis.closure_names:
                call = _call("foreign_cell", [_name(node.id), _name(CELLS),
                                              gast.Constant(node.id, None)])
            else:
                call = _call("foreign", [_name(node.id),
                                         gast.Call(func=_name("globals"), args=[], keywords=[]),
                                         gast.Constant(node.id, None)])
            return self._copy_loc(call, node)
        if isinstance(node.ctx, gast.Load) and node.id in self.analysis.free_names \
                and node.id not in self.analysis.threaded:
            name = _known(self.env(node.id))
            if name:
                return self._copy_loc(_runtime_attr(name), node)
        return node

    def visit_Attribute(self, node):
        node.attr = self._mangle(node.attr)
        if isinstance(node.ctx, gast.Load):
            root = node
            while isinstance(root, gast.Attribute):
                root = root.value
            if isinstance(root, gast.Name) and root.id in self.analysis.free_names \
                    and root.id not in self.analysis.threaded:
                name = _known(_resolve(node, self.env))
                if name:
                    return self._copy_loc(_runtime_attr(name), node)
        self.generic_visit(node)
        return node

    # threaded names are parameters of the body now: drop them from global/nonlocal declarations
    # (only in-place mutation reaches this point: rebinding them is rejected by the analysis)
    def visit_Global(self, node):
        names = [n for n in node.names if n not in self.analysis.threaded]
        if not names:
            return self._copy_loc(gast.Pass(), node)
        node.names = names
        return node

    visit_Nonlocal = visit_Global

    # 2. mutations
    def visit_Assign(self, node):
        self.generic_visit(node)
        if len(node.targets) == 1 and isinstance(node.targets[0], gast.Subscript):
            t = node.targets[0]
            call = _call("setitem", [_load(t.value), _index_value(t.slice), node.value,
                                     gast.Constant(self.loc(node), None)])
            return self._copy_loc(gast.Expr(value=call), node)
        return node

    def visit_AugAssign(self, node):
        self.generic_visit(node)
        if isinstance(node.target, gast.Subscript):
            t = node.target
            n = self.counter
            self.counter += 1
            tmp_t, tmp_i = f"__hx_t{n}", f"__hx_i{n}"
            first = gast.Assign(
                targets=[gast.Tuple(elts=[_name(tmp_t, gast.Store()), _name(tmp_i, gast.Store())], ctx=gast.Store())],
                value=gast.Tuple(elts=[_load(t.value), _index_value(t.slice)], ctx=gast.Load()),
                type_comment=None)
            current = gast.Subscript(value=_name(tmp_t), slice=_name(tmp_i), ctx=gast.Load())
            new_value = gast.BinOp(left=current, op=node.op, right=node.value)
            call = _call("setitem", [_name(tmp_t), _name(tmp_i), new_value, gast.Constant(self.loc(node), None)])
            return [self._copy_loc(first, node), self._copy_loc(gast.Expr(value=call), node)]
        return node


def _index_value(node):
    """A subscript's index as an ordinary expression (``1:3`` -> ``slice(1, 3, None)``)."""
    if isinstance(node, gast.Slice):
        none = gast.Constant(None, None)
        return gast.Call(func=_name("slice"), args=[_load(node.lower) if node.lower else none,
                                                    _load(node.upper) if node.upper else none,
                                                    _load(node.step) if node.step else none],
                         keywords=[])
    if isinstance(node, gast.Tuple):
        return gast.Tuple(elts=[_index_value(e) for e in node.elts], ctx=gast.Load())
    return _load(node)


def _load(node):
    import copy

    node = copy.deepcopy(node)
    for n in gast.walk(node):
        if hasattr(n, "ctx"):
            n.ctx = gast.Load()
    return node


def _name(id_, ctx=None):
    return gast.Name(id=id_, ctx=ctx or gast.Load(), annotation=None, type_comment=None)


def _runtime_attr(name):
    return gast.Attribute(value=_name(RUNTIME), attr=name, ctx=gast.Load())


def _call(name, args):
    return gast.Call(func=_runtime_attr(name), args=args, keywords=[])


def rewrite(parsed, analysis, fn):
    """Return the rewritten gast FunctionDef of the body."""
    node = parsed.node
    closure = dict(zip(fn.__code__.co_freevars, fn.__closure__ or ()))

    def env(name):
        if name in closure:
            try:
                return closure[name].cell_contents
            except ValueError:
                return None
        if name in fn.__globals__:
            return fn.__globals__[name]
        import builtins

        return getattr(builtins, name, None)

    if isinstance(node, gast.Lambda):
        body = [gast.Return(value=node.body)]
        for s in body:
            s.lineno, s.col_offset = node.lineno, node.col_offset
        node = gast.FunctionDef(name="__lambda__", args=node.args, body=body, decorator_list=[],
                                returns=None, type_comment=None, type_params=[])
        node.lineno, node.col_offset = body[0].lineno, 0
    params = node.args.posonlyargs + node.args.args
    self_name = params[0].id if params else None
    local_defs = [n.name for n in gast.walk(node) if isinstance(n, gast.FunctionDef) and n is not node]
    node = Rewriter(analysis, env, parsed.filename, parsed.line_offset, self_name=self_name,
                    class_cell="__class__" in fn.__code__.co_freevars,
                    mangle_class=_class_of(fn.__qualname__), local_defs=local_defs).visit(node)
    for name in analysis.threaded:
        node.args.kwonlyargs.append(_name(name, gast.Param()))
        node.args.kw_defaults.append(None)
    gast.fix_missing_locations(node)
    return node

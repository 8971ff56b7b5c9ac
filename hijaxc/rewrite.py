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
"""
import gast

from .runtime import transforms as _transforms

RUNTIME = "__hx"


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


class Rewriter(gast.NodeTransformer):
    def __init__(self, analysis, env, filename, line_offset):
        self.analysis = analysis
        self.env = env  # name -> live value (free names only)
        self.filename = filename
        self.off = line_offset
        self.counter = 0
        self.local_names = set()

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
        if isinstance(node.ctx, gast.Load) and node.id in self.analysis.free_names \
                and node.id not in self.analysis.threaded:
            name = _known(self.env(node.id))
            if name:
                return self._copy_loc(_runtime_attr(name), node)
        return node

    def visit_Attribute(self, node):
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
    node = Rewriter(analysis, env, parsed.filename, parsed.line_offset).visit(node)
    for name in analysis.threaded:
        node.args.kwonlyargs.append(_name(name, gast.Param()))
        node.args.kw_defaults.append(None)
    gast.fix_missing_locations(node)
    return node

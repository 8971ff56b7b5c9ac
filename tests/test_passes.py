"""Each rewrite pass of hijaxc/passes/ on its own: input code -> output code, as short strings
(the whole pipeline is pinned by tests/golden/).  A snippet is compiled under a file name
registered in ``linecache``, so the passes see it as user code with source, like any function."""

import itertools
import linecache
import textwrap

import gast
import jax
import jax.numpy as jnp
import pytest

import hijaxc
from hijaxc import analyse, parse, templates
from hijaxc.passes import (
    callees,
    declarations,
    foreign,
    lambda_def,
    mutations,
    private_names,
    super_call,
    threaded_params,
    transforms,
)
from hijaxc.transformer import Context, Transformer, copy_origin

_ids = itertools.count()


def define(source, name, **namespace):
    """The function ``name`` (a dotted path for a method) defined by ``source`` in ``namespace``."""
    filename = f"/hijaxc-test-snippets/snippet_{next(_ids)}.py"
    source = textwrap.dedent(source)
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {"__name__": "snippet", **namespace}
    exec(compile(source, filename, "exec"), namespace)
    obj = namespace
    for part in name.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


def run(pass_, fn, callee=False):
    """``fn`` after ``pass_`` alone (a lambda is made a ``def`` first), as source text."""
    parsed = parse.parse(fn)
    analysis = analyse.analyse(parsed, fn, callee=callee)
    ctx = Context.make(parsed, analysis, fn)
    node = lambda_def.transform(parsed.node, ctx)
    if pass_ is not lambda_def:
        node = pass_.transform(node, ctx)
    return templates.unparse(node)


def body(text):
    return textwrap.dedent(text).strip()


def test_lambda_def():
    fn = define("f = lambda x, y=2: x + y\n", "f")
    assert run(lambda_def, fn) == "def __lambda__(x, y=2):\n    return x + y"


def test_callees_routes_what_may_enter_user_code():
    fn = define(
        """
        def helper(y):
            return y

        def f(model, x):
            y = model(x)
            z = helper(y) + jnp.sin(y) + x.sum() + x.at[0].set(1.0)
            return jax.grad(helper)(z), model.layer.apply(z), print(z)
        """,
        "f",
        jax=jax,
        jnp=jnp,
    )
    assert run(callees, fn) == body("""
        def f(model, x):
            y = __hx.callee(model)(x)
            z = __hx.callee(helper)(y) + jnp.sin(y) + x.sum() + x.at[0].set(1.0)
            return (jax.grad(helper)(z), __hx.callee(model.layer.apply)(z), __hx.callee(print)(z))
        """)


def test_callees_leaves_local_defs_and_zero_argument_super_alone():
    fn = define(
        """
        class B:
            def m(self, x):
                def local(y):
                    return y
                return super().m(local(x))
        """,
        "B.m",
    )
    assert run(callees, fn).splitlines()[-1] == "    return __hx.callee(super().m)(local(x))"


def test_super_call():
    fn = define(
        """
        class B:
            def m(self, x):
                return super().m(x) + super(B, self).m(x)
        """,
        "B.m",
    )
    assert (
        run(super_call, fn).splitlines()[-1]
        == "    return super(__class__, self).m(x) + super(B, self).m(x)"
    )


def test_private_names():
    fn = define(
        """
        class Child:
            def m(self, __x):
                def __inner():
                    return self.__h(__x, self.__dunder__, __hx_t0)
                return __inner()
        """,
        "Child.m",
    )
    assert run(private_names, fn) == body("""
        def m(self, _Child__x):

            def _Child__inner():
                return self._Child__h(_Child__x, self.__dunder__, __hx_t0)
            return _Child__inner()
        """)


def test_private_names_outside_a_class_unchanged():
    fn = define("def f(self):\n    return self.__h\n", "f")
    assert run(private_names, fn) == "def f(self):\n    return self.__h"


def test_transforms_however_imported():
    fn = define(
        """
        from jax.lax import scan as s
        from jax import lax

        def f(body, c, xs, grad):
            a = s(body, c, xs)
            b = lax.fori_loop(0, 2, body, c) + jax.lax.cond(c, body, body)
            return jax.grad(body), grad(body), jax.numpy.sin(c)
        """,
        "f",
        jax=jax,
    )
    assert run(transforms, fn) == body("""
        def f(body, c, xs, grad):
            a = __hx.scan(body, c, xs)
            b = __hx.fori_loop(0, 2, body, c) + __hx.cond(c, body, body)
            return (__hx.grad(body), grad(body), jax.numpy.sin(c))
        """)


def test_foreign_reads_in_a_converted_callee():
    fn = define(
        """
        def make(stats):
            def accumulate(x):
                stats[...] += x
                return x * counter[...] + jnp.sum(x)
            return accumulate
        """,
        "make",
        counter=hijaxc.Variable(jnp.zeros(())),
        jnp=jnp,
    )(hijaxc.Variable(jnp.zeros(())))
    assert run(foreign, fn, callee=True) == body("""
        def accumulate(x):
            __hx.foreign_cell(stats, __hx_cells, 'stats')[...] += x
            return x * __hx.foreign(counter, globals(), 'counter')[...] + jnp.sum(x)
        """)


def test_foreign_leaves_a_compiled_function_alone():
    fn = define(
        "def f(x):\n    return x * counter[...]\n", "f", counter=hijaxc.Variable(jnp.zeros(()))
    )
    assert run(foreign, fn) == "def f(x):\n    return x * counter[...]"


def test_mutations():
    fn = define(
        """
        def f(v, m, x):
            v[...] += 1
            m['y'] = x
            v[1:3, ::2] = x
            v.a[i := 0] *= v[-1]
            w = x
        """,
        "f",
    )
    where = fn.__code__.co_filename
    assert run(mutations, fn) == body(f"""
        def f(v, m, x):
            __hx_t0, __hx_i0 = (v, ...)
            __hx.setitem(__hx_t0, __hx_i0, __hx_t0[__hx_i0] + 1, '{where}:3')
            __hx.setitem(m, 'y', x, '{where}:4')
            __hx.setitem(v, (slice(1, 3, None), slice(None, None, 2)), x, '{where}:5')
            __hx_t1, __hx_i1 = (v.a, (i := 0))
            __hx.setitem(__hx_t1, __hx_i1, __hx_t1[__hx_i1] * v[-1], '{where}:6')
            w = x
        """)


def test_declarations():
    fn = define(
        """
        def f(v):
            global counter, jnp
            counter[...] = v
            def g():
                global counter
                return counter
            return jnp.sum(v)
        """,
        "f",
        counter=hijaxc.Variable(jnp.zeros(())),
        jnp=jnp,
    )
    assert run(declarations, fn) == body("""
        def f(v):
            global jnp
            counter[...] = v

            def g():
                pass
                return counter
            return jnp.sum(v)
        """)


def test_threaded_params():
    fn = define(
        "def f(x, *, k=1):\n    return counter[...] + model(x) + jnp.sin(x)\n",
        "f",
        counter=hijaxc.Variable(jnp.zeros(())),
        model=None,
        jnp=jnp,
    )
    assert run(threaded_params, fn).splitlines()[0] == "def f(x, *, k=1, counter, model):"


# -- the machinery the passes share ----------------------------------------------------------------
def test_replacements_get_the_replaced_nodes_position():
    class Redirect(Transformer):
        def visit_Name(self, node):
            if node.id == "old":
                return templates.replace_as_expression("__hx.new(x)", x=node.id)
            return node

    tree = gast.parse("a = 1\nb = old + 1\n")
    Redirect.transform(tree, None)
    call = tree.body[1].value.left
    assert templates.unparse(call) == "__hx.new(old)"
    assert {n.lineno for n in gast.walk(call) if hasattr(n, "lineno")} == {2}


def test_copy_origin_keeps_existing_positions():
    old = gast.parse("\n\nx").body[0].value
    reused = gast.parse("y").body[0].value
    new = copy_origin(old, templates.replace_as_expression("f(y)", y=reused))
    assert (new.lineno, new.func.lineno, new.args[0].lineno) == (3, 3, 1)


def test_templates():
    (stmt,) = templates.replace(
        "t, i = target, index",
        t="a",
        i="b",
        target=gast.parse("v.w").body[0].value,
        index=templates.constant(None),
    )
    assert templates.unparse(stmt) == "a, b = (v.w, None)"
    assert isinstance(stmt.targets[0].elts[0].ctx, gast.Store)
    assert (
        templates.unparse(templates.replace_as_expression("__hx.name", name="scan")) == "__hx.scan"
    )
    with pytest.raises(ValueError, match="single expression"):
        templates.replace_as_expression("x = 1")
    with pytest.raises(TypeError, match="expected a gast node"):
        templates.replace("x", x=1)

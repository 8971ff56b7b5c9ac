"""A random program generator for the S1 oracle: Python *source* of functions that mutate hijaxc
Variables, Refs and NNX Modules, run eagerly and under ``hijaxc.jit`` and compared.

A generated program is a module (one file, imported so that hijaxc can read its source) that
defines a few ``nnx.Module`` classes and, for each function ``fK``, a factory ``make_fK()``: it
builds fresh objects (module globals, closure cells, arguments -- with aliasing), and returns
``(fK, args, state)`` for :func:`oracle.check_eager`.  The function bodies read and write
Variables through ``v[...]``, ``v[i]``, ``v['k']`` (new keys too, and keys computed at run time),
``v.value``, augmented assignment, attribute paths (``p0.sub.w[...] += ...``), aliases, nested
functions and closures, methods, new Variables (returned), new Module attributes,
``jax.lax.fori_loop`` / ``scan`` / ``cond`` / ``switch`` / ``while_loop`` bodies that mutate the
Variables they capture or receive (values only: no new attributes or keys inside those bodies),
and ``jax.vmap`` of functions that read captured state.

Every random decision goes through a *chooser* (:class:`RandomChooser` for plain seeded runs,
:class:`HypothesisChooser` under hypothesis, which shrinks by shrinking the choices).  The generator keeps an abstract model of every object (kind, shape, dict keys,
Module attributes, identity) as it emits statements, so *any* choice sequence yields a valid
program: shrinking never produces a program that is wrong eagerly.

Values are small float32 arrays of shapes ``()``, ``(3,)`` and ``(2, 3)``.  Arithmetic stays
bounded: expressions are convex combinations and products with ``tanh``/``cos`` factors of
bounded leaves, increments are ``tanh``/``sin``/``0.25 *`` of an expression, and multipliers are
constants of magnitude <= 1 or ``cos`` of an expression.

    src = generate(RandomChooser(seed))           # a Program (.source, .functions)
    check_program(src)                            # AssertionError (with the source) on mismatch
"""
import ast
import contextlib
import copy
import dataclasses
import hashlib
import importlib.util
import itertools
import os
import random
import sys
import tempfile
import textwrap
import traceback
import warnings

import hijaxc
import oracle

try:  # the Python reference control flow for the eager run (S7)
    from oracle import python_control_flow
except ImportError:
    from test_eager_equivalence import python_control_flow

RTOL = 1e-4
ATOL = 1e-4


# -- choosers --------------------------------------------------------------------------------------
class Chooser:
    """The source of every random decision.  ``integer(lo, hi)`` is the only primitive; everything
    is arranged so that smaller choices give simpler programs (0 = feature off / first option)."""

    def integer(self, lo, hi):
        raise NotImplementedError

    def flag(self, percent):
        """True with probability ``percent``/100; shrinks to False."""
        return self.integer(0, 99) >= 100 - percent

    def pick(self, seq):
        seq = list(seq)
        return seq[self.integer(0, len(seq) - 1)]

    def weighted(self, options):
        """``options``: [(weight, value)], simplest first."""
        total = sum(w for w, _ in options)
        r = self.integer(0, total - 1)
        for w, v in options:
            if r < w:
                return v
            r -= w
        return options[-1][1]


class RandomChooser(Chooser):
    """Plain seeded ``random.Random`` (fast; no shrinking)."""

    def __init__(self, seed):
        self.rng = random.Random(seed)

    def integer(self, lo, hi):
        return self.rng.randint(lo, hi)


class HypothesisChooser(Chooser):
    """Draws from hypothesis (``st.data()``), so that hypothesis can shrink the program."""

    def __init__(self, data):
        from hypothesis import strategies as st

        self.data, self.st = data, st

    def integer(self, lo, hi):
        return self.data.draw(self.st.integers(lo, hi))


# -- the abstract model ----------------------------------------------------------------------------
SHAPES = [(3,), (), (2, 3)]
# Comparisons (jnp.where, cond/switch predicates) use thresholds that the arange-based values do
# not hit exactly: eager and compiled results may differ in the last bit (a fused mean, say), and
# ``x > 0`` with x exactly 0 one way and 1 ulp above it the other is a real but meaningless
# difference.
THRESHOLDS = [0.0123, 0.5123, -0.2877]
FLOAT_KINDS = ("arr", "ref", "nnx")


@dataclasses.dataclass(eq=False)
class Obj:
    """One object in the generated program: ``arr`` (Variable with an array value), ``int`` (int32
    counter Variable), ``dict`` (Variable with a dict value), ``ref`` (hijaxc.Ref), ``mod``
    (a Module instance) or ``list`` (a Python list of objects)."""
    kind: str
    shape: tuple = ()
    keys: dict = None  # dict: key -> shape
    cls: object = None  # mod: ClassSpec
    attrs: dict = None  # mod: attribute -> Obj
    items: list = None  # list: [Obj]


@dataclasses.dataclass(eq=False)
class ClassSpec:
    name: str
    lines: list  # source of the class
    template: Obj  # abstract instance (structure every instance starts with)
    method: str = None  # name of a values-only method taking one (3,) array, or None


@dataclasses.dataclass
class Scope:
    objs: dict  # name -> Obj
    arrs: dict  # name -> shape (float32 arrays)
    ints: tuple = ()  # names of int scalars (loop indices)
    values_only: bool = False  # inside a lax body / method: no structural changes, no new objects
    depth: int = 0  # nesting of function definitions
    no_control: bool = False  # no lax control flow here (avoid "lax_in_method")

    def child(self, **kw):
        return dataclasses.replace(self, objs=dict(self.objs), arrs=dict(self.arrs), **kw)


def _copy_instance(obj, memo):
    if id(obj) in memo:
        return memo[id(obj)]
    new = dataclasses.replace(obj)
    memo[id(obj)] = new
    if obj.kind == "dict":
        new.keys = dict(obj.keys)
    if obj.kind == "mod":
        new.attrs = {k: _copy_instance(v, memo) for k, v in obj.attrs.items()}
    if obj.kind == "list":
        new.items = [_copy_instance(v, memo) for v in obj.items]
    return new


def instance(cls):
    return _copy_instance(cls.template, {})


def reaches(a, b, seen=None):
    """Whether object ``b`` is reachable from ``a`` (through attributes / items)."""
    seen = set() if seen is None else seen
    if a is b:
        return True
    if id(a) in seen:
        return False
    seen.add(id(a))
    children = (list(a.attrs.values()) if a.kind in ("mod", "pydict") else
                a.items if a.kind == "list" else [])
    return any(reaches(c, b, seen) for c in children)


def fmt(c):
    return repr(float(c))


@dataclasses.dataclass
class Function:
    name: str
    make: str
    calls: int


@dataclasses.dataclass
class Program:
    source: str
    functions: list

    @property
    def digest(self):
        return hashlib.sha1(self.source.encode()).hexdigest()[:10]


PRELUDE = '''\
import jax
import jax.numpy as jnp
from flax import nnx

import hijaxc

BETWEEN = {}  # function name -> eager changes made before every call but the first
EPS = 0.0  # relative perturbation of every initial value (the oracle's stability check)


def _v(shape, k):  # a distinct small float32 array for object number k
    n = 1
    for d in shape:
        n *= d
    return (jnp.arange(n, dtype=jnp.float32).reshape(shape) * 0.25 + (0.1 * k - 0.4)) * (1 + EPS)
'''


# -- the generator ---------------------------------------------------------------------------------
class Generator:
    def __init__(self, ch, *, max_functions=3, max_stmts=10, avoid=()):
        self.ch = ch
        self.avoid = frozenset(avoid)
        self.max_functions = max_functions
        self.max_stmts = max_stmts
        self._names = itertools.count()
        self._k = itertools.count()
        self.classes = []
        self.globals_ = []
        self.helpers = []  # module-level helper functions (source lines), called from functions

    def fresh(self, prefix):
        return f"{prefix}{next(self._names)}"

    def init(self, shape):
        return f"_v({shape!r}, {next(self._k)})"

    # -- programs ----------------------------------------------------------------------------------
    def program(self):
        lines = [PRELUDE]
        for _ in range(self.ch.integer(0, 3)):
            lines += [""] + self.class_def() + [""]
        functions, body = [], []
        n = self.ch.integer(1, self.max_functions)
        for _ in range(n):
            fn_lines, fn = self.function()
            body += [""] + fn_lines + [""]
            functions.append(fn)
        lines += [f"{g} = None" for g in self.globals_]
        for h in self.helpers:
            lines += [""] + h + [""]
        lines += body
        return Program("\n".join(lines).rstrip() + "\n", functions)

    # -- classes -----------------------------------------------------------------------------------
    def class_def(self):
        name = f"M{len(self.classes)}"
        template = Obj("mod", cls=None, attrs={})
        init = []
        for j in range(self.ch.integer(1, 4)):
            attr = f"{'abcdefgh'[j]}"
            what = self.ch.weighted([(6, "var"), (2, "sub"), (2, "alias"), (2, "dict"), (1, "int")])
            if what == "sub" and self.classes:
                sub = self.ch.pick(self.classes)
                init.append(f"self.{attr} = {sub.name}()")
                template.attrs[attr] = instance(sub)
                continue
            if what == "alias" and template.attrs:
                other = self.ch.pick(sorted(template.attrs))
                init.append(f"self.{attr} = self.{other}")
                template.attrs[attr] = template.attrs[other]
                continue
            if what == "dict":
                obj, expr = self.new_dict_obj()
            elif what == "int":
                obj, expr = Obj("int"), "hijaxc.Variable(jnp.array(0, jnp.int32))"
            else:
                obj, expr = self.new_arr_obj(allow_ref=False)
            init.append(f"self.{attr} = {expr}")
            template.attrs[attr] = obj
        spec = ClassSpec(name, [], template)
        template.cls = spec
        lines = [f"class {name}(nnx.Module):", "    def __init__(self):"]
        lines += ["        " + s for s in init]
        if self.ch.flag(50):  # (set spec.method afterwards: the method must not call itself)
            scope = Scope({"self": instance(spec)}, {"y": (3,)}, values_only=True, depth=1,
                          no_control="lax_in_method" in self.avoid)
            body = self.block(scope, self.ch.integer(1, 3))
            ret = self.expr(scope, (3,))
            lines += ["", "    def bump(self, y):"]
            lines += ["        " + s for s in body + [f"return {ret}"]]
            spec.method = "bump"
        spec.lines = lines
        self.classes.append(spec)
        return lines

    def new_arr_obj(self, allow_ref=True):
        shape = self.ch.pick(SHAPES)
        if self.ch.flag(20):  # flax's own Variable: read and written through .value only
            cls = self.ch.pick(["nnx.Param", "nnx.Variable", "nnx.BatchStat"])
            return Obj("nnx", shape), f"{cls}({self.init(shape)})"
        cls = self.ch.weighted([(3, "hijaxc.Variable"), (2, "hijaxc.Param"), (1, "hijaxc.BatchStat")])
        extra = ", ref=True" if allow_ref and self.ch.flag(15) else ""
        return Obj("arr", shape), f"{cls}({self.init(shape)}{extra})"

    def new_dict_obj(self):
        keys = {}
        for j in range(self.ch.integer(1, 2)):
            keys["ab"[j]] = self.ch.pick(SHAPES)
        body = ", ".join(f"{k!r}: {self.init(s)}" for k, s in keys.items())
        return Obj("dict", keys=keys), f"hijaxc.Variable({{{body}}})"

    # -- one function and its factory --------------------------------------------------------------
    def function(self):
        fname = self.fresh("f")
        nested = self.ch.flag(50)  # defined inside make_*, so the objects are closure cells
        make = [f"def make_{fname}():"]
        pool = {}  # name in make -> Obj
        pool_lines = []
        for _ in range(self.ch.integer(1, 4)):
            name = self.fresh("o")
            what = self.ch.weighted([(5, "arr"), (3, "mod"), (2, "dict"), (1, "ref"), (1, "list"),
                                     (1, "pydict"),
                                     (1, "int")])
            if what == "mod" and self.classes:
                cls = self.ch.pick(self.classes)
                obj, expr = instance(cls), f"{cls.name}()"
            elif what == "dict":
                obj, expr = self.new_dict_obj()
            elif what == "ref":
                shape = self.ch.pick(SHAPES)
                obj, expr = Obj("ref", shape), f"hijaxc.Ref({self.init(shape)})"
            elif what == "int":
                obj, expr = Obj("int"), "hijaxc.Variable(jnp.array(0, jnp.int32))"
            elif what == "pydict" and pool:
                members = {f"m{j}": self.ch.pick(sorted(pool)) for j in range(self.ch.integer(1, 2))}
                obj = Obj("pydict", attrs={k: pool[m] for k, m in members.items()})
                expr = "{" + ", ".join(f"{k!r}: {m}" for k, m in members.items()) + "}"
            elif what == "list" and pool:
                members = [self.ch.pick(sorted(pool)) for _ in range(self.ch.integer(1, 3))]
                obj = Obj("list", items=[pool[m] for m in members])
                expr = f"[{', '.join(members)}]"
            else:
                obj, expr = self.new_arr_obj()
            pool[name] = obj
            pool_lines.append(f"{name} = {expr}")
        # reach one object through a second attribute
        mods = [n for n, o in pool.items() if o.kind == "mod"]
        if mods and self.ch.flag(30):
            m = self.ch.pick(mods)
            other = self.ch.pick(sorted(pool))
            if pool[other].kind not in ("list", "pydict", "ref") and not reaches(pool[other], pool[m]):
                attr = self.fresh("x")
                pool_lines.append(f"{m}.{attr} = {other}")
                pool[m].attrs[attr] = pool[other]
        # module globals
        gl = {}
        for name in sorted(pool):
            if self.ch.flag(30):
                g = f"G{name[1:]}"
                self.globals_.append(g)
                gl[g] = pool[name]
                pool_lines.append(f"{g} = {name}")
        if gl:
            make.append(f"    global {', '.join(sorted(gl))}")
        make += ["    " + s for s in pool_lines]
        # arguments: objects from the pool (the same one twice = aliasing), then arrays
        params, argv = {}, []
        for _ in range(self.ch.integer(0, 3)):
            name = self.ch.pick(sorted(pool))
            p = f"p{len(params)}"
            params[p] = pool[name]
            argv.append(name)
        arrs = {"x": (3,)}
        argv.append(self.init((3,)))
        if self.ch.flag(30):
            arrs["xs"] = (2, 3)
            argv.append(self.init((2, 3)))
        kwonly = {}  # an object passed by keyword
        if pool and self.ch.flag(20):
            name = self.ch.pick(sorted(pool))
            kwonly[f"k{len(params)}"] = name
            params[f"k{len(params)}"] = pool[name]
        objs = dict(params)
        objs.update(gl)
        if nested:
            objs.update(pool)
        scope = Scope(objs, dict(arrs))
        self.new_objs, self.new_attrs = [], []
        body = self.block(scope, self.ch.integer(1, self.max_stmts))
        body.append(self.return_stmt(scope))
        sig = ", ".join([p for p in params if p not in kwonly] + list(arrs)
                        + (["*"] + list(kwonly) if kwonly else []))
        fn_lines = [f"def {fname}({sig}):"] + ["    " + s for s in body]
        if nested:
            make += ["    " + s for s in fn_lines]
            out = make
        else:
            out = fn_lines + [""] + make
        if "between_calls" not in self.avoid and self.ch.flag(40):
            between = self.between(pool)
            if between:
                out += ["    def between():"] + ["        " + x for x in between]
                out.append(f"    BETWEEN[{fname!r}] = between")
        args = "".join(a + ", " for a in argv)
        state = f"({''.join(n + ', ' for n in pool)})"
        if kwonly:
            kwargs = "{" + ", ".join(f"{k!r}: {n}" for k, n in kwonly.items()) + "}"
            out.append(f"    return {fname}, ({args}), {kwargs}, {state}")
        else:
            out.append(f"    return {fname}, ({args}), {state}")
        calls = self.ch.integer(2, 3)
        return out, Function(fname, f"make_{fname}", calls)

    def between(self, pool):
        """Eager changes made to the caller's objects before every call but the first (the same
        in both runs): new values, new dict keys, new/replaced/aliased/deleted attributes, list
        appends.  Each keeps the kind and shape of everything the function body names, so the
        body stays valid; the compiled function must notice them (S8: retrace on structure)."""
        scope = Scope(dict(pool), {})
        lines = []
        for _ in range(self.ch.integer(1, 3)):
            what = self.ch.weighted([(2, "value"), (2, "key"), (2, "attr"), (2, "replace"),
                                     (2, "alias"), (1, "append"), (1, "del")])
            if what == "value":
                cands = self.paths(scope, lambda o: o.kind in FLOAT_KINDS)
                if cands:
                    p, o = self.ch.pick(cands)
                    lines.append(f"{p}{'.value' if o.kind == 'nnx' else '[...]'} = {self.init(o.shape)}")
            elif what == "key":
                cands = self.paths(scope, lambda o: o.kind == "dict")
                if cands:
                    p, o = self.ch.pick(cands)
                    k, sh = self.fresh("bk"), self.ch.pick(SHAPES)
                    o.keys[k] = sh
                    lines.append(f"{p}[{k!r}] = {self.init(sh)}")
            elif what in ("attr", "replace", "alias", "del"):
                mods = self.paths(scope, lambda o: o.kind == "mod")
                if not mods:
                    continue
                p, m = self.ch.pick(mods)
                same = lambda o, a: (a in m.attrs and o.kind == m.attrs[a].kind  # noqa: E731
                                     and o.kind in ("arr", "nnx") and o.shape == m.attrs[a].shape)
                olds = [a for a in sorted(m.attrs) if m.attrs[a].kind in ("arr", "nnx")]
                if what == "attr":
                    a, sh = self.fresh("b"), self.ch.pick(SHAPES)
                    m.attrs[a] = Obj("arr", sh)
                    lines.append(f"{p}.{a} = hijaxc.Variable({self.init(sh)})")
                elif what == "replace" and olds:
                    a = self.ch.pick(olds)
                    o = m.attrs[a]
                    cls = "nnx.Param" if o.kind == "nnx" else "hijaxc.Param"
                    m.attrs[a] = Obj(o.kind, o.shape)
                    lines.append(f"{p}.{a} = {cls}({self.init(o.shape)})")
                elif what == "alias" and olds:
                    a = self.ch.pick(olds)
                    cands = [(q, o) for q, o in self.paths(scope, lambda o: same(o, a))
                             if o is not m.attrs[a]]
                    if cands:
                        q, o = self.ch.pick(cands)
                        m.attrs[a] = o
                        lines.append(f"{p}.{a} = {q}")
                elif what == "del":
                    created = [a for mm, a in self.new_attrs if mm is m and a in m.attrs]
                    if created:
                        a = self.ch.pick(created)
                        del m.attrs[a]
                        lines.append(f"del {p}.{a}")
            elif what == "append":  # grow a container, or swap one of its items
                cands = self.paths(scope, lambda o: o.kind in ("list", "pydict"))
                if cands:
                    p, o = self.ch.pick(cands)
                    sh = self.ch.pick(SHAPES)
                    items = (list(enumerate(o.items)) if o.kind == "list" else
                             sorted(o.attrs.items()))
                    i, old = self.ch.pick(items)
                    swap = [(q, x) for q, x in self.paths(scope, lambda x: x.kind == old.kind and x.kind in (
                        "arr", "nnx", "ref") and x.shape == old.shape) if x is not old]
                    if swap and self.ch.flag(50):
                        q, x = self.ch.pick(swap)
                        (o.items if o.kind == "list" else o.attrs)[i] = x
                        lines.append(f"{p}[{i!r}] = {q}")
                    elif o.kind == "list":
                        o.items.append(Obj("arr", sh))
                        lines.append(f"{p}.append(hijaxc.Variable({self.init(sh)}))")
                    else:
                        k = self.fresh("m")
                        o.attrs[k] = Obj("arr", sh)
                        lines.append(f"{p}[{k!r}] = hijaxc.Variable({self.init(sh)})")
        return lines

    def return_stmt(self, scope):
        items = []
        for _ in range(self.ch.integer(0, 3)):
            what = self.ch.weighted([(3, "expr"), (2, "obj"), (1, "new")])
            if what == "obj" and scope.objs:
                items.append(self.ch.pick(self.paths(scope, lambda o: True))[0])
            elif what == "new" and self.new_objs:
                items.append(self.ch.pick(self.new_objs))
            else:
                items.append(self.expr(scope, self.ch.pick(SHAPES)))
        if not items:
            return "return None"
        if len(items) == 1 and self.ch.flag(50):
            return f"return {items[0]}"
        if self.ch.flag(20):
            return "return {" + ", ".join(f"'r{i}': {e}" for i, e in enumerate(items)) + "}"
        return f"return ({''.join(e + ', ' for e in items)})"

    # -- paths -------------------------------------------------------------------------------------
    def paths(self, scope, pred, max_depth=3):
        """(path source, Obj) for every object reachable from the scope's names (aliases give
        several paths to one object), in a deterministic order."""
        out = []

        def walk(path, obj, depth):
            if pred(obj):
                out.append((path, obj))
            if depth >= max_depth:
                return
            if obj.kind == "mod":
                for a in sorted(obj.attrs):
                    walk(f"{path}.{a}", obj.attrs[a], depth + 1)
            elif obj.kind == "pydict":
                for k in sorted(obj.attrs):
                    walk(f"{path}[{k!r}]", obj.attrs[k], depth + 1)
            elif obj.kind == "list":
                for i, it in enumerate(obj.items):
                    walk(f"{path}[{i}]", it, depth + 1)

        for name in sorted(scope.objs):
            walk(name, scope.objs[name], 0)
        return out

    # -- expressions (bounded: |result| <= max(|leaves|, 2)) ---------------------------------------
    def leaves(self, scope, shape):
        out = []
        for path, o in self.paths(scope, lambda o: o.kind in FLOAT_KINDS + ("dict",)):
            if o.kind == "nnx":
                if o.shape == shape:
                    out.append(f"{path}.value")
                if o.shape == (3,) and shape == ():
                    out.append(f"{path}.value[{self.ch.integer(0, 2)}]")
                if o.shape == (2, 3) and shape == (3,):
                    out.append(f"{path}.value[{self.ch.integer(0, 1)}]")
            elif o.kind in FLOAT_KINDS:
                if o.shape == shape:
                    out.append(f"{path}[...]")
                    if o.kind == "arr":
                        out.append(f"{path}.value")
                        out.append(f"{path}.get_value()")
                if o.shape == (3,) and shape == ():
                    out.append(f"{path}[{self.ch.integer(0, 2)}]")
                if o.shape == (2, 3) and shape == (3,):
                    out.append(f"{path}[{self.ch.integer(0, 1)}]")
            else:
                out += [f"{path}[{k!r}]" for k, s in sorted(o.keys.items()) if s == shape]
        out += [n for n, s in sorted(scope.arrs.items()) if s == shape]
        if shape == ():
            out += [f"({n} * 0.25)" for n in scope.ints]
        return out

    def expr(self, scope, shape, depth=0):
        if shape == (2,):
            return f"({self.expr(scope, (3,), depth)})[{self.ch.pick([':2', '1:'])}]"
        leaves = self.leaves(scope, shape)
        kind = self.ch.weighted([(4, "leaf"), (1, "const"), (4, "op") if depth < 2 else (0, "op")])
        if kind == "const" or (kind == "leaf" and not leaves):
            return f"jnp.full({shape!r}, {fmt(self.ch.pick([0.5, -1.0, 1.5, 0.25]))}, jnp.float32)"
        if kind == "leaf":
            return self.ch.pick(leaves)
        op = self.ch.integer(0, 9)
        a = lambda: self.expr(scope, shape, depth + 1)  # noqa: E731
        if op == 0:
            return f"0.5 * ({a()} + {a()})"
        if op == 1:
            return f"0.5 * ({a()} - {a()})"
        if op == 2:
            return f"{a()} * jnp.tanh({a()})"
        if op == 3:
            return f"jnp.sin({a()})"
        if op == 4:
            return f"-{a()}"
        if op == 5:
            return f"{a()} * jnp.cos({self.expr(scope, (), depth + 1)})"
        if op == 6:
            return f"jnp.where({a()} > 0.0371, {a()}, {a()})"
        if op == 7:  # reductions / reshaping from another shape
            if shape == ():
                return f"({self.expr(scope, self.ch.pick([(3,), (2, 3)]), depth + 1)}).mean()"
            if shape == (3,):
                return f"({self.expr(scope, (2, 3), depth + 1)}).mean(0)"
            return f"jnp.stack([{self.expr(scope, (3,), depth + 1)}, {self.expr(scope, (3,), depth + 1)}])"
        if op == 8:
            return f"jnp.tanh({a()})"
        return f"{a()} * 0.5"

    def increment(self, scope, shape):
        e = self.expr(scope, shape)
        return self.ch.pick([f"0.5 * jnp.tanh({e})", f"0.25 * {e}", f"0.5 * jnp.sin({e})"])

    def multiplier(self, scope, shape):
        if self.ch.flag(50):
            return fmt(self.ch.pick([0.5, -1.0, 0.9]))
        return f"jnp.cos({self.expr(scope, self.ch.pick([shape, ()]))})"

    # -- statements --------------------------------------------------------------------------------
    def block(self, scope, n):
        lines = []
        for _ in range(n):
            lines += self.statement(scope)
        return lines or ["pass"]

    def statement(self, scope):
        full = not scope.values_only
        kinds = [(8, "write"), (3, "dict"), (2, "local"), (1, "alias"), (1, "method"),
                 (1, "counter"), (3 if scope.depth < 3 and not scope.no_control else 0, "control"),
                 (2 if full and scope.depth < 3 else 0, "nested"), (1 if full else 0, "pyloop"),
                 (2 if scope.depth < 3 and "module_helper" not in self.avoid else 0, "helper"),
                 (2 if full else 0, "newvar"), (3 if full else 0, "newattr"),
                 (1 if full else 0, "append"), (2 if full else 0, "delattr")]
        kind = self.ch.weighted([(w, k) for w, k in kinds if w])
        return getattr(self, f"st_{kind}")(scope) or self.st_local(scope)

    def st_write(self, scope):
        targets = self.paths(scope, lambda o: o.kind in FLOAT_KINDS)
        if not targets:
            return None
        path, o = self.ch.pick(targets)
        s = o.shape
        if o.kind == "nnx":
            form = self.ch.integer(0, 2)
            if form == 0:
                return [f"{path}.value = {self.expr(scope, s)}"]
            if form == 1:
                return [f"{path}.value += {self.increment(scope, s)}"]
            return [f"{path}.value *= {self.multiplier(scope, s)}"]
        form = self.ch.integer(0, 7 if o.kind == "arr" else 3)
        if form == 7:
            return [f"{path}.set_value({self.expr(scope, s)})"]
        if form == 0:
            return [f"{path}[...] = {self.expr(scope, s)}"]
        if form == 1:
            return [f"{path}[...] += {self.increment(scope, s)}"]
        if form == 2:
            return [f"{path}[...] *= {self.multiplier(scope, s)}"]
        if form == 3:
            return [f"{path}[...] -= {self.increment(scope, s)}"]
        if form == 4:
            return [f"{path}.value = {self.expr(scope, s)}"]
        if form == 5:
            return [f"{path}.value += {self.increment(scope, s)}"]
        # indexed write
        if s == ():
            return [f"{path}[...] = {self.expr(scope, s)}"]
        if s == (3,):
            idx, sub = self.ch.pick([("0", ()), ("2", ()), ("1:3", (2,)), (":2", (2,))])
        else:
            idx, sub = self.ch.pick([("0", (3,)), ("1", (3,)), (":, 1", (2,)), ("0, 2", ())])
        if sub == (2,) and s == (2, 3):
            rhs = f"({self.expr(scope, (2, 3))})[:, 0]"
            return [f"{path}[{idx}] = {rhs}"]
        if self.ch.flag(50):
            return [f"{path}[{idx}] += {self.increment(scope, sub)}"]
        return [f"{path}[{idx}] = {self.expr(scope, sub)}"]

    def st_dict(self, scope):
        targets = self.paths(scope, lambda o: o.kind == "dict")
        if not targets:
            return None
        path, o = self.ch.pick(targets)
        if not scope.values_only and self.ch.flag(35):  # a new key
            k = self.fresh("k")
            s = self.ch.pick(SHAPES)
            pre, key = self._key(k)
            line = f"{path}[{key}] = {self.expr(scope, s)}"
            o.keys[k] = s
            return pre + [line]
        k = self.ch.pick(sorted(o.keys))
        s = o.keys[k]
        form = self.ch.integer(0, 2)
        pre, key = self._key(k)
        if form == 0:
            return pre + [f"{path}[{key}] = {self.expr(scope, s)}"]
        if form == 1:
            return pre + [f"{path}[{key}] += {self.increment(scope, s)}"]
        return pre + [f"{path}[{key}] *= {self.multiplier(scope, s)}"]

    def _key(self, k):
        """``(lines, expression)`` naming dict key ``k``: the literal, or (dynamic keys) a string
        computed when the function runs, inline or in a local."""
        form = self.ch.weighted([(70, 0), (15, 1), (15, 2)])
        if form == 0:
            return [], repr(k)
        computed = (f"{k[:1]!r} + str({int(k[1:])})" if k[1:].isdigit()
                    else f"chr({ord(k)})" if len(k) == 1 else f"{k[:1]!r} + {k[1:]!r}")
        if form == 1:
            return [], computed
        name = self.fresh("key")
        return [f"{name} = {computed}"], name

    def st_local(self, scope):
        s = self.ch.pick(SHAPES)
        name = self.fresh("t")
        line = f"{name} = {self.expr(scope, s)}"
        scope.arrs[name] = s
        return [line]

    def st_alias(self, scope):
        targets = self.paths(scope, lambda o: o.kind != "list")
        if not targets:
            return None
        path, o = self.ch.pick(targets)
        name = self.fresh("u")
        scope.objs[name] = o
        return [f"{name} = {path}"]

    def st_counter(self, scope):
        targets = self.paths(scope, lambda o: o.kind == "int")
        if not targets:
            return None
        return [f"{self.ch.pick(targets)[0]}[...] += 1"]

    def st_method(self, scope):
        targets = self.paths(scope, lambda o: o.kind == "mod" and o.cls and o.cls.method)
        if not targets:
            return None
        path, o = self.ch.pick(targets)
        name = self.fresh("t")
        line = f"{name} = {path}.{o.cls.method}({self.expr(scope, (3,))})"
        scope.arrs[name] = (3,)
        return [line]

    def st_newvar(self, scope):
        name = self.fresh("n")
        if self.classes and self.ch.flag(20):  # a Module created inside
            cls = self.ch.pick(self.classes)
            obj, expr = instance(cls), f"{cls.name}()"
        elif self.ch.flag(25):
            obj, expr = Obj("dict", keys={"a": (3,)}), f"hijaxc.Variable({{'a': {self.expr(scope, (3,))}}})"
        else:
            s = self.ch.pick(SHAPES)
            cls = self.ch.pick(["hijaxc.Variable", "hijaxc.Param"])
            obj, expr = Obj("arr", s), f"{cls}({self.expr(scope, s)})"
        scope.objs[name] = obj
        if scope.depth == 0:
            self.new_objs.append(name)
        return [f"{name} = {expr}"]

    def st_newattr(self, scope):
        mods = self.paths(scope, lambda o: o.kind == "mod")
        if not mods:
            return None
        path, m = self.ch.pick(mods)
        what = self.ch.weighted([(3, "var"), (2, "existing"), (1, "replace"), (1, "module")])
        if what == "replace":
            old = [a for a, o in sorted(m.attrs.items()) if o.kind == "arr"]
            if old:
                attr = self.ch.pick(old)
                s = m.attrs[attr].shape
                line = f"{path}.{attr} = hijaxc.Param({self.expr(scope, s)})"
                m.attrs[attr] = Obj("arr", s)
                return [line]
        attr = self.fresh("e")
        if what == "existing":
            cands = [(p, o) for p, o in self.paths(scope, lambda o: o.kind in ("arr", "dict", "mod"))
                     if not reaches(o, m)]
            if cands:
                p, o = self.ch.pick(cands)
                m.attrs[attr] = o
                return [f"{path}.{attr} = {p}"]
        if what == "module" and self.classes:
            cls = self.ch.pick(self.classes)
            m.attrs[attr] = instance(cls)
            return [f"{path}.{attr} = {cls.name}()"]
        s = self.ch.pick(SHAPES)
        line = f"{path}.{attr} = hijaxc.Variable({self.expr(scope, s)})"
        m.attrs[attr] = Obj("arr", s)
        self.new_attrs.append((m, attr))
        return [line]

    def st_delattr(self, scope):
        """``del`` an attribute this function added (the next call starts without it again)."""
        cands = [(p, m, a) for m, a in self.new_attrs if a in m.attrs
                 for p, o in self.paths(scope, lambda o: o is m)]
        if not cands:
            return None
        path, m, attr = self.ch.pick(cands)
        del m.attrs[attr]
        return [f"del {path}.{attr}"]

    def st_append(self, scope):
        lists = self.paths(scope, lambda o: o.kind in ("list", "pydict"))
        if not lists:
            return None
        path, lst = self.ch.pick(lists)
        s = self.ch.pick(SHAPES)
        if lst.kind == "pydict":
            k = self.fresh("m")
            line = f"{path}[{k!r}] = hijaxc.Variable({self.expr(scope, s)})"
            lst.attrs[k] = Obj("arr", s)
            return [line]
        line = f"{path}.append(hijaxc.Variable({self.expr(scope, s)}))"
        lst.items.append(Obj("arr", s))
        return [line]

    def st_pyloop(self, scope):
        inner = scope.child(values_only=True)
        body = self.block(inner, self.ch.integer(1, 3))
        return [f"for _ in range({self.ch.integer(1, 3)}):"] + ["    " + s for s in body]

    def st_nested(self, scope):
        name = self.fresh("h")
        twice = self.ch.flag(40)
        inner = scope.child(values_only=scope.values_only or twice, depth=scope.depth + 1)
        definition, calls = self._function_called(scope, name, inner, twice, (0, 2), (1, 4))
        return definition + calls

    def st_helper(self, scope):
        """A module-level function (not the compiled one, not nested in it) that receives objects
        and mutates them, possibly in lax control flow, and may reach module globals directly:
        hijaxc converts it when it is called (and learns the globals it reaches)."""
        name = self.fresh("hh")
        twice = self.ch.flag(40)
        inner = Scope({}, {}, values_only=scope.values_only or twice, depth=scope.depth + 1,
                      no_control=scope.no_control)

        def own_globals():
            for g in self.globals_:
                if g in scope.objs and "helper_globals" not in self.avoid and self.ch.flag(50):
                    inner.objs[g] = scope.objs[g]

        definition, calls = self._function_called(scope, name, inner, twice, (1, 2), (1, 3),
                                                  before_body=own_globals)
        self.helpers.append(definition)
        return calls

    def _function_called(self, scope, name, inner, twice, n_params, n_stmts, before_body=None):
        """(definition lines, call lines) of a function ``name`` over ``inner`` that receives
        objects of ``scope`` as parameters (called twice, on possibly other objects, if ``twice``)
        and returns a (3,) array bound to a fresh name in ``scope``."""
        params, first, second = [], [], []
        for _ in range(self.ch.integer(*n_params)):
            cands = self.paths(scope, lambda o: o.kind != "list")
            if not cands:
                break
            path, o = self.ch.pick(cands)
            q = self.fresh("q")
            params.append(q)
            inner.objs[q] = o
            first.append(path)
            same = [p for p, o2 in cands if o2 is o or (
                o.kind in FLOAT_KINDS and o2.kind == o.kind and o2.shape == o.shape)]
            second.append(self.ch.pick(same))
        if before_body is not None:
            before_body()
        z = self.fresh("z")
        inner.arrs[z] = (3,)
        # the call's arguments first: the body may add attributes/keys the caller cannot see yet
        z1, z2 = self.expr(scope, (3,)), self.expr(scope, (3,)) if twice else None
        body = self.block(inner, self.ch.integer(*n_stmts))
        body.append(f"return {self.expr(inner, (3,))}")
        definition = [f"def {name}({', '.join(params + [z])}):"] + ["    " + s for s in body]
        out = self.fresh("t")
        calls = [f"{out} = {name}({', '.join(first + [z1])})"]
        if twice:
            calls.append(f"{out} = {out} + {name}({', '.join(second + [z2])})")
        scope.arrs[out] = (3,)
        return definition, calls

    # -- lax control flow: bodies mutate captured (or received) Variables, values only ----------
    def body_scope(self, scope):
        return scope.child(values_only=True, depth=scope.depth + 1)

    def st_control(self, scope):
        kind = self.ch.weighted([(3, "fori"), (3, "cond"), (2, "scan"), (1, "switch"), (1, "while"),
                                 (2, "wrapped"), (1, "vmap")])
        return getattr(self, f"cf_{kind}")(scope)

    def cf_vmap(self, scope):
        """``jax.vmap`` over the rows of a (2, 3) array of a function that *reads* the state it
        captures (a function under vmap may not write captured state: one value per row)."""
        r = self.fresh("r")
        inner = self.body_scope(scope)
        inner.arrs[r] = (3,)
        xs = "xs" if "xs" in scope.arrs and self.ch.flag(50) else self.expr(scope, (2, 3))
        out = self.fresh("t")
        scope.arrs[out] = (2, 3)
        body = self.ch.pick([f"0.5 * ({r} + {{}})", f"{r} * jnp.tanh({{}})", "{}"])
        return [f"{out} = jax.vmap(lambda {r}: {body.format(self.expr(inner, (3,)))})({xs})"]

    def cf_wrapped(self, scope):
        """A nested function under jax.jit / hijaxc.jit / jax.checkpoint (decorator or call)."""
        name, z = self.fresh("g"), self.fresh("z")
        inner = self.body_scope(scope)
        inner.arrs[z] = (3,)
        stmts = self.block(inner, self.ch.integer(1, 3))
        stmts.append(f"return {self.expr(inner, (3,))}")
        wraps = ["jax.jit", "jax.checkpoint"] + ([] if "nested_hijaxc_jit" in self.avoid else ["hijaxc.jit"])
        wrap = self.ch.pick(wraps)
        out = self.fresh("t")
        lines = [f"def {name}({z}):"] + ["    " + x for x in stmts]
        if self.ch.flag(50):
            lines = [f"@{wrap}"] + lines + [f"{out} = {name}({self.expr(scope, (3,))})"]
        else:
            lines += [f"{out} = {wrap}({name})({self.expr(scope, (3,))})"]
        scope.arrs[out] = (3,)
        return lines

    def cf_fori(self, scope):
        body, i, c = self.fresh("body"), self.fresh("i"), self.fresh("c")
        s = self.ch.pick(SHAPES)
        inner = self.body_scope(scope)
        inner.ints = inner.ints + (i,)
        inner.arrs[c] = s
        stmts = self.block(inner, self.ch.integer(1, 3))
        stmts.append(f"return 0.5 * ({c} + {self.expr(inner, s)})")
        out = self.fresh("t")
        lines = [f"def {body}({i}, {c}):"] + ["    " + x for x in stmts]
        lines.append(f"{out} = jax.lax.fori_loop(0, {self.ch.integer(1, 3)}, {body}, {self.expr(scope, s)})")
        scope.arrs[out] = s
        return lines

    def cf_scan(self, scope):
        body, c, xr = self.fresh("body"), self.fresh("c"), self.fresh("xr")
        s = self.ch.pick(SHAPES)
        inner = self.body_scope(scope)
        inner.arrs[c] = s
        inner.arrs[xr] = (3,)
        stmts = self.block(inner, self.ch.integer(1, 3))
        with_ys = self.ch.flag(60)
        ys = self.expr(inner, (3,)) if with_ys else "None"
        stmts.append(f"return 0.5 * ({c} + {self.expr(inner, s)}), {ys}")
        xs = "xs" if "xs" in scope.arrs and self.ch.flag(50) else self.expr(scope, (2, 3))
        out, outs = self.fresh("t"), self.fresh("t")
        lines = [f"def {body}({c}, {xr}):"] + ["    " + x for x in stmts]
        lines.append(f"{out}, {outs if with_ys else '_'} = jax.lax.scan({body}, {self.expr(scope, s)}, {xs})")
        scope.arrs[out] = s
        if with_ys:
            scope.arrs[outs] = (2, 3)
        return lines

    def _operand(self, scope, inner, params):
        """A branch operand: an array, or (S7 "receive") a Variable passed in."""
        cands = self.paths(scope, lambda o: o.kind in FLOAT_KINDS + ("dict", "mod"))
        if cands and "state_operand" not in self.avoid and self.ch.flag(30):
            path, o = self.ch.pick(cands)
            for p in params:
                inner[p].objs[params[p]] = o
            return path
        for p in params:
            inner[p].arrs[params[p]] = (3,)
        return self.expr(scope, (3,))

    def _branches(self, scope, n):
        s = self.ch.pick(SHAPES)
        names = [self.fresh("br") for _ in range(n)]
        z = self.fresh("z")
        inners = {b: self.body_scope(scope) for b in names}
        operand = self._operand(scope, inners, {b: z for b in names})
        lines = []
        for b in names:
            inner = inners[b]
            stmts = self.block(inner, self.ch.integer(0, 3)) if self.ch.flag(80) else ["pass"]
            stmts = [x for x in stmts if x != "pass"]
            stmts.append(f"return {self.expr(inner, s)}")
            lines += [f"def {b}({z}):"] + ["    " + x for x in stmts]
        return lines, names, operand, s

    def cf_cond(self, scope):
        lines, (t, f), operand, s = self._branches(scope, 2)
        out = self.fresh("t")
        pred = f"{self.expr(scope, ())} > {fmt(self.ch.pick(THRESHOLDS))}"
        lines.append(f"{out} = jax.lax.cond({pred}, {t}, {f}, {operand})")
        scope.arrs[out] = s
        return lines

    def cf_switch(self, scope):
        n = self.ch.integer(2, 3)
        lines, names, operand, s = self._branches(scope, n)
        out = self.fresh("t")
        index = (f"jnp.int32({self.expr(scope, ())} > {THRESHOLDS[0]}) + "
                 f"jnp.int32({self.expr(scope, ())} > {THRESHOLDS[1]})")
        lines.append(f"{out} = jax.lax.switch({index}, [{', '.join(names)}], {operand})")
        scope.arrs[out] = s
        return lines

    def cf_while(self, scope):
        cond, body, c = self.fresh("cond"), self.fresh("body"), self.fresh("c")
        s = self.ch.pick(SHAPES)
        inner = self.body_scope(scope)
        val = self.fresh("w")
        inner.arrs[val] = s
        n = f"n_{c}"  # (unique: deleting the unpacking line must not capture an outer counter)
        stmts = [f"{n}, {val} = {c}"] + self.block(inner, self.ch.integer(1, 3))
        stmts.append(f"return {n} + 1, 0.5 * ({val} + {self.expr(inner, s)})")
        out = self.fresh("t")
        lines = [f"def {cond}({c}):", f"    return {c}[0] < {self.ch.integer(1, 3)}"]
        lines += [f"def {body}({c}):"] + ["    " + x for x in stmts]
        lines.append(f"_, {out} = jax.lax.while_loop({cond}, {body}, (0, {self.expr(scope, s)}))")
        scope.arrs[out] = s
        return lines


#: Generator features that hit a known, open hijaxc bug (feature -> the regression test that pins
#: it).  The fuzz runs avoid them so that they keep finding *new* bugs; delete an entry once its
#: regression test passes.
KNOWN_BUGS = {
    # (none open)  Fixed: "lax_in_method" (tests/regressions/test_regression_ef6ddd7072.py; calls
    # from compiled code into user functions are converted), "nested_hijaxc_jit"
    # (tests/regressions/test_regression_302effa41d.py).
}


def generate(ch, **kw):
    """A random :class:`Program` from the choices of ``ch``."""
    return Generator(ch, **kw).program()


# -- running ---------------------------------------------------------------------------------------
class EagerError(Exception):
    """The program failed eagerly: a bug in the generator, not in hijaxc."""


@contextlib.contextmanager
def _eager_context():
    with python_control_flow():
        try:
            yield
        except Exception as e:
            raise EagerError(f"{type(e).__name__}: {e}") from e


_tmpdir = None
_loaded = itertools.count()


def load(source):
    """Import ``source`` as a real module (hijaxc reads functions' source through ``inspect``)."""
    global _tmpdir
    if _tmpdir is None:
        _tmpdir = tempfile.mkdtemp(prefix="hijaxc-fuzz-")
    name = f"hxfuzz_{hashlib.sha1(source.encode()).hexdigest()[:10]}_{next(_loaded)}"
    path = os.path.join(_tmpdir, name + ".py")
    with open(path, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


class AtomicityError(AssertionError):
    """S6: a ``hijaxc.jit`` call raised and left the caller's objects changed (or deleted arrays)."""


def _atomic_case(make):
    """``make`` as a factory whose compiled run also checks S6 (when a call raises, everything
    reachable from the arguments and state must be as it was before the call), and whose both runs
    apply the program's ``BETWEEN`` changes before every call but the first."""

    def made():
        case = oracle._as_case(make())
        fn = case.fn
        jitted = hijaxc.jit(fn)
        roots = {"args": case.args, "kwargs": case.kwargs, "state": case.state}
        between = getattr(sys.modules[fn.__module__], "BETWEEN", {}).get(fn.__name__)
        calls = [0]

        def before_call():
            calls[0] += 1
            if between is not None and calls[0] > 1:
                between()

        def eager(*args, **kwargs):
            _phase[0] = "eager"
            before_call()
            return fn(*args, **kwargs)

        def call(*args, **kwargs):
            _phase[0] = "compiled"
            before_call()
            before = oracle.snapshot(roots)
            try:
                return jitted(*args, **kwargs)
            except Exception as e:
                try:
                    oracle.assert_same(before, oracle.snapshot(roots), rtol=0, atol=0)
                except Exception as changed:
                    raise AtomicityError(f"the call raised {type(e).__name__}: {str(e)[:300]}\n"
                                         f"and changed the caller's state: {changed}") from e
                raise

        case.eager, case.jitted = eager, call
        return case

    return made


class ProgramTimeout(BaseException):
    """A program ran longer than ``run_program``'s ``timeout`` (a BaseException, so that neither
    the eager-error wrapper nor user-level ``except Exception`` swallows it)."""


_phase = ["?"]  # which run is under way: "eager" or "compiled" (for timeout messages)


@contextlib.contextmanager
def _time_limit(seconds):
    import signal
    import threading

    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def alarm(signum, frame):
        raise ProgramTimeout(f"no result after {seconds}s, in the {_phase[0]} run")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Unstable(Exception):
    """A value mismatch in a program whose eager result itself moves past the tolerance when its
    initial values move by ``STABILITY_EPS`` (relative): float rounding (a fused reduction) could
    explain the mismatch, so it proves nothing.  Not a failure: the fuzz runs skip such programs."""


#: relative perturbation of the initial values for the stability check; a program amplifying it
#: past RTOL amplifies rounding (~1e-7) by >= 100x and is not trusted with value comparisons
STABILITY_EPS = 1e-6


def _check_stable(mod, fn, mismatch):
    """Raise :class:`Unstable` if ``fn``'s eager run is too sensitive to its initial values."""
    make = getattr(mod, fn.make)
    builds = [0]

    def perturbed_make():
        builds[0] += 1
        mod.EPS = STABILITY_EPS if builds[0] > 1 else 0.0
        try:
            case = _atomic_case(make)()
        finally:
            mod.EPS = 0.0
        eager = case.eager

        def eager_again(*args, **kwargs):  # the "compiled" side: eager too, on perturbed values
            with python_control_flow():
                return eager(*args, **kwargs)

        case.jitted = eager_again
        return case

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            oracle.check_eager(perturbed_make, calls=fn.calls, rtol=RTOL, atol=ATOL,
                               eager_context=python_control_flow)
    except AssertionError as e:
        raise Unstable(f"{fn.name}: eager values move past the tolerance when the initial values "
                       f"move by {STABILITY_EPS:g}: {str(e)[:300]}") from mismatch


def run_program(program, timeout=None):
    """Check every function of ``program``; raise the first failure (the source is not added).
    ``timeout`` (seconds, main thread only): raise :class:`ProgramTimeout` past it."""
    mod = load(program.source)
    try:
        for fn in program.functions:
            with warnings.catch_warnings(), _time_limit(timeout):
                warnings.simplefilter("ignore")
                try:
                    try:
                        oracle.check_eager(_atomic_case(getattr(mod, fn.make)), calls=fn.calls,
                                           rtol=RTOL, atol=ATOL, eager_context=_eager_context)
                    except AssertionError as e:
                        if "Not equal to tolerance" in str(e):
                            _check_stable(mod, fn, e)
                        raise
                except BaseException as e:
                    e.fuzz_function = fn.name
                    raise
    finally:
        sys.modules.pop(mod.__name__, None)


def describe(program, exc):
    """The failure message: the exception, the function, and the generated source."""
    fn = getattr(exc, "fuzz_function", "?")
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-6))
    return (f"generated program failed in {fn} ({type(exc).__name__}: {str(exc)[:2000]})\n"
            f"--- traceback (last frames) ---\n{tb}\n--- generated source ---\n{program.source}")


def check_program(program, timeout=None):
    """Run ``program`` and raise ``AssertionError`` with the source printed on any failure
    (:class:`Unstable` passes through: the caller skips such a program)."""
    try:
        run_program(program, timeout)
    except Unstable:
        raise
    except (Exception, ProgramTimeout) as e:
        raise AssertionError(describe(program, e)) from e


def signature(exc):
    """What makes two failures 'the same' while shrinking: type and where it was raised."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f"{os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else "?"
    return (type(exc).__name__, where)


def failure(program, timeout=None):
    try:
        run_program(program, timeout)
    except (Exception, ProgramTimeout) as e:
        return e
    return None


def _statement_slots(tree):
    """(node, field, index) of every statement below the top level's imports and helpers, in a
    fixed order (outer statements first, so whole functions and blocks go before their lines)."""
    slots = []
    for top in tree.body:
        if isinstance(top, (ast.Import, ast.ImportFrom)) or getattr(top, "name", "") == "_v":
            continue
        todo = [top]
        while todo:
            node = todo.pop(0)
            for field in ("body", "orelse"):
                stmts = getattr(node, field, None)
                if isinstance(stmts, list):
                    slots += [(node, field, i) for i in range(len(stmts))]
                    todo += stmts
    return [(tree, "body", i) for i, top in enumerate(tree.body)
            if not isinstance(top, (ast.Import, ast.ImportFrom)) and getattr(top, "name", "") != "_v"
            ] + slots


_SIMPLIFY_CALLS = {"where", "mean", "stack"}


def _expr_slots(tree):
    """(parent, field, index-or-None, replacement) candidates: an operator or a call replaced by one
    of its operands (shapes may no longer fit: such candidates fail eagerly and are rejected)."""
    out = []
    roots = [n for n in tree.body
             if not isinstance(n, (ast.Import, ast.ImportFrom)) and getattr(n, "name", "") != "_v"]
    for parent in (node for root in roots for node in ast.walk(root)):
        for field, value in ast.iter_fields(parent):
            for index, child in ([(None, value)] if isinstance(value, ast.AST) else
                                 list(enumerate(value)) if isinstance(value, list) else []):
                if not isinstance(child, ast.expr):
                    continue
                subs = []
                # Only substitutions that keep the generator's bounds (0.5 * (a + b) -> 0.5 * a,
                # a * tanh(b) -> a, where(c, a, b) -> a, -a -> a), never dropping a scale or a
                # squashing function: an unbounded program fails by float amplification instead.
                if isinstance(child, ast.BinOp):
                    if str(getattr(child.left, "id", "")).startswith("n_"):
                        continue  # a while loop's counter: n_c + 1 -> n_c would never end
                    if isinstance(child.left, ast.Constant) or isinstance(child.right, ast.Constant):
                        continue
                    subs = [child.left, child.right]
                elif isinstance(child, ast.UnaryOp):
                    subs = [child.operand]
                elif isinstance(child, ast.Call):
                    name = getattr(child.func, "attr", "")
                    if name in _SIMPLIFY_CALLS:
                        # (never jnp.where's condition: a bool would compare at exactly 0)
                        subs = list(child.args[1:] if name == "where" else child.args)
                        if isinstance(child.func, ast.Attribute) and name == "mean":
                            subs.append(child.func.value)
                        if name == "stack" and subs and isinstance(subs[0], ast.List):
                            subs = list(subs[0].elts)
                out += [(parent, field, index, s) for s in subs]
    return out


def _replace(tree, k, slots_of, apply):
    tree = copy.deepcopy(tree)
    apply(slots_of(tree)[k])
    return tree


def _delete_stmt(slot):
    node, field, i = slot
    del getattr(node, field)[i]
    if not getattr(node, field) and not isinstance(node, ast.Module):
        getattr(node, field).append(ast.Pass())


def _substitute(slot):
    parent, field, index, sub = slot
    if index is None:
        setattr(parent, field, sub)
    else:
        getattr(parent, field)[index] = sub


def shrink(program, sig, *, budget=300, log=None, timeout=60, hangs=None):
    """Shrink a failing ``program`` while its failure keeps its :func:`signature` (a candidate
    that fails differently, e.g. eagerly, is rejected): keep only the failing function, then delete
    statements (whole definitions and blocks first) and replace operators and calls by one of
    their operands, until nothing more helps or ``budget`` runs are spent.
    A candidate running past ``timeout`` seconds is rejected and, if ``hangs`` is a list,
    appended to it as ``(program, ProgramTimeout)``.  Returns ``(program, exception)``."""
    best, tries = program, 0
    exc = failure(best, timeout)
    if exc is None or signature(exc) != sig:
        return program, exc
    failing = getattr(exc, "fuzz_function", None)
    if failing and len(best.functions) > 1:
        cand = Program(best.source, [f for f in best.functions if f.name == failing])
        e = failure(cand, timeout)
        tries += 1
        if e is not None and signature(e) == sig:
            best, exc = cand, e

    def attempt(tree):
        nonlocal best, exc, tries
        tries += 1
        try:
            source = ast.unparse(tree) + "\n"
            compile(source, "<shrink>", "exec")
        except Exception:
            return False
        if source == best.source:
            return False
        tops = {getattr(n, "name", None) for n in tree.body}
        cand = Program(source, [f for f in best.functions if f.make in tops])
        if not cand.functions:
            return False
        e = failure(cand, timeout)
        if isinstance(e, ProgramTimeout) and hangs is not None:
            hangs.append((cand, e))
        if e is not None and signature(e) == sig:
            best, exc = cand, e
            if log:
                log(f"  shrunk to {len(source)} chars after {tries} runs")
            return True
        return False

    improved = True
    while improved and tries < budget:
        improved = False
        for slots_of, apply in ((_statement_slots, _delete_stmt), (_expr_slots, _substitute)):
            k = 0
            tree = ast.parse(best.source)
            while k < len(slots_of(tree)) and tries < budget:
                if attempt(_replace(tree, k, slots_of, apply)):
                    improved = True
                    tree = ast.parse(best.source)
                else:
                    k += 1
    return best, exc


REGRESSION_TEMPLATE = '''\
"""Regression found by benchmarks/fuzz.py ({origin}): hijaxc.jit must match eager execution.

{symptom}
"""
from fuzzgen import Function, Program, check_program

SOURCE = """\\
{source}"""

FUNCTIONS = {functions!r}


def test_regression():
    check_program(Program(SOURCE, [Function(*f) for f in FUNCTIONS]))
'''


def regression_file(program, exc, origin, directory, name=None):
    """Write ``test_regression_<hash>.py`` (or ``test_regression_<name>.py``) reproducing
    ``program``'s failure; returns its path."""
    os.makedirs(directory, exist_ok=True)
    assert '"""' not in program.source and "\\" not in program.source
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    symptom = f"{type(exc).__name__}: {' '.join(lines[:4])}"[:400]
    symptom = symptom.replace('"""', "'''").replace("\\", "/")
    text = REGRESSION_TEMPLATE.format(
        origin=origin, symptom=textwrap.fill(symptom, 99),
        source=program.source,
        functions=[(f.name, f.make, f.calls) for f in program.functions])
    path = os.path.join(directory, f"test_regression_{name or program.digest}.py")
    with open(path, "w") as f:
        f.write(text)
    return path

"""The generator's skeleton: programs, one function and its factory, eager changes between calls,
return statements, object paths and bounded expressions."""
import itertools

from .model import (
    FLOAT_KINDS,
    PRELUDE,
    SHAPES,
    Function,
    Obj,
    Program,
    Scope,
    fmt,
    instance,
    reaches,
)


class BaseMixin:
    def __init__(self, ch, *, max_functions=3, max_stmts=10, avoid=()):
        self.ch = ch
        self.avoid = frozenset(avoid)
        self.max_functions = max_functions
        self.max_stmts = max_stmts
        self._names = itertools.count()
        self._k = itertools.count()
        self.classes = []
        self.globals_ = []
        self.sized_classes = []  # classes built with a size (only in factories: ``S(h)``)
        self.diffed = []  # Modules differentiated somewhere (their later attributes stay float)
        self.diffed_classes = set()  # names of classes with a differentiated instance
        self.helpers = []  # module-level helper functions (source lines), called from functions
        self.pool_scope = None  # the factory's objects, while a nested function is generated
        self.factory_helpers = []  # helpers defined in the factory (closing over its objects)

    def fresh(self, prefix):
        return f"{prefix}{next(self._names)}"

    def init(self, shape):
        return f"_v({shape!r}, {next(self._k)})"

    # -- programs ----------------------------------------------------------------------------------
    def program(self):
        lines = [PRELUDE]
        for _ in range(self.ch.integer(0, 3)):
            lines += [""] + self.class_def() + [""]
        if "sized_module" not in self.avoid and self.ch.flag(15):
            lines += [""] + self.sized_class() + [""]
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

    # -- one function and its factory --------------------------------------------------------------
    def function(self):
        fname = self.fresh("f")
        nested = self.ch.flag(50)  # defined inside make_*, so the objects are closure cells
        make = [f"def make_{fname}():"]
        pool = {}  # name in make -> Obj
        rebuild = {}  # name in make -> () -> the expression of another object like it, or None
        pool_lines = []
        for _ in range(self.ch.integer(1, 4)):
            name = self.fresh("o")
            obj, expr, again = self.pool_object(pool)
            pool[name] = obj
            rebuild[name] = again
            pool_lines.append(f"{name} = {expr}")
        # reach one object through a second attribute (weight tying: a Variable of another Module)
        mods = [n for n, o in pool.items() if o.kind == "mod" and not o.cls.sized]
        if mods and self.ch.flag(30):
            m = self.ch.pick(mods)
            cands = [(p, o) for p, o in self.paths(
                         Scope(dict(pool), {}), lambda o: o.kind in ("arr", "dict", "mod", "nnx"))
                     if not o.lojax and not reaches(o, pool[m])]
            if cands:
                other, o = self.ch.pick(cands)
                attr = self.fresh("x")
                pool_lines.append(f"{m}.{attr} = {other}")
                pool[m].attrs[attr] = o
                rebuild[m] = None  # a fresh instance would lack the attribute
        # module globals
        gl = {}
        for name in sorted(pool):
            if self.ch.flag(30):
                g = f"G{name[1:]}"
                self.globals_.append(g)
                gl[g] = pool[name]
                pool_lines.append(f"{g} = {name}")
        statics, static_lines, static_globals = self.static_sources(nested)
        if gl or static_globals:
            make.append(f"    global {', '.join(sorted(gl) + static_globals)}")
        make += ["    " + s for s in static_lines + pool_lines]
        # arguments: objects from the pool (the same one twice = aliasing), then arrays
        params, argv = {}, []
        for _ in range(self.ch.integer(0, 3)):
            name = self.ch.pick(sorted(pool))
            p = f"p{len(params)}"
            params[p] = pool[name]
            argv.append(name)
        lojax = self.lojax_params(params, argv, make, pool, rebuild)
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
        static_params, static_kw, jit_opts = self.static_params(argv, statics)
        objs = dict(params)
        objs.update(gl)
        if nested:
            objs.update(pool)
        scope = Scope(objs, dict(arrs), statics=tuple(statics))
        self.new_objs, self.new_attrs = [], []
        self.factory_helpers = []
        self.pool_scope = Scope(dict(pool), {}) if nested else None
        body = self.block(scope, self.ch.integer(1, self.max_stmts))
        body.append(self.return_stmt(scope))
        positional = [p for p in params if p not in kwonly] + list(arrs) + static_params
        keyword = list(kwonly) + list(static_kw)
        sig = ", ".join(positional + (["*"] + keyword if keyword else []))
        fn_lines = [f"def {fname}({sig}):"] + ["    " + s for s in body]
        if nested:
            for h in self.factory_helpers:
                make += ["    " + s for s in h]
            make += ["    " + s for s in fn_lines]
            out = make
        else:
            out = fn_lines + [""] + make
        if "between_calls" not in self.avoid and self.ch.flag(40):
            between = self.between(pool)
            if between:
                out += ["    def between():"] + ["        " + x for x in between]
                out.append(f"    BETWEEN[{fname!r}] = between")
        if jit_opts:
            out.append(f"    JIT[{fname!r}] = {jit_opts}")
        kw_args = dict(kwonly)
        kw_args.update(static_kw)
        state = list(pool) + lojax
        # another object in place of an argument only where the function reaches it through that
        # argument alone (not also as a global, a closure cell, another argument or an attribute)
        passed = [a for a in argv + list(kw_args.values()) if a in pool]
        alone = {n: again for n, again in rebuild.items()
                 if not nested and passed.count(n) == 1
                 and not any(o is pool[n] for o in gl.values())
                 and not any(reaches(o, pool[n]) for m, o in pool.items() if m != n)}
        alt = self.other_arguments(argv, kw_args, alone, statics)
        if alt is not None:
            alt_lines, alt_args, alt_kw, alt_state = alt
            out += ["    " + s for s in alt_lines]
            out.append(f"    CALLS[{fname!r}] = [(({''.join(a + ', ' for a in alt_args)}), "
                       f"{{{', '.join(f'{k!r}: {v}' for k, v in alt_kw.items())}}})]")
            state += alt_state
        args = "".join(a + ", " for a in argv)
        state = f"({''.join(n + ', ' for n in state)})"
        if kw_args:
            kwargs = "{" + ", ".join(f"{k!r}: {n}" for k, n in kw_args.items()) + "}"
            out.append(f"    return {fname}, ({args}), {kwargs}, {state}")
        else:
            out.append(f"    return {fname}, ({args}), {state}")
        calls = self.ch.integer(2, 3)
        return out, Function(fname, f"make_{fname}", calls)

    def pool_object(self, pool):
        """``(Obj, constructor expression, rebuild)`` of one object of a function's factory;
        ``rebuild()`` gives the expression of another object usable in its place (or None)."""
        what = self.ch.weighted([(5, "arr"), (3, "mod"), (2, "dict"), (1, "ref"), (1, "list"),
                                 (1, "pydict"), (1, "int"),
                                 (1 if "tuples" not in self.avoid else 0, "tuple"),
                                 (1 if "rngs" not in self.avoid else 0, "rngs"),
                                 (1 if "optax" not in self.avoid else 0, "opt")])
        if what == "mod" and self.classes + self.sized_classes:
            cls = self.ch.pick(self.classes + self.sized_classes)
            if cls.sized:
                h = self.ch.integer(2, 4)
                return instance(cls), f"{cls.name}({h})", lambda: f"{cls.name}({h + 1})"
            return instance(cls), f"{cls.name}()", lambda: f"{cls.name}()"
        if what == "dict":
            obj, expr = self.new_dict_obj()
            keys = dict(obj.keys)
            return obj, expr, lambda: "hijaxc.Variable({" + ", ".join(
                f"{k!r}: {self.init(sh)}" for k, sh in keys.items()) + "})"
        if what == "ref":
            shape = self.ch.pick(SHAPES)
            return (Obj("ref", shape), f"hijaxc.Ref({self.init(shape)})",
                    lambda: f"hijaxc.Ref({self.init(shape)})")
        if what == "int":
            e = "hijaxc.Variable(jnp.array(0, jnp.int32))"
            return Obj("int"), e, lambda: "hijaxc.Variable(jnp.array(3, jnp.int32))"
        if what == "pydict" and pool:
            members = {f"m{j}": self.ch.pick(sorted(pool)) for j in range(self.ch.integer(1, 2))}
            obj = Obj("pydict", attrs={k: pool[m] for k, m in members.items()})
            expr = "{" + ", ".join(f"{k!r}: {m}" for k, m in members.items()) + "}"
            return obj, expr, lambda: (
                expr[:-1] + f", 'extra': hijaxc.Variable({self.init((3,))})}}")
        if what == "list" and pool:
            members = [self.ch.pick(sorted(pool)) for _ in range(self.ch.integer(1, 3))]
            obj = Obj("list", items=[pool[m] for m in members])
            expr = f"[{', '.join(members)}]"
            n0 = len(members)
            # one more item, unless the body appends (its items would then sit at other indices)
            return obj, expr, lambda: expr if len(obj.items) > n0 else (
                f"[{', '.join(members)}, hijaxc.Variable({self.init((3,))})]")
        if what == "tuple" and pool:
            return self.new_tuple(pool)
        if what == "rngs":
            return self.new_rngs()
        if what == "opt":
            shape = self.ch.pick(SHAPES)
            e = f"hijaxc.Variable(TX.init({self.init(shape)}))"
            return Obj("opt", shape), e, None
        obj, expr = self.new_arr_obj()
        cls = expr.split("(")[0]
        other = {"hijaxc.Param": "hijaxc.Variable"}.get(cls, "hijaxc.Param")
        ref = ", ref=True" if expr.endswith("ref=True)") else ""
        if obj.kind == "nnx":
            return obj, expr, lambda: f"{cls}({self.init(obj.shape)})"
        return obj, expr, lambda: f"{other}({self.init(obj.shape)}{ref})"

    def other_arguments(self, argv, kw_args, rebuild, statics):
        """Arguments for the later calls (S8: a retrace must be correct): other objects like the
        first ones (another class, another size, one more item, another Rngs), other arrays, other
        static values.  ``(lines, args, kwargs, state)`` or None."""
        if "vary_args" in self.avoid or not self.ch.flag(25):
            return None
        lines, state, made = [], [], {}

        def other(a):
            if a in rebuild:
                if rebuild[a] is None or not self.ch.flag(60):
                    return a
                if a not in made:
                    name = self.fresh("alt")
                    lines.append(f"{name} = {rebuild[a]()}")
                    state.append(name)
                    made[a] = name
                return made[a]
            if a.startswith("_v("):
                shape = a[3:a.rindex(",")]
                return f"_v({shape}, {next(self._k)})" if self.ch.flag(60) else a
            if a.startswith("lo"):
                return a
            if a.lstrip("-").replace(".", "").isdigit():  # a static value
                return repr(type(eval(a))(eval(a) + 1)) if self.ch.flag(70) else a
            return a

        args = [other(a) for a in argv]
        kw = {k: other(v) for k, v in kw_args.items()}
        return lines, args, kw, state

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
                    index = ".value" if o.kind == "nnx" else "[...]"
                    lines.append(f"{p}{index} = {self.init(o.shape)}")
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
                def same(o, a, m=m):
                    return (a in m.attrs and o.kind == m.attrs[a].kind
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
                elif what == "alias" and olds and not self.differentiated(m):
                    a = self.ch.pick(olds)
                    cands = [(q, o)
                             for q, o in self.paths(scope, lambda o, a=a, same=same: same(o, a))
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
                        # the body may create it under a condition that did not hold
                        lines.append(f"if hasattr({p}, {a!r}):")
                        lines.append(f"    del {p}.{a}")
            elif what == "append":  # grow a container, or swap one of its items
                cands = self.paths(scope, lambda o: o.kind in ("list", "pydict"))
                if cands:
                    p, o = self.ch.pick(cands)
                    sh = self.ch.pick(SHAPES)
                    items = (list(enumerate(o.items)) if o.kind == "list" else
                             sorted(o.attrs.items()))
                    i, old = self.ch.pick(items)
                    swap = [(q, x) for q, x in self.paths(
                                scope, lambda x, old=old: x.kind == old.kind
                                and x.kind in ("arr", "nnx", "ref") and x.shape == old.shape)
                            if x is not old]
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
            what = self.ch.weighted([(3, "expr"), (2, "obj"), (1, "new"), (1, "key")])
            keys = self.paths(scope, lambda o: o.kind == "rngs")
            if what == "key" and keys and "rngs" not in self.avoid:
                path, o = self.ch.pick(keys)
                items.append(f"{path}.{self.ch.pick(sorted(o.keys))}()")
            elif what == "obj" and self.paths(scope, lambda o: not o.lojax):
                items.append(self.ch.pick(self.paths(scope, lambda o: not o.lojax))[0])
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
            elif obj.kind in ("pydict", "mdict"):
                for k in sorted(obj.attrs):
                    walk(f"{path}[{k!r}]", obj.attrs[k], depth + 1)
            elif obj.kind in ("list", "mlist") or (obj.kind == "tuple" and not obj.named):
                for i, it in enumerate(obj.items):
                    walk(f"{path}[{i}]", it, depth + 1)
            elif obj.kind == "tuple":
                for a, it in zip("ab", obj.items):
                    walk(f"{path}.{a}", it, depth + 1)

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
            out += [f"jnp.float32({e} * 0.25)" if t == "int" else f"jnp.float32({e})"
                    for e, t in scope.statics]
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
        def a():
            return self.expr(scope, shape, depth + 1)

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
            first = self.expr(scope, (3,), depth + 1)
            second = self.expr(scope, (3,), depth + 1)
            return f"jnp.stack([{first}, {second}])"
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


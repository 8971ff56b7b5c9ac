"""The generator's skeleton: programs, one function and its factory, eager changes between calls,
return statements, object paths and bounded expressions."""
import itertools

from .model import (FLOAT_KINDS, PRELUDE, SHAPES, Function, Obj, Program, Scope, fmt, instance,
                    reaches)


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


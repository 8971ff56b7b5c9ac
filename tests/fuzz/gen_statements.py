"""Statements: writes, dict keys, locals, aliases, counters, method calls, new Variables and
attributes, nested functions and module-level helpers."""
from .model import FLOAT_KINDS, SHAPES, Obj, Scope, instance, reaches


class StatementsMixin:
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
                 (1 if full else 0, "append"), (2 if full else 0, "delattr"),
                 (2 if "layers" not in self.avoid else 0, "layer"),
                 (2 if "rngs" not in self.avoid else 0, "draw"),
                 (2 if scope.statics and scope.depth < 3 else 0, "static"),
                 (1 if full and "train_eval" not in self.avoid else 0, "traineval"),
                 (2 if self.pool_scope is not None and scope.depth == 0 else 0, "fhelper")]
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
        targets = self.paths(scope, lambda o: o.kind == "mod" and o.cls and (
            o.cls.method or o.cls.sized))
        if not targets:
            return None
        path, o = self.ch.pick(targets)
        name = self.fresh("t")
        if o.cls.sized:
            line = f"{name} = {path}({self.expr(scope, (3,))})"
            scope.arrs[name] = (3,)
        elif o.cls.score and self.ch.flag(50):
            call = self.ch.pick([f"{path}.score", path])
            line = f"{name} = {call}({self.expr(scope, (3,))})"
            scope.arrs[name] = ()
        else:
            line = f"{name} = {path}.{o.cls.method}({self.expr(scope, (3,))})"
            scope.arrs[name] = (3,)
        return [line]

    def st_layer(self, scope):
        """A flax layer called (BatchNorm statistics, Dropout's Rngs)."""
        targets = self.paths(scope, lambda o: o.kind == "layer")
        if not targets:
            return None
        path, o = self.ch.pick(targets)
        line = self.layer_call(path, o, self.expr(scope, (3,)))
        name = self.fresh("t")
        scope.arrs[name] = (3,)
        return [f"{name} = {line}"]

    def st_traineval(self, scope):
        """``model.eval()`` / ``model.train()`` on a Module (its layers' modes change)."""
        targets = self.paths(scope, lambda o: o.kind in ("mod", "layer") and not (
            o.kind == "mod" and o.cls and o.cls.sized))
        if not targets:
            return None
        return [f"{self.ch.pick(targets)[0]}.{self.ch.pick(['eval', 'train'])}()"]

    def st_newvar(self, scope):
        name = self.fresh("n")
        if self.classes and self.ch.flag(20):  # a Module created inside
            cls = self.ch.pick(self.classes)
            obj, expr = instance(cls), f"{cls.name}()"
        elif self.ch.flag(25):
            obj = Obj("dict", keys={"a": (3,)})
            expr = f"hijaxc.Variable({{'a': {self.expr(scope, (3,))}}})"
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
        if self.differentiated(m) and what in ("existing", "module"):
            what = "var"  # a differentiated Module keeps float leaves and no tied weights
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
            cands = [(p, o)
                     for p, o in self.paths(scope, lambda o: o.kind in ("arr", "dict", "mod"))
                     if not reaches(o, m) and not o.lojax]
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
                 for p, o in self.paths(scope, lambda o, m=m: o is m)]
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
                    if "helper_tuples" in self.avoid and self._has_tuple(scope.objs[g]):
                        continue
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


    def _has_tuple(self, obj):
        return any(o.kind == "tuple" for _, o in self.paths(Scope({"_": obj}, {}), lambda o: True))

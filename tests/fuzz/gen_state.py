"""State in more places: static configuration (closure, global, Module attribute and static
arguments, positional or by keyword), lojax Variables passed by value, tuples and namedtuples of
objects, ``nnx.Rngs`` streams, and helpers defined in the factory (outside the compiled function,
closing over its objects)."""
from .model import FLOAT_KINDS, SHAPES, Obj, Scope


class StateMixin:
    # -- static configuration ----------------------------------------------------------------------
    def static_value(self):
        if self.ch.flag(70):
            return str(self.ch.integer(1, 3)), "int"
        return repr(self.ch.pick([0.5, 0.75, -0.25])), "float"

    def static_sources(self, nested):
        """Static Python ints/floats in a closure cell or a module global: ``(statics, lines of
        the factory, global names)``."""
        statics, lines, globals_ = [], [], []
        if "static" in self.avoid or not self.ch.flag(35):
            return statics, lines, globals_
        for _ in range(self.ch.integer(1, 2)):
            value, kind = self.static_value()
            if nested and self.ch.flag(50):
                name = self.fresh("c")
            else:
                name = self.fresh("S")
                globals_.append(name)
            lines.append(f"{name} = {value}")
            statics.append((name, kind))
        return statics, lines, globals_

    def static_params(self, argv, statics):
        """A static argument: ``static_argnums`` (positional), or ``static_argnames`` passed
        positionally or by keyword.
        ``(positional params, {keyword param: value}, jit options)``."""
        if "static" in self.avoid or not self.ch.flag(30):
            return [], {}, None
        name = self.fresh("s")
        value, kind = self.static_value()
        statics.append((name, kind))
        form = self.ch.weighted([(2, "argnums"), (1, "names_positional"),
                                 (0 if "static_kw" in self.avoid else 2, "keyword")])
        if "static_kw" in self.avoid:
            form = "argnums"
        if form == "keyword":
            return [], {name: value}, {"static_argnames": (name,)}
        index = len(argv)
        argv.append(value)
        if form == "argnums":
            return [name], {}, {"static_argnums": (index,)}
        return [name], {}, {"static_argnames": (name,)}

    def st_static(self, scope):
        """``for i in range(n)`` / ``if n > 1`` on a static value."""
        cands = list(scope.statics) + [(p, "int") for p, _ in self.paths(
            scope, lambda o: o.kind == "static")]
        if not cands:
            return None
        e, kind = self.ch.pick(cands)
        inner = scope.child(values_only=True)
        if kind == "int" and self.ch.flag(50):
            i = self.fresh("i")
            inner.statics = inner.statics + ((i, "int"),)
            body = self.block(inner, self.ch.integer(1, 2))
            return [f"for {i} in range({e}):"] + ["    " + s for s in body]
        test = f"{e} > 1" if kind == "int" else f"{e} > 0.6"
        yes = self.block(inner, self.ch.integer(1, 2))
        no = self.block(scope.child(values_only=True), self.ch.integer(1, 2))
        return ([f"if {test}:"] + ["    " + s for s in yes] + ["else:"] + ["    " + s for s in no])

    # -- lojax Variables ---------------------------------------------------------------------------
    def lojax_params(self, params, argv, make, pool, rebuild):
        """A lojax (``hijax=False``) Variable argument: passed by value (S2), the caller's copy
        stays as it was.  Returns the factory names to compare (state)."""
        if "lojax" in self.avoid or not self.ch.flag(20):
            return []
        name, shape = self.fresh("lo"), self.ch.pick(SHAPES)
        make.append(f"    {name} = hijaxc.Variable({self.init(shape)}, hijax=False)")
        params[f"l{len(params)}"] = Obj("arr", shape, lojax=True)
        argv.append(name)
        return [name]

    # -- containers and Rngs -----------------------------------------------------------------------
    def new_tuple(self, pool):
        members = [self.ch.pick(sorted(pool)) for _ in range(2)]
        named = self.ch.flag(50)
        obj = Obj("tuple", items=[pool[m] for m in members], named=named)
        expr = f"Pair({members[0]}, {members[1]})" if named else f"({members[0]}, {members[1]})"
        return obj, expr, None

    def new_rngs(self):
        k = next(self._k)
        if self.ch.flag(50):
            return (Obj("rngs", keys={"default": None}), f"nnx.Rngs({k})",
                    lambda: f"nnx.Rngs({k + 100})")
        return (Obj("rngs", keys={"params": None, "dropout": None}),
                f"nnx.Rngs(params={k}, dropout={k + 1})",
                lambda: f"nnx.Rngs(params={k + 100}, dropout={k + 101})")

    def draw(self, path, o, shape):
        stream = self.ch.pick(sorted(o.keys))
        key = f"{path}()" if stream == "default" and self.ch.flag(50) else f"{path}.{stream}()"
        if self.ch.flag(50):
            return f"0.25 * jax.random.uniform({key}, {shape!r}, minval=-1.0)"
        return f"0.25 * jnp.tanh(jax.random.normal({key}, {shape!r}))"

    def st_draw(self, scope):
        """A key drawn from an ``nnx.Rngs`` stream (its count changes), added to a Variable."""
        rngs = self.paths(scope, lambda o: o.kind == "rngs")
        if not rngs:
            return None
        path, o = self.ch.pick(rngs)
        targets = self.paths(scope, lambda o: o.kind in FLOAT_KINDS)
        if not targets or self.ch.flag(25):
            name = self.fresh("t")
            scope.arrs[name] = (3,)
            return [f"{name} = {self.draw(path, o, (3,))}"]
        tp, t = self.ch.pick(targets)
        acc = ".value" if t.kind == "nnx" else "[...]"
        return [f"{tp}{acc} += {self.draw(path, o, t.shape)}"]

    # -- helpers defined in the factory ------------------------------------------------------------
    def st_fhelper(self, scope):
        """A function defined in the factory, outside the compiled function, closing over the
        factory's objects (tuples and namedtuples included), called from the compiled function."""
        name, z = self.fresh("fh"), self.fresh("z")
        objs = {n: o for n, o in self.pool_scope.objs.items()
                if "helper_tuples" not in self.avoid or not self._has_tuple(o)}
        inner = Scope(objs, {z: (3,)}, values_only=True, depth=1,
                      statics=tuple(s for s in scope.statics if s[0][:1] in ("S", "c")))
        arg = self.expr(scope, (3,))
        body = self.block(inner, self.ch.integer(1, 3))
        body.append(f"return {self.expr(inner, (3,))}")
        self.factory_helpers.append([f"def {name}({z}):"] + ["    " + s for s in body])
        out = self.fresh("t")
        scope.arrs[out] = (3,)
        return [f"{out} = {name}({arg})"]

"""lax control flow and transforms whose bodies mutate captured (or received) state."""
from .model import FLOAT_KINDS, SHAPES, THRESHOLDS, fmt


class ControlMixin:
    # -- lax control flow: bodies mutate captured (or received) Variables, values only ----------
    def body_scope(self, scope):
        return scope.child(values_only=True, depth=scope.depth + 1)

    def st_control(self, scope):
        # JAX cannot reverse-differentiate a while_loop (the eager reference, a Python loop, can)
        n_while = 0 if scope.differentiated else 2
        kind = self.ch.weighted([(3, "fori"), (3, "cond"), (2, "scan"), (2, "switch"),
                                 (n_while, "while"),
                                 (2, "wrapped"), (2, "vmap"),
                                 (0 if "grad" in self.avoid else 4, "grad")])
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
        lines = [f"{out} = jax.vmap(lambda {r}: {body.format(self.expr(inner, (3,)))})({xs})"]
        if "vmap_write" not in self.avoid and self.ch.flag(50):  # the output written to state
            targets = self.paths(scope, lambda o: o.kind in ("arr", "ref") and o.shape in (
                (2, 3), (3,)))
            if targets:
                path, o = self.ch.pick(targets)
                lines.append(f"{path}[...] = {out}" if o.shape == (2, 3) else
                             f"{path}[...] = 0.5 * ({path}[...] + {out}.mean(0))")
        return lines

    def cf_wrapped(self, scope):
        """A nested function under jax.jit / hijaxc.jit / jax.checkpoint (decorator or call)."""
        name, z = self.fresh("g"), self.fresh("z")
        inner = self.body_scope(scope)
        # (a lojax Variable captured by an inner jit is passed by value there: its writes are
        # dropped, which the eager reference, running the inner function as is, cannot know)
        inner.objs = {k: o for k, o in inner.objs.items() if not o.lojax}
        inner.arrs[z] = (3,)
        stmts = self.block(inner, self.ch.integer(1, 3))
        stmts.append(f"return {self.expr(inner, (3,))}")
        wraps = ["jax.jit", "jax.checkpoint"]
        wraps += [] if "nested_hijaxc_jit" in self.avoid else ["hijaxc.jit"]
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
        n = self.ch.integer(1, 3)
        init = self.expr(scope, s)
        lines.append(f"{out} = jax.lax.fori_loop(0, {n}, {body}, {init})")
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
        ys_out = outs if with_ys else "_"
        lines.append(f"{out}, {ys_out} = jax.lax.scan({body}, {self.expr(scope, s)}, {xs})")
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
        limit = self.ch.integer(1, 3)
        if self.ch.flag(50):  # a data-dependent exit (still at most ``limit`` iterations)
            test = (f"jnp.logical_and({c}[0] < {limit}, "
                    f"({c}[1]).mean() > {fmt(self.ch.pick(THRESHOLDS))} - 1.0)")
        else:
            test = f"{c}[0] < {limit}"
        lines = [f"def {cond}({c}):", f"    return {test}"]
        lines += [f"def {body}({c}):"] + ["    " + x for x in stmts]
        lines.append(f"_, {out} = jax.lax.while_loop({cond}, {body}, (0, {self.expr(scope, s)}))")
        scope.arrs[out] = s
        return lines


#: Generator features that hit a known, open hijaxc bug (feature -> the regression test that pins
#: it).  The fuzz runs avoid them so that they keep finding *new* bugs; delete an entry once its

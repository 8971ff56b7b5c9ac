"""``jax.grad`` / ``jax.value_and_grad`` (``has_aux``, ``argnums`` 0, 1 or (0, 1)) of losses that
also write state they do not differentiate (running statistics, counters, Rngs draws, method calls
on Modules passed as non-differentiated arguments), ``jax.grad(model)`` / ``jax.grad(model.score)``,
and the gradient applied by hand or by an optax optimizer whose state lives in a Variable.  The
differentiated arguments are arrays (often a Variable's value) or Modules given as
``hijaxc.vars_as(m, mutable=False)``; the loss never writes them."""
import jax
import jax.numpy as jnp
from flax import nnx

from .model import SHAPES, Scope, reaches


def _modules_are_pytrees():
    """flax >= 0.11: ``jax.grad`` can take a Module (0.10.4's Modules are not pytrees)."""
    class _M(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.zeros(1))

    m = _M()
    return jax.tree.leaves(m)[0] is not m


#: whether a Module can be a differentiated argument here (else that option is not generated)
MODULES_ARE_PYTREES = _modules_are_pytrees()


def _float_module(o, seen=None):
    """Whether every leaf of Module ``o`` is a float hijaxc Variable (differentiable as a whole)."""
    seen = set() if seen is None else seen
    if id(o) in seen:
        return True
    seen.add(id(o))
    if o.kind == "mod":
        return bool(o.attrs) and not o.cls.sized and all(
            _float_module(c, seen) for c in o.attrs.values())
    return o.kind in ("arr", "dict") and not o.lojax


def _tied(o):
    """Whether Module ``o`` reaches one Variable through two attributes (weight tying)."""
    seen, stack = [], [o]
    while stack:
        x = stack.pop()
        for c in (x.attrs or {}).values() if x.kind == "mod" else ():
            if c.kind == "mod":
                stack.append(c)
            elif any(c is s for s in seen):
                return True
            else:
                seen.append(c)
    return False


class GradMixin:
    def mark_differentiated(self, o):
        """Remember that Module ``o`` (and what it reaches) is differentiated: attributes added to
        it later (they persist into later calls) must keep it differentiable and untied."""
        self.diffed.append(o)
        for _, x in self.paths(Scope({"_": o}, {}), lambda x: x.kind == "mod"):
            if x.cls is not None:
                self.diffed_classes.add(x.cls.name)

    def differentiated(self, m):
        return (m.cls is not None and m.cls.name in self.diffed_classes) or any(
            reaches(d, m) for d in self.diffed)

    def cf_grad(self, scope):
        if "grad_callable" not in self.avoid and self.ch.flag(20):
            out = self.grad_of_callable(scope)
            if out:
                return out
        transform = self.ch.pick(["jax.grad", "jax.value_and_grad"])
        has_aux = "grad_aux" not in self.avoid and self.ch.flag(40)
        argnums = self.ch.weighted([(3, 0), (2, 1), (1, (0, 1))])
        diff = (0, 1) if argnums == (0, 1) else (argnums,)
        loss, inner = self.fresh("loss"), self.body_scope(scope).child(differentiated=True)
        params, operands, reads, diffs = [], [], [], []  # diffs: (param, kind, target path, shape)
        for k in range(2 if argnums != 0 or self.ch.flag(40) else 1):
            q = self.fresh("w")
            params.append(q)
            if k in diff:
                mods = [(p, o) for p, o in self.paths(scope, lambda o: o.kind == "mod")
                        if _float_module(o) and ("grad_tied" not in self.avoid or not _tied(o))]
                if (mods and MODULES_ARE_PYTREES and "grad_module" not in self.avoid
                        and self.ch.flag(30)):
                    path, o = self.ch.pick(mods)
                    self.mark_differentiated(o)
                    operands.append(f"hijaxc.vars_as({path}, mutable=False)")
                    leaves = [(p[1:], x) for p, x in self.paths(Scope({"_": o}, {}),
                                                                lambda x: x.kind == "arr")]
                    for sub, x in leaves[:3]:
                        local = self.fresh("r")
                        reads.append(f"{local} = {q}{sub}[...]")
                        inner.arrs[local] = x.shape
                    diffs.append((q, "mod", path, [(s, x.shape) for s, x in leaves[:3]]))
                    continue
                targets = self.paths(scope, lambda o: o.kind in ("arr", "nnx") and not o.lojax)
                s = self.ch.pick(SHAPES)
                if targets and self.ch.flag(60):
                    path, o = self.ch.pick(targets)
                    s = o.shape
                    operands.append(f"{path}.value" if o.kind == "nnx" else f"{path}[...]")
                    diffs.append((q, "var", operands[-1], s))
                else:
                    operands.append(self.expr(scope, s))
                    diffs.append((q, "arr", None, s))
                inner.arrs[q] = s
            else:  # not differentiated: a value, or an object the loss writes (a Module, say)
                objs = self.paths(scope, lambda o: o.kind in ("mod", "arr", "dict", "rngs", "int"))
                if objs and "grad_state_arg" not in self.avoid and self.ch.flag(60):
                    path, o = self.ch.pick(objs)
                    operands.append(path)
                    inner.objs[q] = o
                else:
                    operands.append(self.expr(scope, (3,)))
                    inner.arrs[q] = (3,)
        body = reads + self.block(inner, self.ch.integer(1, 3))
        terms = []
        for q, kind, _, s in diffs:
            if kind == "mod":
                terms += [f"({self.expr(inner, sh)} * jnp.tanh({q}{sub}[...])).mean()"
                          for sub, sh in s] or ["0.0"]
            else:
                terms.append(f"({self.expr(inner, s)} * jnp.tanh({q})).mean()")
        value = " + ".join(terms)
        aux_shape = self.ch.pick(SHAPES)
        body.append(f"return {value}, {self.expr(inner, aux_shape)}" if has_aux else
                    f"return {value}")
        lines = [f"def {loss}({', '.join(params)}):"] + ["    " + s for s in body]
        opts = []
        if argnums != 0 or self.ch.flag(20):
            opts.append(f"argnums={argnums!r}")
        if has_aux:
            opts.append("has_aux=True")
        call = f"{transform}({', '.join([loss] + opts)})({', '.join(operands)})"
        g, v, aux = self.fresh("g"), self.fresh("t"), self.fresh("t")
        if transform == "jax.grad":
            lines.append(f"{g}, {aux} = {call}" if has_aux else f"{g} = {call}")
        else:
            lines.append(f"({v}, {aux}), {g} = {call}" if has_aux else f"{v}, {g} = {call}")
            scope.arrs[v] = ()
        if has_aux:
            scope.arrs[aux] = aux_shape
        grads = [f"{g}[{i}]" for i in range(len(diffs))] if isinstance(argnums, tuple) else [g]
        for gi, (_q, kind, path, s) in zip(grads, diffs):
            lines += self.apply_grad(scope, gi, kind, path, s)
        return lines

    def apply_grad(self, scope, g, kind, path, s):
        """The gradient ``g`` applied: by hand (``w[...] -= 0.1 * g``), by an optax optimizer whose
        state is a Variable, or kept as a local array."""
        if kind == "mod":
            return [f"{path}{sub}[...] -= 0.1 * {g}{sub}[...]" for sub, _ in s]
        if kind == "var":
            opts = self.paths(scope, lambda o: o.kind == "opt" and o.shape == s)
            target = path  # the Variable's value: ``v[...]`` or ``v.value``
            if opts and "optax" not in self.avoid and self.ch.flag(60):
                opt = self.ch.pick(opts)[0]
                upd, st = self.fresh("upd"), self.fresh("st")
                if self.ch.flag(50):
                    update = [f"{upd}, {opt}[...] = TX.update({g}, {opt}[...], {target})"]
                else:
                    update = [f"{upd}, {st} = TX.update({g}, {opt}[...], {target})",
                              f"{opt}[...] = {st}"]
                return update + [f"{target} = optax.apply_updates({target}, {upd})"]
            return [f"{target} -= 0.1 * {g}"]
        name = self.fresh("t")
        scope.arrs[name] = s
        return [f"{name} = 0.5 * jnp.tanh({g})"]

    def grad_of_callable(self, scope):
        """``jax.grad(model)`` / ``jax.grad(model.score)`` (methods that call each other and
        write the Module's own state, once, with the primal values)."""
        mods = self.paths(scope, lambda o: o.kind == "mod" and o.cls and o.cls.score)
        if not mods:
            return None
        path, _ = self.ch.pick(mods)
        fun = self.ch.pick([path, f"{path}.score"])
        g, arg = self.fresh("g"), self.expr(scope, (3,))
        if self.ch.flag(50):
            v = self.fresh("t")
            scope.arrs[v], scope.arrs[g] = (), (3,)
            return [f"{v}, {g} = jax.value_and_grad({fun})({arg})"]
        scope.arrs[g] = (3,)
        return [f"{g} = jax.grad({fun})({arg})"]

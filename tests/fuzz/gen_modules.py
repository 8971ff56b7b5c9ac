"""Module classes: attributes, sub-Modules (attributes, nnx.List / nnx.Dict), aliases, flax layers
(Linear, BatchNorm, Dropout), static int attributes, methods that call each other, and Modules of
one class built with different sizes."""
from .model import SHAPES, ClassSpec, Obj, Scope, instance


class ModulesMixin:
    # -- classes -----------------------------------------------------------------------------------
    def class_def(self):
        name = f"M{len(self.classes)}"
        template = Obj("mod", cls=None, attrs={})
        init = []
        for j in range(self.ch.integer(1, 4)):
            attr = f"{'abcdefgh'[j]}"
            what = self.ch.weighted([(6, "var"), (2, "sub"), (2, "alias"), (2, "dict"), (1, "int"),
                                     (2 if "layers" not in self.avoid else 0, "layer"),
                                     (1 if "containers" not in self.avoid else 0, "container"),
                                     (1 if "static" not in self.avoid else 0, "static")])
            if what == "layer":
                obj, expr = self.new_layer()
                init.append(f"self.{attr} = {expr}")
                template.attrs[attr] = obj
                continue
            if what == "static":
                init.append(f"self.{attr} = {self.ch.integer(1, 3)}")
                template.attrs[attr] = Obj("static")
                continue
            subs = self.classes
            if what == "container" and subs:
                items = [self.ch.pick(subs) for _ in range(self.ch.integer(1, 2))]
                if self.ch.flag(50):
                    init.append(f"self.{attr} = LIST([{', '.join(c.name + '()' for c in items)}])")
                    template.attrs[attr] = Obj("mlist", items=[instance(c) for c in items])
                else:
                    body = ", ".join(f"'s{i}': {c.name}()" for i, c in enumerate(items))
                    init.append(f"self.{attr} = DICT({{{body}}})")
                    template.attrs[attr] = Obj(
                        "mdict", attrs={f"s{i}": instance(c) for i, c in enumerate(items)})
                continue
            if what == "sub" and subs:
                sub = self.ch.pick(subs)
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
            # methods may run under jax.grad (grad(model.score)): no while_loop in them
            scope = Scope({"self": instance(spec)}, {"y": (3,)}, values_only=True, depth=1,
                          no_control="lax_in_method" in self.avoid, differentiated=True)
            body = self.block(scope, self.ch.integer(1, 3))
            ret = self.expr(scope, (3,))
            lines += ["", "    def bump(self, y):"]
            lines += ["        " + s for s in body + [f"return {ret}"]]
            spec.method = "bump"
            if self.ch.flag(50):  # methods calling each other; the Module as a callable
                lines += ["", "    def score(self, y):",
                          "        return (self.bump(y) * jnp.tanh(y)).mean()",
                          "", "    def __call__(self, y):", "        return self.score(y)"]
                spec.score = True
        spec.lines = lines
        self.classes.append(spec)
        return lines

    def new_arr_obj(self, allow_ref=True):
        shape = self.ch.pick(SHAPES)
        if self.ch.flag(20):  # flax's own Variable: read and written through .value only
            cls = self.ch.pick(["nnx.Param", "nnx.Variable", "nnx.BatchStat"])
            return Obj("nnx", shape), f"{cls}({self.init(shape)})"
        cls = self.ch.weighted(
            [(3, "hijaxc.Variable"), (2, "hijaxc.Param"), (1, "hijaxc.BatchStat")])
        extra = ", ref=True" if allow_ref and self.ch.flag(15) else ""
        return Obj("arr", shape), f"{cls}({self.init(shape)}{extra})"

    def new_dict_obj(self):
        keys = {}
        for j in range(self.ch.integer(1, 2)):
            keys["ab"[j]] = self.ch.pick(SHAPES)
        body = ", ".join(f"{k!r}: {self.init(s)}" for k, s in keys.items())
        return Obj("dict", keys=keys), f"hijaxc.Variable({{{body}}})"


    def new_layer(self):
        """A flax layer as a Module attribute: ``Linear(3, 3)``, ``BatchNorm(3)`` (its statistics
        update in train mode) or ``Dropout(0.5)`` (draws from its own Rngs in train mode)."""
        sub = self.ch.pick(["linear", "bn", "drop"])
        k = next(self._k)
        if sub == "linear":
            return Obj("layer", sub=sub), f"nnx.Linear(3, 3, rngs=nnx.Rngs({k}))"
        if sub == "bn":
            return Obj("layer", sub=sub), f"nnx.BatchNorm(3, momentum=0.8, rngs=nnx.Rngs({k}))"
        return Obj("layer", sub=sub), f"nnx.Dropout(0.5, rngs=nnx.Rngs({k}))"

    def layer_call(self, path, o, arg):
        if o.sub == "linear":
            return f"jnp.tanh({path}({arg}))"
        if o.sub == "bn":
            return f"{path}(jnp.stack([{arg}, {arg} + 1.0])).mean(0)"
        return f"0.5 * {path}({arg})"

    def sized_class(self):
        """A Module class built with a hidden size (``S(h)``): Modules of one class, other shapes.
        Opaque to the generator: only called, ``m(y)`` (it writes a running statistic and a
        counter)."""
        name = f"Sized{len(self.classes)}"
        spec = ClassSpec(name, [], Obj("mod", attrs={}), sized=True)
        spec.template.cls = spec
        spec.lines = [
            f"class {name}(nnx.Module):",
            "    def __init__(self, h):",
            "        self.w1 = hijaxc.Param(jnp.linspace(-0.5, 0.5, 3 * h).reshape(3, h))",
            "        self.w2 = hijaxc.Param(jnp.linspace(0.5, -0.5, 3 * h).reshape(h, 3))",
            "        self.stat = hijaxc.BatchStat(jnp.zeros(h))",
            "        self.calls = hijaxc.Variable(jnp.array(0, jnp.int32))",
            "",
            "    def __call__(self, y):",
            "        h = jnp.tanh(y @ self.w1[...])",
            "        self.stat[...] = 0.9 * self.stat[...] + 0.1 * h",
            "        self.calls[...] += 1",
            "        return jnp.tanh(h @ self.w2[...])",
        ]
        self.sized_classes.append(spec)
        return spec.lines

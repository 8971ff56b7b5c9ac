"""Module classes: attributes, sub-Modules, aliases, methods."""
from .model import SHAPES, ClassSpec, Obj, Scope, instance


class ModulesMixin:
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


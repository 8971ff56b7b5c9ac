"""The generator's vocabulary: choosers (every random decision), the abstract model of the objects a
generated program holds, and the program's prelude."""
import dataclasses
import hashlib
import random


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
    (a Module instance), ``list`` (a Python list of objects), ``pydict`` (a Python dict of objects),
    ``tuple`` (a tuple, or a ``Pair`` namedtuple if ``named``), ``mlist`` / ``mdict`` (``nnx.List``
    / ``nnx.Dict`` of sub-Modules), ``layer`` (a flax layer: ``sub`` is linear / bn / drop),
    ``rngs`` (``nnx.Rngs``, streams in ``keys``), ``opt`` (a Variable holding an optax state for
    a parameter of ``shape``), ``static`` (a Python int)."""
    kind: str
    shape: tuple = ()
    keys: dict = None  # dict: key -> shape; rngs: stream names
    cls: object = None  # mod: ClassSpec
    attrs: dict = None  # mod / pydict / mdict: attribute -> Obj
    items: list = None  # list / tuple / mlist: [Obj]
    sub: str = None  # layer: linear / bn / drop
    named: bool = False  # tuple: a namedtuple (fields a, b)
    lojax: bool = False  # arr: a lojax (hijax=False) Variable (passed by value)


@dataclasses.dataclass(eq=False)
class ClassSpec:
    name: str
    lines: list  # source of the class
    template: Obj  # abstract instance (structure every instance starts with)
    method: str = None  # name of a values-only method taking one (3,) array, or None
    score: bool = False  # has ``score(y)`` (a scalar, calling ``bump``) and ``__call__`` = score
    sized: bool = False  # opaque Module built with a hidden size: only ``m(y)`` is used


@dataclasses.dataclass
class Scope:
    objs: dict  # name -> Obj
    arrs: dict  # name -> shape (float32 arrays)
    ints: tuple = ()  # names of int scalars (loop indices)
    values_only: bool = False  # inside a lax body / method: no structural changes, no new objects
    depth: int = 0  # nesting of function definitions
    no_control: bool = False  # no lax control flow here (avoid "lax_in_method")
    statics: tuple = ()  # (expression, "int" | "float") static Python values in reach
    differentiated: bool = False  # inside a loss under jax.grad: no while_loop (not reversible)

    def child(self, **kw):
        return dataclasses.replace(self, objs=dict(self.objs), arrs=dict(self.arrs), **kw)


def _copy_instance(obj, memo):
    if id(obj) in memo:
        return memo[id(obj)]
    new = dataclasses.replace(obj)
    memo[id(obj)] = new
    if obj.kind == "dict":
        new.keys = dict(obj.keys)
    if obj.kind in ("mod", "mdict"):
        new.attrs = {k: _copy_instance(v, memo) for k, v in obj.attrs.items()}
    if obj.kind in ("list", "mlist", "tuple"):
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
    children = (list(a.attrs.values()) if a.kind in ("mod", "pydict", "mdict") else
                a.items if a.kind in ("list", "tuple", "mlist") else [])
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
import collections

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import hijaxc

BETWEEN = {}  # function name -> eager changes made before every call but the first
CALLS = {}  # function name -> [(args, kwargs)] of the calls after the first (cycled)
JIT = {}  # function name -> hijaxc.jit options (static_argnums / static_argnames)
TX = optax.sgd(0.1, momentum=0.9)  # the optimizer of optax states held in Variables
Pair = collections.namedtuple("Pair", "a b")
LIST = getattr(nnx, "List", list)  # flax >= 0.12 wants nnx.List / nnx.Dict for Module containers
DICT = getattr(nnx, "Dict", dict)
EPS = 0.0  # relative perturbation of every initial value (the oracle's stability check)


def _v(shape, k):  # a distinct small float32 array for object number k
    n = 1
    for d in shape:
        n *= d
    return (jnp.arange(n, dtype=jnp.float32).reshape(shape) * 0.25 + (0.1 * k - 0.4)) * (1 + EPS)
'''


"""Regression found by benchmarks/fuzz.py (nested_hijaxc_jit, minimized by hand): hijaxc.jit must
match eager execution.

SyntaxError: duplicate argument '__hx' in function definition (<hijaxc generated:
__hx_factory.<locals>.f0.<locals>.g2 637535cb>, line 3)
"""
from fuzz import Function, Program, check_program

SOURCE = """\
import jax
import jax.numpy as jnp
from flax import nnx

import hijaxc


def _v(shape, k):  # a distinct small float32 array for object number k
    n = 1
    for d in shape:
        n *= d
    return jnp.arange(n, dtype=jnp.float32).reshape(shape) * 0.25 + (0.1 * k - 0.4)


def make_f0():
    o1 = hijaxc.Variable(_v((3,), 1))
    def f0(x):
        def g2(z3):
            o1[...] += z3
            return z3
        return hijaxc.jit(g2)(x)
    return f0, (_v((3,), 2),), (o1,)


def f4(p0, x):
    @hijaxc.jit
    def g5(z6):
        p0[...] *= 0.5
        return z6
    return g5(x)

def make_f4():
    o7 = hijaxc.Variable(_v((3,), 3))
    return f4, (o7, _v((3,), 4)), (o7,)
"""

FUNCTIONS = [('f0', 'make_f0', 2), ('f4', 'make_f4', 2)]


def test_regression():
    check_program(Program(SOURCE, [Function(*f) for f in FUNCTIONS]))

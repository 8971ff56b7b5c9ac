"""Regression found by benchmarks/fuzz.py (lax_in_method, minimized by hand): hijaxc.jit must
match eager execution.

Fixed: calls from compiled code into user functions are converted (runtime/callees.py).  It was:

TracerLeakError: Param args[0].a (last written at /tmp/hijaxc-fuzz-
ee2qtiyl/hxfuzz_ef6ddd7072_1.py:21) holds a value traced inside a JAX transform (scan / cond /
fori_loop / grad / vmap ...) that hijaxc did not rewrite, so its update cannot leave that
transform.  Call the transform directly in the hijaxc.jit function (hijaxc threads state through
it), or pass and return the state explicitly in the
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


class M0(nnx.Module):
    def __init__(self):
        self.a = hijaxc.Param(_v((3,), 0))

    def bump(self, y):
        def body1(i2, c3):
            self.a[...] += 0.25 * y
            return c3
        return jax.lax.fori_loop(0, 2, body1, y)


def f4(p0, x):
    return p0.bump(x)

def make_f4():
    o5 = M0()
    return f4, (o5, _v((3,), 1)), (o5,)
"""

FUNCTIONS = [('f4', 'make_f4', 2)]


def test_regression():
    check_program(Program(SOURCE, [Function(*f) for f in FUNCTIONS]))

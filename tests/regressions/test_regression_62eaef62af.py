"""Regression found by benchmarks/fuzz.py (seed 7000021): hijaxc.jit must match eager execution.

A helper writes its own global Variable (the outer step's argument too) from a hijaxc.jit nested in
a compiled function: the nested step threaded the caller's original object instead of the outer
copy, and the write was lost.  Fixed: nested steps map state through the enclosing steps' copies
and the outermost step that does not own it learns it (context.view).

AssertionError: call 1: Not equal to tolerance rtol=0.0001, atol=0.0001 at args/0/value Mismatched
elements: 3 / 3 (100%)
"""
from fuzz import Function, Program, check_program

SOURCE = """\
import jax
import jax.numpy as jnp
from flax import nnx
import hijaxc
EPS = 0.0

def _v(shape, k):
    n = 1
    for d in shape:
        n *= d
    return (jnp.arange(n, dtype=jnp.float32).reshape(shape) * 0.25 + (0.1 * k - 0.4)) * (1 + EPS)

def hh36(q37, z38):
    G17[...] = jnp.tanh(0.5 * jnp.full((3,), 0.5, jnp.float32))

def f16(p0, p1, p2, x, xs, *, k3):

    def br31(z33):

        @hijaxc.jit
        def g34(z35):
            t41 = hh36(k3, k3.get_value())
        t42 = g34(k3[...])
        return p0[2]

    def br32(z33):
        return p0[0]
    t68 = jax.lax.cond(xs.mean() > 0.0123, br31, br32, jnp.full((3,), 1.5, jnp.float32) * 0.5)

def make_f16():
    global G17
    o17 = hijaxc.BatchStat(_v((3,), 2))
    G17 = o17
    return (f16, (o17, o17, o17, _v((3,), 3), _v((2, 3), 4)), {'k3': o17}, (o17,))
"""

FUNCTIONS = [('f16', 'make_f16', 2)]


def test_regression():
    check_program(Program(SOURCE, [Function(*f) for f in FUNCTIONS]))

"""Regression found by benchmarks/fuzz.py (seed 20003888): hijaxc.jit must match eager execution.

A hijaxc.jit nested two deep (inside a converted helper, inside a nested hijaxc.jit) names a module
global the outer steps do not thread: it threaded the caller's original Variable and wrote a tracer
into it.  Fixed: a step called while another traces resolves its own free names through the
enclosing steps (context.view), and the outermost one learns the original and traces again.

TracerArrayConversionError: The numpy.ndarray conversion method __array__() was called on traced
array with shape int32[] The error occurred while tracing the function g23__pure_step at <hijaxc
generated: __hx_factory.<locals>.f8.<locals>.g23 ed93a0fd>:7 for jit. See
https://docs.jax.dev/en/latest/errors.html#jax.errors.TracerArrayConversionError
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

def hh25(q26, q27, z28):

    @hijaxc.jit
    def g29(z30):
        G12[...] += 1
    t32 = g29(z28)

def make_f8():
    global G12, G9
    o9 = hijaxc.Variable(_v((), 5), ref=True)
    o10 = hijaxc.Param(_v((), 6))
    o11 = hijaxc.Variable(_v((), 7))
    o12 = hijaxc.Variable(jnp.array(0, jnp.int32))
    G12 = o12

    def f8(p0, p1, x):

        def g23(z24):
            t33 = hh25(o10, o9, jnp.tanh(z24 * 0.5))
        t34 = hijaxc.jit(g23)(0.5 * jnp.sin(x))
    return (f8, (o11, o10, _v((3,), 8)), (o9, o10, o11, o12))
"""

FUNCTIONS = [('f8', 'make_f8', 2)]


def test_regression():
    check_program(Program(SOURCE, [Function(*f) for f in FUNCTIONS]))

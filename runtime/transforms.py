"""State-threading versions of JAX control flow and transforms (S7).

The compiler redirects ``jax.lax.scan`` & co. here (``KNOWN`` maps the JAX function's identity to
the name of its counterpart below).  Each counterpart finds the Variables, Refs and NNX graph
nodes the function argument can reach — through its closure cells, the globals its code names,
and its explicit operands — threads their state through the carry / outputs, and writes it back on
the same (trace-owned) objects afterwards, so a mutation inside takes effect as it would eagerly.
"""
import jax

KNOWN = {}


def _register(name, *fns):
    for f in fns:
        if f is not None:
            KNOWN[id(f)] = name

"""The fuzzer: a random program generator for the S1 oracle: Python *source* of functions that
mutate hijaxc Variables, Refs and NNX Modules, run eagerly and under ``hijaxc.jit`` and compared.

A generated program is a module (one file, imported so that hijaxc can read its source) that
defines a few ``nnx.Module`` classes and, for each function ``fK``, a factory ``make_fK()``: it
builds fresh objects (module globals, closure cells, arguments -- with aliasing), and returns
``(fK, args, state)`` for :func:`oracle.check_eager`.  The function bodies read and write
Variables through ``v[...]``, ``v[i]``, ``v['k']`` (new keys too, and keys computed at run time),
``v.value``, augmented assignment, attribute paths (``p0.sub.w[...] += ...``), aliases, nested
functions and closures, methods, new Variables (returned), new Module attributes,
``jax.lax.fori_loop`` / ``scan`` / ``cond`` / ``switch`` / ``while_loop`` bodies that mutate the
Variables they capture or receive (values only: no new attributes or keys inside those bodies),
and ``jax.vmap`` of functions that read captured state.

Every random decision goes through a *chooser* (:class:`RandomChooser` for plain seeded runs,
:class:`HypothesisChooser` under hypothesis, which shrinks by shrinking the choices).  The
generator keeps an abstract model of every object (kind, shape, dict keys, Module attributes,
identity) as it emits statements, so *any* choice sequence yields a valid program: shrinking never
produces a program that is wrong eagerly.

Values are small float32 arrays of shapes ``()``, ``(3,)`` and ``(2, 3)``.  Arithmetic stays
bounded: expressions are convex combinations and products with ``tanh``/``cos`` factors of
bounded leaves, increments are ``tanh``/``sin``/``0.25 *`` of an expression, and multipliers are
constants of magnitude <= 1 or ``cos`` of an expression.

    src = generate(RandomChooser(seed))           # a Program (.source, .functions)
    check_program(src)                            # AssertionError (with the source) on mismatch

The package, by topic: ``model`` (choosers, the abstract model, the prelude), ``gen_base``
(programs, functions, factories, expressions), ``gen_statements``, ``gen_modules`` (classes, flax
layers, containers), ``gen_control`` (lax control flow, vmap), ``gen_grad`` (grad /
value_and_grad, optimizers), ``gen_state`` (static configuration, tuples, lojax Variables, Rngs,
other arguments across calls), ``generator`` (the assembled :class:`Generator`, ``FEATURES``,
``KNOWN_BUGS``), ``eager`` (the eager reference), ``runner`` (running and comparing) and
``shrink`` (shrinking, regression files).  Every feature in ``FEATURES`` can be left out with
``avoid=``; the default generator includes them all.
"""
from .generator import FEATURES, KNOWN_BUGS, Generator, generate
from .model import (
                     Chooser,
                     Function,
                     HypothesisChooser,
                     Obj,
                     Program,
                     RandomChooser,
                     Scope,
)
from .runner import (
                     ATOL,
                     RTOL,
                     AtomicityError,
                     EagerError,
                     ProgramTimeout,
                     Unstable,
                     check_program,
                     describe,
                     failure,
                     load,
                     run_program,
                     signature,
)
from .shrink import regression_file, shrink

__all__ = ["ATOL", "FEATURES", "KNOWN_BUGS", "RTOL", "AtomicityError", "Chooser", "EagerError",
           "Function", "Generator", "HypothesisChooser", "Obj", "Program", "ProgramTimeout",
           "RandomChooser", "Scope", "Unstable", "check_program", "describe", "failure",
           "generate", "load", "regression_file", "run_program", "shrink", "signature"]

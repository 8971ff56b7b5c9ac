"""The generator: one class assembled from the topic mixins, the features that can be left out, and
:func:`generate`."""
from .gen_base import BaseMixin
from .gen_control import ControlMixin
from .gen_grad import GradMixin
from .gen_modules import ModulesMixin
from .gen_state import StateMixin
from .gen_statements import StatementsMixin


class Generator(BaseMixin, ModulesMixin, StatementsMixin, ControlMixin, GradMixin, StateMixin):
    """Emits a program statement by statement, keeping an abstract model of every object, so that
    any sequence of choices gives a program that runs eagerly (see the package docstring)."""


#: Every feature that ``generate(..., avoid=...)`` / ``benchmarks/fuzz.py --avoid`` can leave out
#: (the default generator includes them all).
FEATURES = {
    "lax_in_method": "lax control flow inside Module methods",
    "nested_hijaxc_jit": "hijaxc.jit of a function defined inside the compiled one",
    "module_helper": "module-level helper functions called from compiled code",
    "helper_globals": "module globals reached by helpers directly",
    "state_operand": "Variables / Modules passed as cond/switch operands",
    "between_calls": "eager structural changes between calls",
    "grad": "jax.grad / jax.value_and_grad of losses that write state",
    "grad_aux": "has_aux=True (auxiliary outputs of the loss)",
    "grad_state_arg": "Variables / Modules as non-differentiated grad arguments (also captured)",
    "grad_module": "a Module (vars_as(..., mutable=False)) as the differentiated argument",
    "grad_tied": "a differentiated Module that reaches one Variable through two attributes",
    "grad_callable": "jax.grad(model) / jax.grad(model.method)",
    "optax": "an optax optimizer whose state lives in a Variable",
    "vmap_write": "vmap outputs written to Variables",
    "vmap_out_var": "a Variable holding a vmap output returned from a helper",
    "layers": "flax layers (Linear, BatchNorm, Dropout) inside Modules",
    "containers": "sub-Modules in nnx.List / nnx.Dict attributes",
    "train_eval": "model.train() / model.eval() inside the compiled function",
    "sized_module": "Modules of one class with different sizes (a hidden size argument)",
    "lojax": "lojax (hijax=False) Variables passed as arguments",
    "static": "static configuration (closure, global, attribute, static_argnums/argnames)",
    "static_kw": "static_argnames (static arguments named; passed by keyword or positionally)",
    "vary_args": "different arguments across calls (retraces)",
    "tuples": "state behind tuples and namedtuples",
    "helper_tuples": "tuples in the globals / closures of helpers defined outside the function",
    "rngs": "nnx.Rngs streams drawn inside the step",
}

#: Generator features that hit a known, open hijaxc bug (feature -> the regression test that pins
#: it).  ``tests/test_fuzz.py`` avoids them so that it keeps finding *new* bugs; the long run
#: (``benchmarks/fuzz.py``) includes them unless told ``--avoid-known``.  Delete an entry once its
#: regression test passes.
KNOWN_BUGS: dict = {}
#: Features whose eager reference is not hijaxc's specified behaviour, each pinned by a test of
#: what hijaxc does instead; always left out.  ``grad_tied``: JAX's own ``jax.grad`` of a pytree
#: Module gives each path to a tied Variable its own partial derivative, hijaxc (one object inside
#: the step, S4) gives the Variable its total derivative on both paths, as ``nnx.grad`` does.
DEVIATIONS = {
    "grad_tied": "tests/regressions/test_regression_grad_tied_weights.py",
}


def generate(ch, **kw):
    """A random :class:`Program` from the choices of ``ch``; ``avoid``: features to leave out."""
    avoid = set(kw.get("avoid", ()))
    unknown = avoid - set(FEATURES)
    if unknown:
        raise ValueError(f"unknown generator features {sorted(unknown)}; known: {sorted(FEATURES)}")
    kw["avoid"] = avoid | set(DEVIATIONS)
    return Generator(ch, **kw).program()

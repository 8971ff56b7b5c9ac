"""Shrinking a failing program, and saving it as a regression test."""
import ast
import copy
import os
import textwrap

from .model import Program
from .runner import ProgramTimeout, failure, signature


def _statement_slots(tree):
    """(node, field, index) of every statement below the top level's imports and helpers, in a
    fixed order (outer statements first, so whole functions and blocks go before their lines)."""
    slots = []
    for top in tree.body:
        if isinstance(top, (ast.Import, ast.ImportFrom)) or getattr(top, "name", "") == "_v":
            continue
        todo = [top]
        while todo:
            node = todo.pop(0)
            for field in ("body", "orelse"):
                stmts = getattr(node, field, None)
                if isinstance(stmts, list):
                    slots += [(node, field, i) for i in range(len(stmts))]
                    todo += stmts
    return [(tree, "body", i) for i, top in enumerate(tree.body)
            if not isinstance(top, (ast.Import, ast.ImportFrom))
            and getattr(top, "name", "") != "_v"
            ] + slots


_SIMPLIFY_CALLS = {"where", "mean", "stack"}


def _expr_slots(tree):
    """(parent, field, index-or-None, replacement) candidates: an operator or a call replaced by one
    of its operands (shapes may no longer fit: such candidates fail eagerly and are rejected)."""
    out = []
    roots = [n for n in tree.body
             if not isinstance(n, (ast.Import, ast.ImportFrom)) and getattr(n, "name", "") != "_v"]
    for parent in (node for root in roots for node in ast.walk(root)):
        for field, value in ast.iter_fields(parent):
            for index, child in ([(None, value)] if isinstance(value, ast.AST) else
                                 list(enumerate(value)) if isinstance(value, list) else []):
                if not isinstance(child, ast.expr):
                    continue
                subs = []
                # Only substitutions that keep the generator's bounds (0.5 * (a + b) -> 0.5 * a,
                # a * tanh(b) -> a, where(c, a, b) -> a, -a -> a), never dropping a scale or a
                # squashing function: an unbounded program fails by float amplification instead.
                if isinstance(child, ast.BinOp):
                    if str(getattr(child.left, "id", "")).startswith("n_"):
                        continue  # a while loop's counter: n_c + 1 -> n_c would never end
                    if (isinstance(child.left, ast.Constant)
                            or isinstance(child.right, ast.Constant)):
                        continue
                    subs = [child.left, child.right]
                elif isinstance(child, ast.UnaryOp):
                    subs = [child.operand]
                elif isinstance(child, ast.Call):
                    name = getattr(child.func, "attr", "")
                    if name in _SIMPLIFY_CALLS:
                        # (never jnp.where's condition: a bool would compare at exactly 0)
                        subs = list(child.args[1:] if name == "where" else child.args)
                        if isinstance(child.func, ast.Attribute) and name == "mean":
                            subs.append(child.func.value)
                        if name == "stack" and subs and isinstance(subs[0], ast.List):
                            subs = list(subs[0].elts)
                out += [(parent, field, index, s) for s in subs]
    return out


def _replace(tree, k, slots_of, apply):
    tree = copy.deepcopy(tree)
    apply(slots_of(tree)[k])
    return tree


def _delete_stmt(slot):
    node, field, i = slot
    del getattr(node, field)[i]
    if not getattr(node, field) and not isinstance(node, ast.Module):
        getattr(node, field).append(ast.Pass())


def _substitute(slot):
    parent, field, index, sub = slot
    if index is None:
        setattr(parent, field, sub)
    else:
        getattr(parent, field)[index] = sub


def shrink(program, sig, *, budget=300, log=None, timeout=60, hangs=None):
    """Shrink a failing ``program`` while its failure keeps its :func:`signature` (a candidate
    that fails differently, e.g. eagerly, is rejected): keep only the failing function, then delete
    statements (whole definitions and blocks first) and replace operators and calls by one of
    their operands, until nothing more helps or ``budget`` runs are spent.
    A candidate running past ``timeout`` seconds is rejected and, if ``hangs`` is a list,
    appended to it as ``(program, ProgramTimeout)``.  Returns ``(program, exception)``."""
    best, tries = program, 0
    exc = failure(best, timeout)
    if exc is None or signature(exc) != sig:
        return program, exc
    failing = getattr(exc, "fuzz_function", None)
    if failing and len(best.functions) > 1:
        cand = Program(best.source, [f for f in best.functions if f.name == failing])
        e = failure(cand, timeout)
        tries += 1
        if e is not None and signature(e) == sig:
            best, exc = cand, e

    def attempt(tree):
        nonlocal best, exc, tries
        tries += 1
        try:
            source = ast.unparse(tree) + "\n"
            compile(source, "<shrink>", "exec")
        except Exception:  # noqa: BLE001
            return False
        if source == best.source:
            return False
        tops = {getattr(n, "name", None) for n in tree.body}
        cand = Program(source, [f for f in best.functions if f.make in tops])
        if not cand.functions:
            return False
        e = failure(cand, timeout)
        if isinstance(e, ProgramTimeout) and hangs is not None:
            hangs.append((cand, e))
        if e is not None and signature(e) == sig:
            best, exc = cand, e
            if log:
                log(f"  shrunk to {len(source)} chars after {tries} runs")
            return True
        return False

    improved = True
    while improved and tries < budget:
        improved = False
        for slots_of, apply in ((_statement_slots, _delete_stmt), (_expr_slots, _substitute)):
            k = 0
            tree = ast.parse(best.source)
            while k < len(slots_of(tree)) and tries < budget:
                if attempt(_replace(tree, k, slots_of, apply)):
                    improved = True
                    tree = ast.parse(best.source)
                else:
                    k += 1
    return best, exc


REGRESSION_TEMPLATE = '''\
"""Regression found by benchmarks/fuzz.py ({origin}): hijaxc.jit must match eager execution.

{symptom}
"""
from fuzz import Function, Program, check_program

SOURCE = """\\
{source}"""

FUNCTIONS = {functions!r}


def test_regression():
    check_program(Program(SOURCE, [Function(*f) for f in FUNCTIONS]))
'''


def regression_file(program, exc, origin, directory, name=None):
    """Write ``test_regression_<hash>.py`` (or ``test_regression_<name>.py``) reproducing
    ``program``'s failure; returns its path."""
    os.makedirs(directory, exist_ok=True)
    assert '"""' not in program.source and "\\" not in program.source
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    symptom = f"{type(exc).__name__}: {' '.join(lines[:4])}"[:400]
    symptom = symptom.replace('"""', "'''").replace("\\", "/")
    text = REGRESSION_TEMPLATE.format(
        origin=origin, symptom=textwrap.fill(symptom, 99),
        source=program.source,
        functions=[(f.name, f.make, f.calls) for f in program.functions])
    path = os.path.join(directory, f"test_regression_{name or program.digest}.py")
    with open(path, "w") as f:
        f.write(text)
    return path


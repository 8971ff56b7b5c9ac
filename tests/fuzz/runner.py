"""Running a generated program: eagerly (Python control flow) and under ``hijaxc.jit``, compared by
``tests/oracle.py``; timeouts, atomicity (S6) and the numerical-stability check."""
import contextlib
import copy
import hashlib
import importlib.util
import itertools
import os
import sys
import tempfile
import traceback
import warnings

import oracle

import hijaxc

from . import eager as eager_ref
from .eager import python_reference as python_control_flow

#: relative tolerance; the absolute one is scaled by the magnitude of the values compared
RTOL = 1e-4
ATOL = 1e-4


# -- running ---------------------------------------------------------------------------------------
class EagerError(Exception):
    """The program failed eagerly: a bug in the generator, not in hijaxc."""


@contextlib.contextmanager
def _eager_context():
    with python_control_flow():
        try:
            yield
        except Exception as e:
            raise EagerError(f"{type(e).__name__}: {e}") from e


_tmpdir = None
_loaded = itertools.count()


def load(source):
    """Import ``source`` as a real module (hijaxc reads functions' source through ``inspect``)."""
    global _tmpdir
    if _tmpdir is None:
        _tmpdir = tempfile.mkdtemp(prefix="hijaxc-fuzz-")
    name = f"hxfuzz_{hashlib.sha1(source.encode()).hexdigest()[:10]}_{next(_loaded)}"
    path = os.path.join(_tmpdir, name + ".py")
    with open(path, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


class AtomicityError(AssertionError):
    """S6: a ``hijaxc.jit`` call raised and left the caller's objects changed (or deleted
    arrays)."""


def _by_value(x):
    """What a call passes for argument ``x``: a lojax Variable is passed by value (S2), so the
    eager reference works on a copy of it, as ``hijaxc.jit`` does."""
    if isinstance(x, hijaxc.Variable) and not x.hijax:
        return copy.deepcopy(x)
    return x


def _atomic_case(make):
    """``make`` as a factory whose compiled run also checks S6 (when a call raises, everything
    reachable from the arguments and state must be as it was before the call), and whose both runs
    apply the program's ``BETWEEN`` changes before every call but the first, call with the
    program's ``CALLS`` arguments (other arguments on later calls), and compile with its ``JIT``
    options (static arguments)."""

    def made():
        case = oracle._as_case(make())
        fn = case.fn
        mod = sys.modules[fn.__module__]
        jitted = hijaxc.jit(fn, **getattr(mod, "JIT", {}).get(fn.__name__, {}))
        roots = {"args": case.args, "kwargs": case.kwargs, "state": case.state}
        between = getattr(mod, "BETWEEN", {}).get(fn.__name__)
        other_args = getattr(mod, "CALLS", {}).get(fn.__name__)
        calls = [0]

        def before_call(args, kwargs):
            calls[0] += 1
            if between is not None and calls[0] > 1:
                between()
            if other_args is not None and calls[0] > 1:
                args, kwargs = other_args[(calls[0] - 2) % len(other_args)]
            return args, kwargs

        def eager(*args, **kwargs):
            _phase[0] = "eager"
            args, kwargs = before_call(args, kwargs)
            eager_ref.ROOTS[:] = [roots, args, kwargs]
            args = tuple(_by_value(a) for a in args)
            kwargs = {k: _by_value(v) for k, v in kwargs.items()}
            try:
                return fn(*args, **kwargs)
            finally:
                eager_ref.ROOTS[:] = []

        def call(*args, **kwargs):
            _phase[0] = "compiled"
            args, kwargs = before_call(args, kwargs)
            before = oracle.snapshot(roots)
            try:
                return jitted(*args, **kwargs)
            except Exception as e:
                try:
                    oracle.assert_same(before, oracle.snapshot(roots), rtol=0, atol=0)
                except Exception as changed:  # noqa: BLE001
                    raise AtomicityError(f"the call raised {type(e).__name__}: {str(e)[:300]}\n"
                                         f"and changed the caller's state: {changed}") from e
                raise

        case.eager, case.jitted = eager, call
        return case

    return made


class ProgramTimeout(BaseException):
    """A program ran longer than ``run_program``'s ``timeout`` (a BaseException, so that neither
    the eager-error wrapper nor user-level ``except Exception`` swallows it)."""


_phase = ["?"]  # which run is under way: "eager" or "compiled" (for timeout messages)


@contextlib.contextmanager
def _time_limit(seconds):
    import signal
    import threading

    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def alarm(signum, frame):
        raise ProgramTimeout(f"no result after {seconds}s, in the {_phase[0]} run")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Unstable(Exception):
    """A value mismatch in a program whose eager result itself moves past the tolerance when its
    initial values move by ``STABILITY_EPS`` (relative): float rounding (a fused reduction) could
    explain the mismatch, so it proves nothing.  Not a failure: the fuzz runs skip such programs."""


#: relative perturbation of the initial values for the stability check; a program amplifying it
#: past RTOL amplifies rounding (~1e-7) by >= 100x and is not trusted with value comparisons
STABILITY_EPS = 1e-6


def _check_stable(mod, fn, mismatch):
    """Raise :class:`Unstable` if ``fn``'s eager run is too sensitive to its initial values."""
    make = getattr(mod, fn.make)
    builds = [0]

    def perturbed_make():
        builds[0] += 1
        mod.EPS = STABILITY_EPS if builds[0] > 1 else 0.0
        try:
            case = _atomic_case(make)()
        finally:
            mod.EPS = 0.0
        eager = case.eager

        def eager_again(*args, **kwargs):  # the "compiled" side: eager too, on perturbed values
            with python_control_flow():
                return eager(*args, **kwargs)

        case.jitted = eager_again
        return case

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            oracle.check_eager(perturbed_make, calls=fn.calls, rtol=RTOL, atol=ATOL,
                               scale_atol=True, eager_context=python_control_flow)
    except AssertionError as e:
        raise Unstable(f"{fn.name}: eager values move past the tolerance when the initial values "
                       f"move by {STABILITY_EPS:g}: {str(e)[:300]}") from mismatch


def run_program(program, timeout=None):
    """Check every function of ``program``; raise the first failure (the source is not added).
    ``timeout`` (seconds, main thread only): raise :class:`ProgramTimeout` past it."""
    mod = load(program.source)
    try:
        for fn in program.functions:
            with warnings.catch_warnings(), _time_limit(timeout):
                warnings.simplefilter("ignore")
                try:
                    try:
                        oracle.check_eager(_atomic_case(getattr(mod, fn.make)), calls=fn.calls,
                                           rtol=RTOL, atol=ATOL, scale_atol=True,
                                           eager_context=_eager_context)
                    except AssertionError as e:
                        if "Not equal to tolerance" in str(e):
                            _check_stable(mod, fn, e)
                        raise
                except BaseException as e:
                    e.fuzz_function = fn.name
                    raise
    finally:
        sys.modules.pop(mod.__name__, None)


def describe(program, exc):
    """The failure message: the exception, the function, and the generated source."""
    fn = getattr(exc, "fuzz_function", "?")
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-6))
    return (f"generated program failed in {fn} ({type(exc).__name__}: {str(exc)[:2000]})\n"
            f"--- traceback (last frames) ---\n{tb}\n--- generated source ---\n{program.source}")


def check_program(program, timeout=None):
    """Run ``program`` and raise ``AssertionError`` with the source printed on any failure
    (:class:`Unstable` passes through: the caller skips such a program)."""
    try:
        run_program(program, timeout)
    except Unstable:
        raise
    except (Exception, ProgramTimeout) as e:
        raise AssertionError(describe(program, e)) from e


def signature(exc):
    """What makes two failures 'the same' while shrinking: type and where it was raised."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f"{os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else "?"
    return (type(exc).__name__, where)


def failure(program, timeout=None):
    try:
        run_program(program, timeout)
    except (Exception, ProgramTimeout) as e:  # noqa: BLE001
        return e
    return None


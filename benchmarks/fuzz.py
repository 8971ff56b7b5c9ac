"""Long fuzz run of hijaxc.jit against eager execution (S1, S4, S7) on generated programs.

    python benchmarks/fuzz.py --n 10000              # programs with seeds 0..9999
    python benchmarks/fuzz.py --n 500 --start 20000  # another range of seeds
    python benchmarks/fuzz.py --seed 76              # one program: print its source and result
    python benchmarks/fuzz.py --minutes 25           # as many as fit in 25 minutes

Each seed gives one program (``tests/fuzz.py``: a module with 1-3 functions and their
factories), run eagerly (Python control flow) and under ``hijaxc.jit`` for 2-3 calls and compared
by ``tests/oracle.py``.  Plain seeded generation, no hypothesis: fast.  On a failure the program is
shrunk (``fuzz.shrink``: keep the failing function, delete statements, replace operations by
their operands, as long as the failure keeps its type and place), the small program is printed,
and a regression test ``tests/regressions/test_regression_<hash>.py`` that reproduces it is
written (``--no-save`` to skip).  Failures with the same signature (exception type and where it
was raised) are shrunk and saved once; later ones are only counted and listed.  Prints the count
run and every failure.

A value mismatch only counts if the program is numerically stable: its eager result must stay
within the tolerance when every initial value moves by 1e-6 (relative); otherwise float rounding
could explain it, and the program is counted as "unstable" and skipped (``fuzz.Unstable``).
A program running past ``--timeout`` seconds is a failure (``fuzz.ProgramTimeout``).
"""
import argparse
import os
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.join(os.path.dirname(HERE), "tests")
sys.path.insert(0, TESTS)
warnings.simplefilter("ignore")

# after the sys.path change (fuzz lives in tests/) and the warnings filter
import fuzz  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="number of programs")
    ap.add_argument("--start", type=int, default=0, help="first seed")
    ap.add_argument("--seed", type=int, help="run just this seed and print its source")
    ap.add_argument("--minutes", type=float, help="stop after this much wall time")
    ap.add_argument("--shrink-budget", type=int, default=300, help="runs spent shrinking a failure")
    ap.add_argument("--avoid-known", action="store_true",
                    help="leave out the features fuzz.KNOWN_BUGS lists (features with open bugs)")
    ap.add_argument("--avoid", default="",
                    help="comma-separated generator features to leave out (see --list-features)")
    ap.add_argument("--list-features", action="store_true", help="list the generator's features")
    ap.add_argument("--timeout", type=float, default=60, help="seconds per program")
    ap.add_argument("--no-save", action="store_true", help="do not write regression tests")
    ap.add_argument("--regressions", default=os.path.join(TESTS, "regressions"))
    args = ap.parse_args(argv)

    if args.list_features:
        for name, what in fuzz.FEATURES.items():
            print(f"{name:20} {what}{'  (known bug)' if name in fuzz.KNOWN_BUGS else ''}")
        return 0
    avoid = {a for a in args.avoid.split(",") if a}
    if args.avoid_known:
        avoid |= set(fuzz.KNOWN_BUGS)
    if args.seed is not None:
        prog = fuzz.generate(fuzz.RandomChooser(args.seed), avoid=avoid)
        exc = fuzz.failure(prog, args.timeout)
        print(prog.source if exc is None else fuzz.describe(prog, exc))
        print("ok" if exc is None else "FAILED")
        return 0 if exc is None else 1

    t0 = time.time()
    deadline = t0 + 60 * args.minutes if args.minutes else None
    failures, seen, run, functions, unstable = [], {}, 0, 0, []
    for seed in range(args.start, args.start + args.n):
        if deadline and time.time() > deadline:
            break
        prog = fuzz.generate(fuzz.RandomChooser(seed), avoid=avoid)
        exc = fuzz.failure(prog, args.timeout)
        run += 1
        functions += len(prog.functions)
        if run % 100 == 0:
            print(f"[{time.time() - t0:7.1f}s] {run} programs ({functions} functions), "
                  f"{len(failures)} failing, {len(unstable)} unstable", flush=True)
        if exc is None:
            continue
        if isinstance(exc, fuzz.Unstable):  # a mismatch float rounding could explain
            unstable.append(seed)
            continue
        sig = fuzz.signature(exc)
        first_line = f"{type(exc).__name__}: {str(exc)[:300]}".replace("\n", " | ")
        failures.append((seed, sig, first_line))
        print(f"FAIL seed={seed} {sig}: {first_line}", flush=True)
        if sig in seen:
            print(f"  (same signature as seed {seen[sig]})", flush=True)
            continue
        seen[sig] = seed
        hangs = []
        budget = args.shrink_budget if sig[0] != "ProgramTimeout" else 10
        small, small_exc = fuzz.shrink(prog, sig, budget=budget, timeout=args.timeout,
                                          hangs=hangs)
        for hung, why in hangs[:1]:  # a candidate that hung while shrinking: worth a look
            print(f"  a shrinking candidate hung ({why}):", flush=True)
            print(fuzz.describe(hung, why), flush=True)
        if small_exc is None:  # flaky: keep the original
            small, small_exc = prog, exc
        print(fuzz.describe(small, small_exc), flush=True)
        if not args.no_save:
            path = fuzz.regression_file(small, small_exc, f"seed {seed}", args.regressions)
            print(f"  saved {os.path.relpath(path)}", flush=True)

    dt = time.time() - t0
    print(f"\nran {run} programs ({functions} functions) in {dt:.0f}s; {len(failures)} failing, "
          f"{len(seen)} distinct signatures; {len(unstable)} skipped as numerically unstable "
          f"(seeds {unstable[:20]})")
    for seed, sig, line in failures:
        print(f"  seed {seed}: {sig[0]} at {sig[1]}: {line[:200]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

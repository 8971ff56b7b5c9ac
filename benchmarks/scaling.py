"""How the per-call cost grows with the number of Variables (issue 15), one interleaved run.

    python benchmarks/scaling.py                  # full run (minutes)
    python benchmarks/scaling.py --quick          # few rounds, small N (CI smoke, development)
    python benchmarks/scaling.py --ns 10,100 --rounds 5 --out /tmp/s.md --no-plot

Two sweeps, each against the floor: a hand-written ``jax.jit`` on the flat list of the N arrays
with ``donate_argnums``.

  scalars: one Module holding N scalar Variables; the step bumps each (compute is negligible,
           so the time is the call path).
  linears: a model of N tiny ``nnx.Linear`` layers (kernel + bias each); a training-like step
           runs the forward pass and updates every parameter in place (``p -= 0.01 * p``).

``jax.jit on Variables`` is the floor's step with the state where the Module keeps it: its arrays
read from the N Variables before each call and the outputs written back to them after, as C-level
``map``s (no Python loop) -- the least a hand-written step that updates the Module does.  hijaxc
over it is hijaxc's own cost; it over the floor is what keeping the state in N Variables costs
(reading and writing N objects spread through the heap, and the arrays they held being freed
rather than kept by a Module nobody updates: README, "Scaling").

Contenders (where the installed flax has them): ``hijaxc.jit``, ``nnx.jit``,
``nnx.jit(graph=False)`` (tree mode) and ``nnx.cached_partial``.  Each round calls each contender
K times, in a random order, and blocks on the last output (``_timing.py``).  Each N is measured in
several fresh processes that make the contenders in different orders (``creation_orders``: where
a contender is made moves its time); the table gives the median per-call time over the rounds of
all of them and the median over those rounds of the ratio to the floor's time in the same round,
and a second table hijaxc's ratio in each process.  Every contender's state is checked afterwards:
it must have advanced by exactly the number of calls made.

``--isolated`` puts each contender in a process of its own (``measure_isolated``), the rounds
still interleaved across them: nothing of one contender's heap is in another's, as in a program
that runs one of them.  Every worker holds the Module it was made from, the floor's too (a floor
whose Module was dropped measured ~20 % slower at 1,000 Linear layers, 4 processes each: its
calls' arrays land in the freed memory).

First call (trace + compile) of a model of ``--first-call-layers`` Linear layers: each contender
in a fresh subprocess running this file, so that nothing is cached.

Writes a markdown table (``--out``, default benchmarks/results/scaling.md) and a log-log plot
(``--plot``, default docs/scaling.png; needs matplotlib: ``pip install -e '.[bench]'``).
"""
import argparse
import collections
import dataclasses
import gc
import inspect
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
sys.path[:0] = [p for p in (_ROOT, _HERE) if p not in sys.path]
from _timing import interleaved_samples, paired_ratio, timed_calls  # noqa: E402  (benchmarks/_timing.py)
from hijaxc.runtime import _adapter  # noqa: E402  (the installed flax's Variable value slot)

import hijaxc  # noqa: E402

_consume = collections.deque(maxlen=0).extend  # runs an iterator to its end, in C
FLOOR = "floor: flat jax.jit"
ON_VARS = "jax.jit on Variables"
HIJAXC = "hijaxc.jit"
NNX_JIT = "nnx.jit"
NNX_TREE = "nnx.jit(graph=False)"
NNX_CACHED = "nnx.cached_partial"
# Calls before timing.  hijaxc compiles on its 1st call and again on its 3rd (the donation mask
# changes once the caller holds an output, S9), the floor only on its 1st; each contender gets 3
# calls after its last compilation.  With 3 in all, hijaxc's timed calls began right after its
# compile, and at 1,000 scalars it measured ~10 % slower for the whole run (3 vs 6 warm-up calls,
# the same processes: 1.08-1.19x against 1.02-1.13x; all contenders at 6: 0.95-1.10x) -- an
# early state that persists (a collection after the warm-up did not change it), cause not found.
WARMUP = 6
DIM = 4
DECAY = 0.01

_List = getattr(nnx, "List", list)  # flax < 0.11: a plain list attribute is a graph node


def _item_writes_supported():
    """flax >= 0.11 Variables take ``v[...] = x``; older ones only ``v.value = x``."""
    v = nnx.Variable(jnp.zeros(()))
    try:
        v[...] = jnp.ones(())
    except TypeError:
        return False
    return True


ITEM_WRITES = _item_writes_supported()


class Counters(nnx.Module):
    def __init__(self, n):
        self.counters = _List([nnx.Variable(jnp.zeros((), jnp.int32)) for _ in range(n)])


class Linears(nnx.Module):
    def __init__(self, n, dim=DIM):
        rngs = nnx.Rngs(0)
        self.layers = _List([nnx.Linear(dim, dim, bias_init=nnx.initializers.ones, rngs=rngs)
                             for _ in range(n)])


# The steps, as a user writes them for nnx.jit / hijaxc.jit (hijaxc compiles them from this file).
if ITEM_WRITES:
    def bump(model):
        for c in model.counters:
            c[...] += 1
        return model.counters[-1][...]

    def train_like(model, x):
        y = x
        for layer in model.layers:
            y = jnp.tanh(layer(y))
        for layer in model.layers:
            layer.kernel[...] -= DECAY * layer.kernel[...]
            layer.bias[...] -= DECAY * layer.bias[...]
        return (y ** 2).mean()
else:
    def bump(model):
        for c in model.counters:
            c.value += 1
        return model.counters[-1].value

    def train_like(model, x):
        y = x
        for layer in model.layers:
            y = jnp.tanh(layer(y))
        for layer in model.layers:
            layer.kernel.value -= DECAY * layer.kernel.value
            layer.bias.value -= DECAY * layer.bias.value
        return (y ** 2).mean()


# The floors: the same steps written by hand on the flat list of arrays.
def flat_bump(leaves):
    new = [v + 1 for v in leaves]
    return new, new[-1]


def flat_train_like(leaves, x):
    kernels, biases = leaves[0::2], leaves[1::2]
    y = x
    for k, b in zip(kernels, biases):
        y = jnp.tanh(y @ k + b)
    new = []
    for k, b in zip(kernels, biases):
        new += [k - DECAY * k, b - DECAY * b]
    return new, (y ** 2).mean()


def counter_variables(model):
    return list(model.counters)


def linear_variables(model):
    """kernel, bias of each layer in turn: the floor's flat list."""
    return [p for layer in model.layers for p in (layer.kernel, layer.bias)]


def counter_leaves(model):
    return [v[...] for v in counter_variables(model)]


def linear_leaves(model):
    """What the floors' flat lists hold, and what the checks read."""
    return [v[...] for v in linear_variables(model)]


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str                                   # "scalars" / "linears"
    title: str                                  # what N counts
    make: Callable[[int], nnx.Module]
    step: Callable[..., Any]                    # (model, *args) -> array
    flat_step: Callable[..., Any]               # (leaves, *args) -> (leaves, array)
    args: tuple                                 # the non-state arguments
    leaves: Callable[[nnx.Module], list]        # the state as a flat list of arrays
    variables: Callable[[nnx.Module], list]     # the Variables holding them, in that order
    advance: Callable[[np.ndarray, int], np.ndarray]  # a leaf after k calls


SCALARS = Workload("scalars", "N scalar Variables in one Module", Counters, bump, flat_bump, (),
                   counter_leaves, counter_variables, lambda v, k: v + k)
LINEARS = Workload("linears", f"N Linear({DIM}, {DIM}) layers (kernel + bias)", Linears,
                   train_like, flat_train_like, (jnp.ones((1, DIM)),), linear_leaves,
                   linear_variables, lambda v, k: v * (1 - DECAY) ** k)
WORKLOADS = {w.name: w for w in (SCALARS, LINEARS)}


# ----------------------------------------------------------------------------- contenders

@dataclasses.dataclass
class Contender:
    name: str
    call: Callable[[], Any]                 # one step; returns an array to block on
    leaves: Callable[[], list]              # the state now, as the workload's flat list


def _floor(w: Workload, model: nnx.Module) -> Contender:
    step = jax.jit(w.flat_step, donate_argnums=0)
    box = {"leaves": w.leaves(model)}

    def call():
        box["leaves"], out = step(box["leaves"], *w.args)
        return out

    return Contender(FLOOR, call, lambda: box["leaves"])


def _on_variables(w: Workload, model: nnx.Module) -> Contender:
    """The floor's step on the Module's own Variables: their value slots read before the call and
    written after (``_adapter``: the access hijaxc's steady state uses, no flax hooks)."""
    step, variables, args = jax.jit(w.flat_step, donate_argnums=0), w.variables(model), w.args
    get, put = _adapter.get_raw, _adapter.set_raw

    def call():  # both passes C-level maps, no Python loop
        new, out = step(list(map(get, variables)), *args)
        _consume(map(put, variables, new))
        return out

    return Contender(ON_VARS, call, lambda: w.leaves(model))


def _nnx_tree_jit():
    """``nnx.jit(graph=False)`` where this flax has tree mode, else None."""
    if "graph" not in inspect.signature(nnx.jit).parameters:
        return None
    return lambda f: nnx.jit(f, graph=False)


def _cached_partial(f, model):
    """``nnx.cached_partial`` in graph mode with graph updates, as its docstring has it."""
    mode = getattr(nnx, "set_graph_mode", None)
    updates = getattr(nnx, "set_graph_updates", None)
    if mode is None or updates is None:
        return nnx.cached_partial(f, model)
    with mode(True), updates(True):
        return nnx.cached_partial(f, model)


def available() -> list[str]:
    """The contenders this environment has, floor first."""
    names = [FLOOR, ON_VARS, HIJAXC, NNX_JIT]
    if _nnx_tree_jit() is not None:
        names.append(NNX_TREE)
    if hasattr(nnx, "cached_partial"):
        names.append(NNX_CACHED)
    return names


def make_contender(name: str, w: Workload, model: nnx.Module) -> Contender:
    """``name``'s step on ``model`` (the floor copies the model's arrays into a flat list)."""
    if name == FLOOR:
        return _floor(w, model)
    if name == ON_VARS:
        return _on_variables(w, model)
    if name == NNX_CACHED:
        cached = _cached_partial(nnx.jit(w.step), model)
        return Contender(name, lambda: cached(*w.args), lambda: w.leaves(model))
    wrap = {HIJAXC: hijaxc.jit, NNX_JIT: nnx.jit, NNX_TREE: _nnx_tree_jit()}[name]
    f = wrap(w.step)
    return Contender(name, lambda: f(model, *w.args), lambda: w.leaves(model))


def check_advanced(w: Workload, c: Contender, before: list, calls: int):
    """The contender really stepped the state ``calls`` times (so none is timed doing nothing)."""
    after = c.leaves()
    assert len(after) == len(before), (c.name, len(after), len(before))
    for i, (b, a) in enumerate(zip(before, after)):
        want = w.advance(b, calls)
        assert np.allclose(np.asarray(a), want, rtol=1e-3, atol=1e-6), \
            f"{c.name}: leaf {i} of {w.name} did not advance {calls} times"


# ----------------------------------------------------------------------------- timing

class Timing(NamedTuple):
    workload: str
    contender: str
    n: int
    seconds: float          # median time per call, over the rounds of every process that made it
    ratio: float            # median over those rounds of seconds / the floor's in the same round
    per_process: tuple      # that ratio in each process that made the contender
    vs_on_vars: float       # as ``ratio``, against jax.jit on Variables
    per_process_vs_on_vars: tuple


def calls_per_round(calls: int, n: int) -> int:
    """Fewer calls per round for large N, where one call already takes milliseconds."""
    return max(3, calls * 100 // max(n, 100))


def creation_orders(names: list[str], processes: int) -> list[list[str]]:
    """The contenders each process makes, in the order it makes them.

    Where a contender is made moves its time per call by up to ~30 % at N = 1,000 (README,
    "Scaling"), so one process measures placement as much as the call path: at 1,000 Linear
    layers hijaxc measured 0.84-1.16x the floor where it was made first and 1.05-1.31x where the
    floor was (session 25).  Process 0 makes every contender, the floor first; the others make
    the floor, hijaxc and jax.jit on Variables, the floor or hijaxc first in turn, so each of the
    two being compared is made first equally often (with the three rotated, hijaxc came first in
    one process of four, and its pooled ratio at 1,000 linears rose to 1.21x: 0.89x where it came
    first, 1.21-1.31x elsewhere).  The nnx contenders (3-20x the floor) are made in process 0
    only: their warm-ups are minutes at 4,000 scalars and at 1,000 linears."""
    hijaxc_first, floor_first = [HIJAXC, ON_VARS, FLOOR], [FLOOR, ON_VARS, HIJAXC]
    return [names] + [hijaxc_first if p % 2 else floor_first for p in range(1, processes)]


class Run(NamedTuple):
    order: list[str]                    # the contenders, in the order this process made them
    samples: dict[str, list[float]]     # per contender, its time per call in each round


def measure(w: Workload, n: int, order: list[str], rounds: int, calls: int, seed: int) -> Run:
    """In this process: make the contenders in ``order``, warm them up, time them interleaved,
    and check that each advanced the state once per call."""
    contenders = [make_contender(name, w, w.make(n)) for name in order]
    # copies: a zero-copy view (np.asarray) keeps the first state's buffers referenced outside
    # JAX, and with those views held hijaxc's later calls measured 1.4-1.5x the floor instead of
    # ~1.0x (the floor's did not change; cause not found, see README)
    before = {c.name: [np.array(v, copy=True) for v in c.leaves()] for c in contenders}
    warmup = {}
    for c in contenders:  # trace + compile, warm up
        seconds, _ = warm_up(c)
        warmup[c.name] = f"{seconds * WARMUP:.1f}"
    print(f"  {w.name} N={n} warm-up (s): {warmup}", file=sys.stderr)
    k = calls_per_round(calls, n)
    samples = interleaved_samples({c.name: c.call for c in contenders}, rounds, k, seed=seed)
    for c in contenders:
        check_advanced(w, c, before[c.name], WARMUP + rounds * k)
    return Run(order, samples)


def warm_up(c: Contender) -> tuple[float, Any]:
    """``WARMUP`` calls (trace + compile, then steady ones), each holding the last output as the
    timed calls do (donation!): ``_timing.timed_calls``' result."""
    return timed_calls(c.call, WARMUP)


def _measure_in_child(w: Workload, n: int, order: list[str], rounds: int, calls: int,
                      seed: int) -> Run:
    job = {"workload": w.name, "n": n, "order": order, "rounds": rounds, "calls": calls,
           "seed": seed}
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--sweep-child",
                        json.dumps(job)], stdout=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{w.name} N={n} {order}: the measuring process failed "
                           f"(exit {r.returncode}; its stderr is above)")
    return Run(order, json.loads(r.stdout.strip().splitlines()[-1]))


class _Worker:
    """A fresh process (this file, ``--worker``) holding one contender: it makes the model and the
    contender, warms it up, then times ``k`` calls each time it is asked (``worker_main``)."""

    def __init__(self, w: Workload, n: int, name: str):
        self.name = name
        job = json.dumps({"workload": w.name, "n": n, "name": name})
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", job],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def reply(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker of {self.name} died (its stderr is above)")
        return line.strip()

    def ask(self, request: str) -> str:
        self.proc.stdin.write(request + "\n")
        self.proc.stdin.flush()
        return self.reply()

    def close(self) -> None:
        """End the worker; it checks that its state advanced once per call (``check_advanced``)."""
        self.proc.stdin.close()
        if self.proc.wait() != 0:
            raise RuntimeError(f"the worker of {self.name} failed (exit {self.proc.returncode})")


def measure_isolated(w: Workload, n: int, names: list[str], rounds: int, calls: int,
                     seed: int) -> Run:
    """Each contender in a process of its own, the rounds interleaved across them as in
    ``_timing.interleaved_samples`` (a new random order each round); each worker times its own
    calls, so the pipe's round trip is not timed."""
    workers = [_Worker(w, n, name) for name in names]  # started together: warm-ups overlap
    try:
        for wk in workers:
            assert wk.reply() == "ready", wk.name
        k, rng = calls_per_round(calls, n), random.Random(seed)
        samples = {wk.name: [] for wk in workers}
        order = list(workers)
        for _ in range(rounds):
            rng.shuffle(order)
            for wk in order:
                samples[wk.name].append(float(wk.ask(str(k))))
    finally:
        for wk in workers:
            wk.close()
    return Run(names, samples)


def worker_main(job: str) -> None:
    """Run in a fresh process for ``measure_isolated``: one contender, timed on request."""
    j = json.loads(job)
    w = WORKLOADS[j["workload"]]
    model = w.make(j["n"])  # held by every worker, the floor's too: the program's heap is the same
    c = make_contender(j["name"], w, model)
    before = [np.array(v, copy=True) for v in c.leaves()]  # copies: see ``measure``
    _, out = warm_up(c)
    made = WARMUP
    print("ready", flush=True)
    for line in sys.stdin:  # the last output stays held between rounds, as in a loop
        k = int(line)
        seconds, out = timed_calls(c.call, k, out)
        print(seconds, flush=True)
        made += k
    check_advanced(w, c, before, made)


def sweep_child(job: str):
    """Run in a fresh process: ``measure`` one job, print its samples as JSON."""
    j = json.loads(job)
    w = WORKLOADS[j["workload"]]
    run = measure(w, j["n"], j["order"], j["rounds"], j["calls"], j["seed"])
    print(json.dumps(run.samples))


def _paired(runs: list[Run], name: str, base: str) -> tuple[float, tuple]:
    """``name``'s time over ``base``'s in the same round: the median over the rounds of all
    ``runs``, and in each run."""
    ratios = [[a / b for a, b in zip(r.samples[name], r.samples[base])] for r in runs]
    return (statistics.median(x for rs in ratios for x in rs),
            tuple(statistics.median(rs) for rs in ratios))


def pooled(w: Workload, n: int, runs: list[Run], name: str) -> Timing:
    """``name``'s time and ratios to the floors over the rounds of every run that made it."""
    mine = [r for r in runs if name in r.samples]
    ratio, per_process = _paired(mine, name, FLOOR)
    vs_on_vars, per_process_vs_on_vars = _paired(mine, name, ON_VARS)
    return Timing(w.name, name, n, statistics.median(t for r in mine for t in r.samples[name]),
                  ratio, per_process, vs_on_vars, per_process_vs_on_vars)


def time_one_n(w: Workload, n: int, rounds: int, calls: int, processes: int,
               isolated: bool = False) -> list[Timing]:
    """Each contender at this N, measured in ``processes`` fresh processes (``creation_orders``;
    ``isolated``: each contender of a process in a process of its own), the rounds pooled."""
    measure_one = measure_isolated if isolated else _measure_in_child
    runs = [measure_one(w, n, order, rounds, calls, seed=n * 10 + p)
            for p, order in enumerate(creation_orders(available(), processes))]
    return [pooled(w, n, runs, name) for name in available()]


def sweep(w: Workload, ns: list[int], s: "Settings") -> list[Timing]:
    out = []
    for n in ns:
        t0 = time.perf_counter()
        out += time_one_n(w, n, s.rounds, s.calls, s.processes, s.isolated)
        print(f"  {w.name} N={n}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return out


# ----------------------------------------------------------------------------- first call

class FirstCall(NamedTuple):
    contender: str
    cold: float             # first call in a fresh process (median over processes)
    warm: float             # then the first call of a new step (other shapes), same process
    cold_ratio: float       # vs the hand-written jax.jit step
    warm_ratio: float


def _timed_first_call(name: str, w: Workload, model: nnx.Module) -> float:
    jax.block_until_ready(w.leaves(model))
    # from a collected heap: else whether the garbage of the imports tips this call into a full
    # collection (~80 ms here) depends on what ran before it, not on the contender
    gc.collect()
    t0 = time.perf_counter()
    jax.block_until_ready(make_contender(name, w, model).call())
    return time.perf_counter() - t0


def first_call_child(name: str, layers: int):
    """Run in a fresh process: ``name``'s first call (wrap + trace + compile + run) on LINEARS,
    then on the same model with other shapes (the library's one-time costs already paid)."""
    jax.block_until_ready(jax.jit(lambda a: a + 1)(jnp.ones(())))  # backend started: not timed
    cold = _timed_first_call(name, LINEARS, LINEARS.make(layers))
    other = dataclasses.replace(LINEARS, make=lambda n: Linears(n, DIM + 1),
                                args=(jnp.ones((1, DIM + 1)),))
    warm = _timed_first_call(name, other, other.make(layers))
    print(json.dumps({"cold": cold, "warm": warm}))


def _first_call_run(name: str, layers: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--first-call-child", name,
           "--first-call-layers", str(layers)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"first call of {name} failed:\n{r.stderr[-3000:]}", file=sys.stderr)
        return {"cold": math.nan, "warm": math.nan}
    return json.loads(r.stdout.strip().splitlines()[-1])


def first_calls(layers: int, repeats: int) -> list[FirstCall]:
    """Each contender's first calls, ``repeats`` fresh processes each, interleaved; ratios paired
    by repeat, as in ``_timing.paired_ratio``."""
    runs = {name: [] for name in available() if name != ON_VARS}  # (its first call: the floor's)
    for _ in range(repeats):  # interleaved
        for name in runs:
            runs[name].append(_first_call_run(name, layers))
    samples = {kind: {name: [r[kind] for r in rs] for name, rs in runs.items()}
               for kind in ("cold", "warm")}
    med = {kind: {name: statistics.median(v) for name, v in by.items()}
           for kind, by in samples.items()}
    return [FirstCall(name, med["cold"][name], med["warm"][name],
                      paired_ratio(samples["cold"], name, FLOOR),
                      paired_ratio(samples["warm"], name, FLOOR)) for name in runs]


# ----------------------------------------------------------------------------- report

def _fmt(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "n/a"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def sweep_table(w: Workload, timings: list[Timing]) -> str:
    ns = sorted({t.n for t in timings})
    cell = {(t.contender, t.n): t for t in timings}
    lines = [f"### {w.title}: time per call (× the floor)", "",
             "| contender | " + " | ".join(f"N = {n:,}" for n in ns) + " |",
             "|---" * (len(ns) + 1) + "|"]
    for name in available():
        cells = [f"{_fmt(cell[name, n].seconds)} ({cell[name, n].ratio:.2f}×)" for n in ns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    cells = [f"{cell[HIJAXC, n].vs_on_vars:.2f}×" for n in ns]
    lines.append(f"| {HIJAXC} × {ON_VARS} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _short(name: str) -> str:
    return {FLOOR: "floor", ON_VARS: "on Variables", HIJAXC: "hijaxc"}.get(name, name)


def per_process_table(w: Workload, timings: list[Timing], orders: list[list[str]],
                      isolated: bool = False) -> str:
    """hijaxc's ratios to the floor and to jax.jit on Variables in each process (``isolated``:
    each group of processes), with the order the process made them in."""
    ns = sorted({t.n for t in timings})
    cell = {t.n: t for t in timings if t.contender == HIJAXC}
    unit, how = ("group", "contenders, one process each") if isolated else \
        ("process", "made in this order")
    lines = [f"{w.name}: `{HIJAXC}` / floor (/ {ON_VARS}) in each {unit} (the table above "
             "pools their rounds)",
             "", f"| {unit}: {how} | " + " | ".join(f"N = {n:,}" for n in ns) + " |",
             "|---" * (len(ns) + 1) + "|"]
    for p, order in enumerate(orders):
        made = ", ".join(_short(name) for name in order[:3]) + (", nnx..." if order[3:] else "")
        cells = [f"{cell[n].per_process[p]:.2f}× ({cell[n].per_process_vs_on_vars[p]:.2f}×)"
                 for n in ns]
        lines.append(f"| {p}: {made} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def first_call_table(layers: int, repeats: int, rows: list[FirstCall]) -> str:
    lines = [f"### First call (wrap + trace + compile + run), {layers} Linear layers, "
             f"median of {repeats} fresh processes", "",
             "*fresh*: the process's first step; *warm*: then a new step of the same size "
             f"(Linear({DIM + 1}, {DIM + 1}) layers), so one-time library costs are already paid.",
             "", "| contender | fresh | × jax.jit | warm | × jax.jit |", "|---|---|---|---|---|"]
    for r in rows:
        name = "jax.jit (hand-written, flat)" if r.contender == FLOOR else r.contender
        lines.append(f"| {name} | {_fmt(r.cold)} | {r.cold_ratio:.2f}× | {_fmt(r.warm)} "
                     f"| {r.warm_ratio:.2f}× |")
    return "\n".join(lines)


def plot(sweeps: list["Sweep"], path: str) -> bool:
    """Log-log time per call vs N, a line per contender, floor dashed; False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -e '.[bench]')", file=sys.stderr)
        return False
    fig, axes = plt.subplots(1, len(sweeps), figsize=(6 * len(sweeps), 4.5), squeeze=False)
    for ax, s in zip(axes[0], sweeps):
        for name in available():
            pts = sorted((t.n, t.seconds * 1e3) for t in s.timings if t.contender == name)
            style = {FLOOR: dict(color="black", linestyle="--"),
                     ON_VARS: dict(color="gray", linestyle=":")}.get(name, {})
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name, **style)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N")
        ax.set_ylabel("time per call (ms)")
        ax.set_title(s.workload.title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"time per call vs N (jax {jax.__version__}, flax {flax.__version__}, "
                 f"{jax.default_backend()})", fontsize=11)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------- main

class Sweep(NamedTuple):
    workload: Workload
    timings: list[Timing]


class Results(NamedTuple):
    contenders: list[str]
    sweeps: list[Sweep]
    first_call: list[FirstCall]
    markdown: str


class Settings(NamedTuple):
    rounds: int
    calls: int
    scalar_ns: list[int]
    linear_ns: list[int]
    first_call_repeats: int
    processes: int
    isolated: bool          # each contender in a process of its own (``measure_isolated``)


def settings(a: argparse.Namespace) -> Settings:
    ns = [int(n) for n in a.ns.split(",")] if a.ns else None
    if a.quick:
        return Settings(a.rounds or 3, 5, ns or [10, 100], ns or [10, 100], 1, a.processes or 1,
                        a.isolated)
    # 100 calls per sample at N <= 100 (~1.5 ms of the floor at N = 10): shorter samples were
    # mostly scheduler noise on the 2-core machines here
    return Settings(a.rounds or 21, 100, ns or [10, 100, 1000, 4000], ns or [10, 100, 1000], 5,
                    a.processes or 4, a.isolated)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few rounds, small N")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 21, quick 3)")
    ap.add_argument("--processes", type=int,
                    help="processes per N, see creation_orders (default 4, quick 1)")
    ap.add_argument("--ns", help="comma-separated N for both sweeps (default 10,100,1000[,4000])")
    ap.add_argument("--out", default=os.path.join(_ROOT, "benchmarks", "results", "scaling.md"))
    ap.add_argument("--plot", default=os.path.join(_ROOT, "docs", "scaling.png"))
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--first-call-layers", type=int, default=100)
    ap.add_argument("--no-first-call", action="store_true")
    ap.add_argument("--first-call-child", help=argparse.SUPPRESS)
    ap.add_argument("--sweep-child", help=argparse.SUPPRESS)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--isolated", action="store_true",
                    help="each contender in a process of its own, rounds interleaved across them")
    return ap.parse_args(argv)


def header(s: Settings) -> str:
    return (f"jax {jax.__version__}, flax {flax.__version__}, {jax.default_backend()}, "
            f"{os.cpu_count()} cores; {s.processes} "
            f"{'groups of processes, one per contender' if s.isolated else 'processes'} per N "
            f"(below), "
            f"medians of their {s.rounds} interleaved rounds each × up to {s.calls} calls, "
            f"pooled; the floor is a hand-written `jax.jit` on the flat list of the N arrays, "
            f"donated; `{ON_VARS}` is that step reading them from the Module's Variables and "
            f"writing its outputs back to them.  Unavailable here: "
            f"{', '.join(n for n in (NNX_TREE, NNX_CACHED) if n not in available()) or 'none'}.")


def main(argv=None) -> Results | None:
    a = parse_args(argv)
    if a.first_call_child:
        first_call_child(a.first_call_child, a.first_call_layers)
        return None
    if a.sweep_child:
        sweep_child(a.sweep_child)
        return None
    if a.worker:
        worker_main(a.worker)
        return None
    s = settings(a)
    sweeps = [Sweep(SCALARS, sweep(SCALARS, s.scalar_ns, s)),
              Sweep(LINEARS, sweep(LINEARS, s.linear_ns, s))]
    orders = creation_orders(available(), s.processes)
    parts = [header(s)]
    for sw in sweeps:
        parts += [sweep_table(sw.workload, sw.timings),
                  per_process_table(sw.workload, sw.timings, orders, s.isolated)]
    fc = [] if a.no_first_call else first_calls(a.first_call_layers, s.first_call_repeats)
    if fc:
        parts.append(first_call_table(a.first_call_layers, s.first_call_repeats, fc))
    md = "\n\n".join(parts) + "\n"
    print(md)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        f.write(md)
    if not a.no_plot and plot(sweeps, a.plot):
        print(f"plot: {a.plot}", file=sys.stderr)
    return Results(available(), sweeps, fc, md)


if __name__ == "__main__":
    main()

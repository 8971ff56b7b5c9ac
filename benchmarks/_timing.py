"""Interleaved timing shared by the benchmarks (run.py, scaling.py).

Each round runs every contender once -- k calls, blocking on the last output -- in a new random
order.  With a fixed order, whoever came right after nnx.jit paid for the caches and allocator
state it left.  No collection is forced between samples: tried, it started every sample with cold
caches (a full collection walks the whole heap), which a training loop never sees and which
charged each contender for the size of its working set rather than for its calls (P1 Block:
1.19x paired with it, against 1.07x for the ratio of the medians of the same samples).  Each
contender's last output stays held until its next round, as a loop holds it: when one variable
held whichever contender ran last, a step whose result is one of its Variables' new values
(``scaling.bump``) could donate that value on the first call of a round and not on the others, and
switched between two compiled steps twice per round.

Ratios are paired: the median over rounds of a contender's time over the base's time in the same
round, which cancels the machine's slow drifts (2 shared cores here: a contender's time moves by
up to 2x within one run, the same for all contenders of a round).
"""
import random
import statistics
import time
from typing import Any, Callable

import jax


def interleaved_samples(calls: dict[str, Callable[[], Any]], rounds: int, k: int,
                        seed: int = 0) -> dict[str, list[float]]:
    """Per contender, its time per call in each round."""
    rng = random.Random(seed)
    samples = {name: [] for name in calls}
    order = list(calls.items())
    last = {}  # each contender's last output, held until its next round, as a loop holds it
    for _ in range(rounds):
        rng.shuffle(order)
        for name, call in order:
            seconds, last[name] = timed_calls(call, k, last.pop(name, None))
            samples[name].append(seconds)
    return samples


def timed_calls(call: Callable[[], Any], k: int, out: Any = None) -> tuple[float, Any]:
    """``k`` calls, blocking on the last output: ``(seconds per call, that output)``.  ``out``,
    the previous output, stays held until the first of them returns."""
    t0 = time.perf_counter()
    for _ in range(k):
        out = call()
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / k, out


def paired_ratio(samples: dict[str, list[float]], name: str, base: str) -> float:
    """The median over rounds of ``name``'s time over ``base``'s in the same round."""
    return statistics.median(a / b for a, b in zip(samples[name], samples[base]))

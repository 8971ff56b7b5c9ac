"""Soak test: many hijaxc.jit calls under shape and structure churn; prints cache sizes and RSS.

    python benchmarks/soak.py                  # 10^5 calls per phase (structures: 2,000)
    python benchmarks/soak.py --calls 20000    # shorter

Phases (each with a fresh compiled function):
  models      three Variables of three shapes (256 KiB each), called in turn: every call misses
              the steady-state path (other roots), splits, and hits hijaxc's cache
  reshape     one Variable whose value changes shape every call (the caller swaps the arrays in
              and out, so the Variable holds the only reference and the buffers are donated)
  structures  lists of 1..80 Variables in turn through a cache of max_cache (64): evictions and
              retraces on every call once warm (slow: one compile per call)

Columns: calls so far; len(step.cache); the most jitted variants (donation masks) of one entry;
jax's own cache entries behind them (sum of ``_cache_size()``); traces; RSS (MB) and its growth
since the phase started; mean microseconds per call over the interval.  A leak shows as RSS that
keeps climbing interval after interval; bounded caches show as flat columns.
"""

import argparse
import gc
import os
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import hijaxc  # noqa: E402

SHAPES = [(256, 256), (128, 512), (512, 128)]


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def report(name, step, calls, t0, n_interval, rss0):
    entries = list(step.cache.values())
    masks = max((len(e.jitted) for e in entries), default=0)
    jax_sizes = sum(
        j._cache_size() for e in entries for j in e.jitted.values() if hasattr(j, "_cache_size")
    )
    rss = rss_mb()
    us = (time.perf_counter() - t0) / max(n_interval, 1) * 1e6
    print(
        f"{name:10s} {calls:8d} {len(step.cache):6d} {masks:6d} {jax_sizes:8d} "
        f"{step.stats['traces']:7d} {rss:9.1f} {rss - rss0:+9.1f} {us:9.1f}",
        flush=True,
    )


def header():
    print(
        f"{'phase':10s} {'calls':>8s} {'cache':>6s} {'masks':>6s} {'jaxsigs':>8s} {'traces':>7s} "
        f"{'RSS MB':>9s} {'growth':>9s} {'us/call':>9s}",
        flush=True,
    )


def phase_models(calls, every):
    vs = [hijaxc.Variable(jnp.zeros(s)) for s in SHAPES]
    xs = [jnp.ones(s) for s in SHAPES]

    @hijaxc.jit
    def f(v, x):
        v[...] += x
        return v[...][0, 0]

    for i in range(30):
        f(vs[i % 3], xs[i % 3])
    gc.collect()
    rss0, t0 = rss_mb(), time.perf_counter()
    for i in range(calls):
        out = f(vs[i % 3], xs[i % 3])
        if (i + 1) % every == 0:
            jax.block_until_ready(out)
            report("models", f.step, i + 1, t0, every, rss0)
            t0 = time.perf_counter()
    for k, v in enumerate(vs):
        expected = 30 // 3 + (30 % 3 > k) + len(range((k - 30) % 3, calls, 3))
        assert float(v[...][0, 0]) == expected, (k, float(v[...][0, 0]), expected)


def phase_reshape(calls, every):
    v = hijaxc.Variable(jnp.zeros(SHAPES[0]))
    store = {k: jnp.zeros(s) for k, s in enumerate(SHAPES)}
    xs = [jnp.ones(s) for s in SHAPES]

    @hijaxc.jit
    def f(v, x):
        v[...] += x
        return v[...][0, 0]

    def call(i):
        k = i % 3
        v.value = store.pop(k)
        out = f(v, xs[k])
        store[k] = v.get_raw_value()
        return out

    for i in range(30):
        call(i)
    gc.collect()
    rss0, t0 = rss_mb(), time.perf_counter()
    for i in range(30, 30 + calls):
        out = call(i)
        if (i - 29) % every == 0:
            jax.block_until_ready(out)
            report("reshape", f.step, i - 29, t0, every, rss0)
            t0 = time.perf_counter()
    for k in range(3):
        assert float(store[k][0, 0]) == len(range(k, 30 + calls, 3))


def phase_structures(calls, every, n_structures=80):
    @hijaxc.jit
    def f(vs, x):
        for v in vs:
            v[...] += x
        return len(vs)

    lists = [
        [hijaxc.Variable(jnp.zeros(1024)) for _ in range(n)] for n in range(1, n_structures + 1)
    ]
    x = jnp.ones(1024)
    for i in range(n_structures):
        f(lists[i], x)
    gc.collect()
    rss0, t0 = rss_mb(), time.perf_counter()
    for i in range(calls):
        f(lists[i % n_structures], x)
        if (i + 1) % every == 0:
            report("structures", f.step, i + 1, t0, every, rss0)
            t0 = time.perf_counter()
    assert len(f.step.cache) <= f.step.max_cache


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=100_000)
    p.add_argument("--structure-calls", type=int, default=2_000)
    p.add_argument("--phases", default="models,reshape,structures")
    a = p.parse_args()
    print(
        f"jax {jax.__version__}, hijaxc {hijaxc.__version__}, pid {os.getpid()}, "
        f"start RSS {rss_mb():.1f} MB",
        flush=True,
    )
    header()
    t = time.perf_counter()
    for name in a.phases.split(","):
        if name == "models":
            phase_models(a.calls, max(a.calls // 10, 1))
        elif name == "reshape":
            phase_reshape(a.calls, max(a.calls // 10, 1))
        elif name == "structures":
            phase_structures(a.structure_calls, max(a.structure_calls // 10, 1))
        else:
            raise SystemExit(f"unknown phase {name!r}")
    print(f"done in {time.perf_counter() - t:.0f} s, end RSS {rss_mb():.1f} MB", flush=True)


if __name__ == "__main__":
    main()

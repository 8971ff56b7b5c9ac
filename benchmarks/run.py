"""hijaxc benchmarks (P1-P5), one interleaved run, medians and paired ratios (``_timing.py``).

    python benchmarks/run.py            # all
    python benchmarks/run.py --quick    # fewer repetitions

P1: steady-state time per training step: hijaxc.jit vs the hand-written flat-leaf jax.jit step
    (state as a flat list of arrays, donated), nnx.jit and nnx.cached_partial (where flax has it),
    on the seed's Block (small) and 32 Blocks (deep).
P2: transform time (parse -> analyse -> rewrite -> load) per seed function.
P3: first call (trace + compile) vs jax.jit of the hand-written step.
P4: peak RSS of a >= 1 GB (params + Adam state) training step vs the hand-written donated step,
    each in its own subprocess.
P5: jaxpr equation count of the generated step vs the hand-written step.
"""

import argparse
import inspect
import os
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
sys.path[:0] = [_ROOT, _HERE, os.path.join(_ROOT, "examples")]
from _compat import make_optimizer, optimizer_update  # noqa: E402  (examples/_compat.py)
from _timing import interleaved_samples, paired_ratio  # noqa: E402  (benchmarks/_timing.py)

import hijaxc  # noqa: E402

# flax 0.11+: BatchNorm updates after nnx.merge inside grad inside jit need copy=True (native)
MERGE_KW = {"copy": True} if "copy" in inspect.signature(nnx.merge).parameters else {}


class Linear(nnx.Module):
    def __init__(self, din, dout, rngs):
        self.kernel = nnx.Param(jax.random.normal(rngs.params(), (din, dout)) * 0.1)

    def __call__(self, x):
        return x @ self.kernel


class Block(nnx.Module):
    def __init__(self, din, dmid, dout, rngs):
        self.linear = Linear(din, dmid, rngs=rngs)
        self.bn = nnx.BatchNorm(dmid, rngs=rngs)
        self.dropout = nnx.Dropout(0.1, rngs=rngs)
        self.linear_out = Linear(dmid, dout, rngs=rngs)

    def __call__(self, x):
        x = nnx.gelu(self.dropout(self.bn(self.linear(x))))
        return self.linear_out(x)


class Deep(nnx.Module):
    def __init__(self, n, d, rngs):
        self.blocks = (
            nnx.List([Block(d, d, d, rngs) for _ in range(n)])
            if hasattr(nnx, "List")
            else [Block(d, d, d, rngs) for _ in range(n)]
        )

    def __call__(self, x):
        for b in self.blocks:
            x = b(x)
        return x


def make(kind):
    rngs = nnx.Rngs(0)
    if kind == "small":
        model, din, dout = Block(2, 64, 3, rngs), 2, 3
    else:
        model, din, dout = Deep(32, 16, rngs), 16, 16
    opt = make_optimizer(model, optax.adam(1e-3))
    x, y = jnp.ones((10, din)), jnp.ones((10, dout))
    return model, opt, x, y


def loss_and_update(model, optimizer, x, y):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_fn(params):
        m = nnx.merge(graphdef, params, rest, **MERGE_KW)
        return ((m(x) - y) ** 2).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    optimizer_update(optimizer, model, grads)
    return loss


@hijaxc.jit
def hijaxc_step(model, optimizer, x, y):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_fn(params):
        m = nnx.merge(graphdef, params, rest, **MERGE_KW)
        return ((m(x) - y) ** 2).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    optimizer_update(optimizer, model, grads)
    return loss


def flat_step_factory(model, opt):
    """The hand-written functional step: state as a flat list of arrays, donated."""
    graphdef, state = nnx.split((model, opt))
    leaves, treedef = jax.tree.flatten(state)

    @functools.partial(jax.jit, donate_argnums=0)
    def step(leaves, x, y):
        m, o = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))
        loss = loss_and_update(m, o, x, y)
        _, new_state = nnx.split((m, o))
        return jax.tree.leaves(new_state), loss

    return step, leaves


import functools  # noqa: E402


def bench_p1(kind, reps, inner):
    model, opt, x, y = make(kind)
    contenders = {}
    step, leaves = flat_step_factory(*make(kind)[:2])
    box = {"leaves": leaves}

    def flat():
        box["leaves"], loss = step(box["leaves"], x, y)
        return loss

    contenders["flat jax.jit"] = flat
    m1, o1, _, _ = make(kind)
    contenders["hijaxc.jit"] = lambda: hijaxc_step(m1, o1, x, y)
    m2, o2, _, _ = make(kind)
    nnx_step = nnx.jit(loss_and_update)
    contenders["nnx.jit"] = lambda: nnx_step(m2, o2, x, y)
    if hasattr(nnx, "cached_partial"):
        m3, o3, _, _ = make(kind)
        cached = nnx.cached_partial(nnx_step, m3, o3)
        contenders["nnx.cached_partial"] = lambda: cached(x, y)
    for f in contenders.values():  # compile + warm up
        for _ in range(3):
            out = f()
        jax.block_until_ready(out)
    samples = interleaved_samples(contenders, reps, inner)
    n_leaves = len(jax.tree.leaves(nnx.state((model, opt))))
    return samples, n_leaves


def bench_p2():
    import examples_seed_functions as seeds  # noqa: F401

    return seeds


def seed_functions():
    src = """
import jax, jax.numpy as jnp
from flax import nnx
def inc(v):
    v[...] += 1
def inc_and_double(v):
    v['a'] += 1
    v['b'] *= 2
def linear(x, w, metrics):
    y = x @ w
    metrics['y_mean'] = jnp.mean(y)
    return y
def train_step(model, optimizer, x, y):
    graphdef, params, nondiff = nnx.split(model, nnx.Param, ...)
    def loss_fn(params):
        model = nnx.merge(graphdef, params, nondiff)
        return ((model(x) - y) ** 2).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    optimizer.update(model, grads)
    return loss
def scan_layers(x, block_stack):
    def scan_fn(x, block):
        x = block(x)
        return x, None
    y, _ = jax.lax.scan(scan_fn, x, block_stack)
    return y
def create_model(rngs):
    return Block(2, 64, 3, rngs=rngs)
def g(has_shared):
    has_shared.a[...] = 5
def h(graphdef, state):
    obj = nnx.merge(graphdef, state)
    obj.a[...] += 10
"""
    import importlib.util
    import tempfile

    d = tempfile.mkdtemp()
    path = os.path.join(d, "seed_functions.py")
    with open(path, "w") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location("seed_functions", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, [
        "inc",
        "inc_and_double",
        "linear",
        "train_step",
        "scan_layers",
        "create_model",
        "g",
        "h",
    ]


def p2_transform_ms():
    from hijaxc import api, cache

    mod, names = seed_functions()
    out = {}
    for n in names:
        fn = getattr(mod, n)
        samples = []
        for _ in range(20):
            cache.clear()
            t0 = time.perf_counter()
            api.transform(fn)
            samples.append(time.perf_counter() - t0)
        out[n] = statistics.median(samples) * 1e3
    return out


def p3_first_call(kind):
    model, opt, x, y = make(kind)
    step, leaves = flat_step_factory(*make(kind)[:2])
    t0 = time.perf_counter()
    jax.block_until_ready(step(leaves, x, y))
    t_flat = time.perf_counter() - t0

    @hijaxc.jit
    def fresh_step(model, optimizer, x, y):
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def loss_fn(params):
            m = nnx.merge(graphdef, params, rest, **MERGE_KW)
            return ((m(x) - y) ** 2).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        optimizer_update(optimizer, model, grads)
        return loss

    t0 = time.perf_counter()
    jax.block_until_ready(fresh_step(model, opt, x, y))
    t_hx = time.perf_counter() - t0
    return t_flat, t_hx


def p5_eqns(kind):
    model, opt, x, y = make(kind)
    step, leaves = flat_step_factory(*make(kind)[:2])
    flat = jax.make_jaxpr(step)(leaves, x, y)
    hx = hijaxc.make_jaxpr(hijaxc_step)(model, opt, x, y)

    def count(j):
        return (
            len(j.jaxpr.eqns[0].params["jaxpr"].jaxpr.eqns)
            if len(j.jaxpr.eqns) == 1 and "jaxpr" in j.jaxpr.eqns[0].params
            else len(j.jaxpr.eqns)
        )

    return count(flat), count(hx)


P4_CHILD = r"""
import resource, sys, functools
import jax, jax.numpy as jnp, optax
sys.path.insert(0, {root!r})
import hijaxc
mode = sys.argv[1]
n, d = 16, 2048            # 16 layers of 2048x2048 float32 = 268 MB params, x3 with Adam = ~0.8 GB
class P:
    pass
params = [hijaxc.Variable(jnp.zeros((d, d), jnp.float32) + 0.01) for _ in range(n)]
tx = optax.adam(1e-3)
opt_state = [hijaxc.Variable(s) for s in jax.tree.leaves(tx.init([p[...] for p in params]))]
x = jnp.ones((8, d))
def loss(ws, x):
    for w in ws:
        x = jnp.tanh(x @ w)
    return (x ** 2).mean()
treedef = jax.tree.structure(tx.init([p[...] for p in params]))
if mode == "flat":
    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(ws, st, x):
        g = jax.grad(loss)(ws, x)
        upd, st2 = tx.update(g, jax.tree.unflatten(treedef, st), ws)
        return optax.apply_updates(ws, upd), jax.tree.leaves(st2)
    ws = [p[...] for p in params]; st = [s[...] for s in opt_state]
    del params, opt_state
    for _ in range(3):
        ws, st = step(ws, st, x)
    jax.block_until_ready(ws)
else:
    @hijaxc.jit
    def step(x):
        ws = [p[...] for p in params]
        g = jax.grad(loss)(ws, x)
        upd, st2 = tx.update(g, jax.tree.unflatten(treedef, [s[...] for s in opt_state]), ws)
        new = optax.apply_updates(ws, upd)
        for p, w in zip(params, new):
            p[...] = w
        for s, v in zip(opt_state, jax.tree.leaves(st2)):
            s[...] = v
    for _ in range(3):
        step(x)
    jax.block_until_ready(params[0][...])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def p4_peak_rss():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = P4_CHILD.format(root=root)
    out = {}
    # a real file, not ``python -c``: hijaxc compiles the step from its source
    with tempfile.NamedTemporaryFile("w", suffix="_p4_child.py", delete=False) as f:
        f.write(code)
    try:
        for mode in ("flat", "hijaxc"):
            out[mode] = _p4_run(f.name, mode)
    finally:
        os.unlink(f.name)
    return out


def _p4_run(path, mode):
    r = subprocess.run([sys.executable, path, mode], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stderr[-2000:], file=sys.stderr)
        return float("nan")
    return float(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-p4", action="store_true")
    a = ap.parse_args()
    reps, inner = (5, 10) if a.quick else (15, 20)
    print(
        f"jax {jax.__version__}, flax {nnx.__name__ and __import__('flax').__version__}, "
        f"{os.cpu_count()} cores; medians of {reps} interleaved rounds x {inner} calls "
        "(random order per round; ratios: median of the per-round ratios)\n"
    )
    print("P1  steady-state time per training step")
    print(f"{'model':8} {'leaves':>6} {'contender':20} {'ms/step':>9} {'vs flat':>8}")
    for kind in ("small", "deep"):
        samples, n = bench_p1(kind, reps, inner if kind == "small" else max(inner // 4, 3))
        for k, v in samples.items():
            ratio = paired_ratio(samples, k, "flat jax.jit")
            print(f"{kind:8} {n:6d} {k:20} {statistics.median(v) * 1e3:9.3f} {ratio:7.2f}x")
    print("\nP2  transform time (parse -> load), median of 20")
    for n, ms in p2_transform_ms().items():
        print(f"    {n:16} {ms:6.2f} ms")
    print("\nP3  first call (trace + compile)")
    for kind in ("small", "deep"):
        t_flat, t_hx = p3_first_call(kind)
        print(
            f"    {kind:6} flat jax.jit {t_flat:7.3f} s   hijaxc.jit {t_hx:7.3f} s   "
            f"ratio {t_hx / t_flat:5.2f}x"
        )
    print("\nP5  jaxpr equations of the step")
    for kind in ("small", "deep"):
        a_, b_ = p5_eqns(kind)
        print(f"    {kind:6} flat {a_:6d}   hijaxc {b_:6d}   ratio {b_ / a_:5.2f}x")
    if not a.skip_p4:
        print("\nP4  peak RSS of a ~0.8 GB params + Adam step (subprocess each)")
        r = p4_peak_rss()
        print(
            f"    flat donated {r['flat']:8.0f} MB   hijaxc {r['hijaxc']:8.0f} MB   "
            f"ratio {r['hijaxc'] / r['flat']:5.2f}x"
        )


if __name__ == "__main__":
    main()

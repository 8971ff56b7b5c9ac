"""Smoke tests of the benchmark scripts: they run and report every contender with finite ratios.

Times are never asserted (the machines are shared and noisy)."""
import importlib.util
import math
import os
import sys
import weakref

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_scaling():
    path = os.path.join(ROOT, "benchmarks", "scaling.py")
    spec = importlib.util.spec_from_file_location("hijaxc_bench_scaling", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_scaling_quick(tmp_path):
    scaling = _load_scaling()
    out = tmp_path / "scaling.md"
    res = scaling.main(["--quick", "--ns", "10", "--rounds", "2", "--no-plot",
                        "--first-call-layers", "3", "--out", str(out)])
    assert res.contenders[:4] == [scaling.FLOOR, scaling.ON_VARS, scaling.HIJAXC,
                                  scaling.NNX_JIT]
    assert out.read_text() == res.markdown
    table_rows = [line.split(" | ")[0].lstrip("| ") for line in res.markdown.splitlines()]
    for sw in res.sweeps:
        assert {(t.contender, t.n) for t in sw.timings} == {(c, 10) for c in res.contenders}
        assert all(math.isfinite(t.ratio) and t.ratio > 0 for t in sw.timings), sw.timings
    for name in res.contenders:
        assert table_rows.count(name) >= len(res.sweeps), name  # + the first-call table
    assert f"| {scaling.HIJAXC} × jax.jit on Variables | " in res.markdown
    # the first call on Variables is the floor's: not measured twice
    assert {r.contender for r in res.first_call} == set(res.contenders) - {scaling.ON_VARS}
    assert all(math.isfinite(r.cold_ratio) and math.isfinite(r.warm_ratio)
               for r in res.first_call), res.first_call


def test_scaling_plot_skipped_without_matplotlib(tmp_path, monkeypatch, capsys):
    scaling = _load_scaling()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    assert scaling.plot([], str(tmp_path / "p.png")) is False
    assert "matplotlib is not installed" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()


def _load_timing():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        return importlib.import_module("_timing")
    finally:
        sys.path.pop(0)


def test_interleaved_samples_hold_each_contenders_last_output():
    """Between two of its rounds a contender's last output stays held, as a training loop holds
    it: else a step whose result aliases its state (``bump`` returns a Variable's new value)
    donates differently on the first call of each round and switches compiled steps twice per
    round (measured: 18 switches in 10 rounds before)."""
    timing = _load_timing()

    class Out:
        pass

    dropped = []

    def contender(name):
        last = []

        def call():
            if last and last[0]() is None:
                dropped.append(name)
            out = Out()
            last[:] = [weakref.ref(out)]
            return out
        return call

    samples = timing.interleaved_samples({"a": contender("a"), "b": contender("b")}, rounds=6, k=3)
    assert [len(v) for v in samples.values()] == [6, 6]
    assert dropped == []


def test_scaling_isolated_quick():
    """``--isolated``: each contender in a process of its own, every one timed and checked."""
    scaling = _load_scaling()
    timings = scaling.time_one_n(scaling.SCALARS, 10, rounds=2, calls=5, processes=1,
                                 isolated=True)
    assert {t.contender for t in timings} == set(scaling.available())
    assert all(math.isfinite(t.ratio) and t.ratio > 0 for t in timings), timings

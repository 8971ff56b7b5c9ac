"""The examples in examples/ run, and reproduce the seeds' results (shared/seeds/000 and 001).

Each example module is imported by path (never run as ``__main__``); every cell function is tested
on its own so that one broken cell does not hide the others, and ``main()`` is run end to end.
``quickstart.py`` is also run once as a script.
"""

import importlib.util
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import hijaxc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def _load(name):
    path = os.path.join(EXAMPLES, f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"hijaxc_examples_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def quickstart():
    return _load("quickstart")


@pytest.fixture(scope="module")
def guide():
    return _load("seed_hijax_guide")


@pytest.fixture(scope="module")
def refs():
    return _load("seed_array_refs")


def _decreasing(losses):
    return all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < losses[0]


def _value(v):
    try:
        return v[...]
    except TypeError:  # flax 0.10 VariableState
        return v.value


def _check_block(model, din, dmid, dout):
    assert tuple(_value(model.linear.kernel).shape) == (din, dmid)
    assert tuple(_value(model.linear_out.kernel).shape) == (dmid, dout)
    assert tuple(_value(model.bn.mean).shape) == (dmid,)
    assert tuple(_value(model.bn.scale).shape) == (dmid,)


# -------------------------------------------------------------------------------------------------
# quickstart.py
# -------------------------------------------------------------------------------------------------
def test_quickstart_main(quickstart):
    losses, model = quickstart.main()
    assert len(losses) == 5 and all(isinstance(x, float) for x in losses)
    assert _decreasing(losses), losses
    _check_block(model, 2, 64, 3)


def test_quickstart_script():
    r = subprocess.run(
        [sys.executable, os.path.join("examples", "quickstart.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    assert "loss" in r.stdout
    assert "def " in r.stdout  # hijaxc.show's generated code


# -------------------------------------------------------------------------------------------------
# seed 000: the Hijax guide
# -------------------------------------------------------------------------------------------------
def test_guide_first_train_step_over_globals(guide):
    losses = guide.first_train_step()
    assert len(losses) == 3
    assert _decreasing(losses), losses
    # the global optimizer's step counter advanced: the closure's state was written back
    assert int(_value(guide.optimizer.step)) == 3


def test_guide_inc(guide):
    before, after, jaxpr = guide.state_propagation()
    assert (before, after) == (0, 1)
    assert "add" in jaxpr


def test_guide_inc_and_double(guide):
    assert guide.pytree_values() == {"a": 1, "b": 4}


def test_guide_dynamic_state_structure(guide):
    keys, metrics_y_mean, y_mean = guide.dynamic_state_structure()
    assert keys == ["y_mean"]
    np.testing.assert_allclose(metrics_y_mean, y_mean, rtol=1e-6)


def test_guide_default_mode(guide):
    assert guide.default_mode() is True


def test_guide_mutability(guide):
    error, value = guide.mutability()
    assert isinstance(error, hijaxc.ImmutableVariableError)
    assert "seed_hijax_guide.py:" in str(error)  # names the user's file:line
    assert value == 0


def test_guide_ref_support(guide):
    assert guide.ref_support() == {"raw_is_ref": True, "immutable_ref": False, "mutable_ref": True}


def test_guide_training_loop(guide):
    losses, model = guide.training_loop()
    assert _decreasing(losses), losses
    _check_block(model, 2, 64, 3)


def test_guide_scan_over_layers(guide):
    y, y_ref, kernel_shape = guide.scan_over_layers()
    assert kernel_shape == (8, 2, 64)
    assert y.shape == (3, 2)
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), rtol=1e-4, atol=1e-4)


def test_guide_mutable_outputs(guide):
    model = guide.mutable_outputs()
    assert isinstance(model, guide.Block)
    _check_block(model, 2, 64, 3)
    model = guide.mutable_outputs_lojax()
    assert isinstance(model, guide.Block)
    _check_block(model, 2, 64, 3)
    assert model.linear.kernel.hijax


def test_guide_aliasing(guide):
    r = guide.aliasing()
    assert r["f"] is None
    assert r["g"] is None
    assert r["g_ab"] == (5, 5, True)  # the write through `a` shows through `b`: one object
    assert r["duplicates"] == [[("a",), ("b",)]]
    # h(graphdef, state) behaves as it does eagerly: flax 0.11+ split shares the Variables
    assert r["h_ab"] == ((5, 5) if r["split_shares_variables"] else (0, 0))


def test_guide_main(guide):
    before = tuple(hijaxc.var_defaults())
    r = guide.main()
    assert tuple(hijaxc.var_defaults()) == before
    assert (r["inc_before"], r["inc_after"]) == (0, 1)
    assert r["inc_and_double"] == {"a": 1, "b": 4}
    assert "y_mean" in r["metrics_keys"]
    assert isinstance(r["immutable_error"], hijaxc.ImmutableVariableError)
    assert _decreasing(r["first_losses"]) and _decreasing(r["losses"])
    _check_block(r["model"], 2, 64, 3)
    np.testing.assert_allclose(
        np.asarray(r["scan_y"]), np.asarray(r["scan_y_ref"]), rtol=1e-4, atol=1e-4
    )
    _check_block(r["created_model"], 2, 64, 3)
    assert r["aliasing"]["g_ab"] == (5, 5, True)
    assert r["aliasing"]["duplicates"] == [[("a",), ("b",)]]


# -------------------------------------------------------------------------------------------------
# seed 001: Array Refs
# -------------------------------------------------------------------------------------------------
def test_refs_increment(refs):
    before, after, hlo = refs.variable_refs()
    assert before == [1, 2, 3]
    assert after == [2, 3, 4]
    assert "stablehlo.add" in hlo or "add" in hlo


def test_refs_use_hijax(refs):
    assert refs.use_hijax_flag() is True


def test_refs_changing_status(refs):
    assert refs.changing_status() == (True, False)


def test_refs_training_loop(refs):
    losses, model = refs.training_loop()
    assert _decreasing(losses), losses
    _check_block(model, 2, 64, 3)


def test_refs_scan_over_layers(refs):
    r = refs.scan_over_layers()
    assert r["kernel_shape"] == (8, 2, 64)
    assert r["y"].shape == (3, 2)
    # training mode: batch statistics and per-layer dropout draws, threaded through the scan
    np.testing.assert_allclose(np.asarray(r["y"]), np.asarray(r["y_ref"]), rtol=1e-3, atol=1e-3)
    assert r["bn_mean"].shape == (8, 64)
    assert bool(jnp.all(jnp.any(r["bn_mean"] != 0, axis=-1)))  # every layer's stats updated
    np.testing.assert_allclose(
        np.asarray(r["bn_mean"]), np.asarray(r["bn_mean_ref"]), rtol=1e-3, atol=1e-4
    )


def test_refs_mutable_array_outputs(refs):
    model, model_lojax = refs.mutable_array_outputs()
    for m in (model, model_lojax):
        assert isinstance(m, refs.Block)
        _check_block(m, 2, 64, 3)
        assert tuple(_value(m.linear.bias).shape) == (64,)
    assert model_lojax.linear.kernel.hijax


def test_refs_aliasing(refs):
    r = refs.aliasing()
    assert r["f"] is None
    assert r["g_vars"] is None and r["g_mods"] is None
    assert r["strict"].startswith("AliasingError")
    assert r["dup_vars"] == [[("a",), ("c",)]]
    assert r["dup_mods"] == [[("d",), ("f",)]]
    if r["split_shares_variables"]:  # flax 0.11+: as eagerly, the write reaches the object
        assert r["h_ac"] == (10, 10) and r["h_state_a"] == 10
    else:  # flax 0.10: split copies into VariableStates; eagerly nothing reaches the object
        assert r["h_ac"] == (0, 0) and r["h_state_a"] == 0
    assert r["h_b"] == 1


def test_refs_main(refs):
    before = tuple(hijaxc.var_defaults())
    r = refs.main()
    assert tuple(hijaxc.var_defaults()) == before
    assert r["inc_after"] == [2, 3, 4]
    assert (r["to_hijax_flag"], r["to_lojax_flag"]) == (True, False)
    assert _decreasing(r["losses"])
    np.testing.assert_allclose(
        np.asarray(r["scan"]["y"]), np.asarray(r["scan"]["y_ref"]), rtol=1e-3, atol=1e-3
    )
    _check_block(r["created_model"], 2, 64, 3)
    assert r["aliasing"]["dup_vars"] == [[("a",), ("c",)]]
    assert r["aliasing"]["dup_mods"] == [[("d",), ("f",)]]


# -------------------------------------------------------------------------------------------------
# stateful_helpers.py
# -------------------------------------------------------------------------------------------------
def test_stateful_helpers_main():
    helpers = _load("stateful_helpers")
    losses, model = helpers.main(steps=4, verbose=False)
    assert _decreasing(losses), losses
    assert int(helpers.STEP[...]) == 4  # the helper's module global, bumped every step
    np.testing.assert_allclose(float(helpers.METRICS["loss"][...]), losses[-1], rtol=1e-6)
    assert float(helpers.METRICS["grad_norm"][...]) > 0
    assert int(model.layers_run[...]) == 4 * helpers.N_LAYERS  # written inside a method's scan
    assert helpers.train_step.step.stats["fast_calls"] >= 2  # steady state after the first call

"""Scaling out (S11 beyond one process): examples/multiprocess_training.py on JAX's multi-controller
runtime (2 processes x 4 CPU devices on localhost) and examples/checkpointing.py (orbax save and
restore of sharded state on 8 CPU devices).

Every example run is a subprocess in its own session, killed with its whole process group at a
deadline, so no test can hang; the multi-process example's launcher also stops its workers as soon
as one fails (tested below)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MULTIPROCESS = os.path.join(ROOT, "examples", "multiprocess_training.py")
CHECKPOINTING = os.path.join(ROOT, "examples", "checkpointing.py")
BUDGET_S = 90  # per test, all subprocesses together


def run(cmd, timeout, env=None):
    """(returncode, stdout, stderr, seconds); on timeout the whole process group is killed and
    the test fails."""
    t0 = time.monotonic()
    p = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = p.communicate(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        _kill_workers(out)
        pytest.fail(
            f"{os.path.basename(cmd[1])} {' '.join(cmd[2:])}: still running after "
            f"{timeout:.0f} s\n{out[-2000:]}\n{err[-3000:]}"
        )
    return p.returncode, out, err, time.monotonic() - t0


def _workers(out):
    line = next((ln for ln in out.splitlines() if ln.startswith("workers: ")), "")
    return [int(w.split(":")[1]) for w in line.split()[1:]]


def _kill_workers(out):
    pids = _workers(out)
    if pids:  # the launcher's workers form one process group, led by the first
        try:
            os.killpg(pids[0], signal.SIGKILL)
        except ProcessLookupError:
            pass


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _result(out):
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


# jaxlib 0.4.38's gloo CPU collectives intermittently cross two collectives' messages when a
# process holds several devices ("gloo::EnforceNotMet ... op.preamble.length <= op.nbytes"): about
# one run in three of the 2 x 4 example, with nnx.jit alone as often as with hijaxc.jit; never on
# jaxlib 0.7.0 or 0.10.2 (0 of 10 runs each).  With one device per process each process issues its
# collectives one at a time, and no run failed.  So on that failure, and only on it, the test
# reruns the same program as 8 processes x 1 device and checks it the same way.
GLOO_CROSSED_MESSAGES = "gloo::EnforceNotMet"


def _launch(tmp_path, processes, deadline):
    npz = str(tmp_path / f"state_{processes}.npz")
    left = deadline - time.monotonic()
    rc, out, err, secs = run(
        [
            sys.executable,
            MULTIPROCESS,
            "--processes",
            str(processes),
            "--save-state",
            npz,
            "--timeout",
            str(max(left - 5, 1)),
        ],
        timeout=left,
    )
    assert _workers(out) and not any(_alive(pid) for pid in _workers(out))
    if rc != 0 and GLOO_CROSSED_MESSAGES in err and processes < 8:
        warnings.warn(f"gloo: crossed messages, {processes} processes; again with 8", stacklevel=2)
        return _launch(tmp_path, 8, deadline)
    assert rc == 0, out[-3000:] + err[-5000:]
    return _result(out), dict(np.load(npz)), secs


def test_multiprocess_training_matches_nnx_jit_and_one_process(tmp_path):
    deadline = time.monotonic() + BUDGET_S
    two, state2, secs2 = _launch(tmp_path, 2, deadline)
    one, state1, secs1 = _launch(tmp_path, 1, deadline)
    assert two["processes"] in (2, 8) and one["processes"] == 1

    # the same program under nnx.jit, in the same two processes
    ours, ref = two["hijaxc"], two["nnx_jit"]
    np.testing.assert_allclose(ours["losses"], ref["losses"], rtol=1e-6)
    np.testing.assert_allclose(ours["checksum"], ref["checksum"], rtol=1e-9)
    assert ours["losses"][-1] < ours["losses"][0]

    # every Variable (parameters, BatchNorm statistics, Adam state, step) kept its sharding
    for r in (two, one):
        assert (
            r["hijaxc"]["changed"] == [] and r["hijaxc"]["kept"] == r["hijaxc"]["n_variables"] >= 19
        )
    specs = ours["specs"]
    assert "'model'" in specs["linear.kernel"] and "'model'" in specs["bn.mean"], specs

    # one process with 8 devices: the same values, up to float rounding
    np.testing.assert_allclose(ours["losses"], one["hijaxc"]["losses"], rtol=1e-5)
    np.testing.assert_allclose(ours["checksum"], one["hijaxc"]["checksum"], rtol=1e-6)
    assert sorted(state2) == sorted(state1)
    for k in state2:
        np.testing.assert_allclose(state2[k], state1[k], rtol=1e-5, atol=1e-6, err_msg=k)
    print(f"{two['processes']} processes: {secs2:.1f} s, 1 process: {secs1:.1f} s")


def test_multiprocess_failure_stops_every_process():
    t0 = time.monotonic()
    rc, out, err, _ = run(
        [sys.executable, MULTIPROCESS, "--fail-process", "1", "--timeout", "60"], timeout=BUDGET_S
    )
    assert rc != 0
    assert "failing on purpose" in err and "stopping the others" in err, err[-3000:]
    pids = _workers(out)
    assert len(pids) == 2 and not any(_alive(pid) for pid in pids)
    assert time.monotonic() - t0 < 60  # not the launcher's time limit: the failure was seen


def test_import_hijaxc_leaves_the_backend_alone():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = (
        "import jax, hijaxc\n"
        f"jax.distributed.initialize('127.0.0.1:{port}', num_processes=1, process_id=0)\n"
        "print('ok')\n"
    )
    rc, out, err, _ = run(
        [sys.executable, "-c", code], timeout=60, env=dict(os.environ, JAX_PLATFORMS="cpu")
    )
    assert rc == 0 and out.strip().endswith("ok"), err[-2000:]


def test_checkpoint_resume_equals_uninterrupted_run():
    pytest.importorskip("orbax.checkpoint")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    rc, out, err, _ = run(
        [sys.executable, CHECKPOINTING, "--steps", "3", "3"], timeout=BUDGET_S, env=env
    )
    assert rc == 0, out[-3000:] + err[-5000:]
    assert "same losses: True" in out
    assert "same final state: True" in out
    assert "restored Variables have the saved shardings: True" in out
    assert "kept while training on: True" in out
    assert "restored linear.kernel" in out and "'model')" in out

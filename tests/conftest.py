"""Test configuration: ``tests/`` on ``sys.path`` (for the helper modules the tests import:
``oracle``, ``eager_models``, ``fault_harness``, ``user_code``), a fixture that puts hijaxc's
mode flags back after every test, and the ``controlflow`` marker (S7 tests; being written now)."""

import os
import sys

import pytest

import hijaxc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # `import oracle` from any cwd


@pytest.fixture(autouse=True)
def _restore_var_defaults():
    before = tuple(hijaxc.var_defaults())
    yield
    hijaxc.var_defaults(hijax=before[0], ref=before[1])


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "controlflow: S7 control flow / transforms inside hijaxc.jit (being written now)"
    )

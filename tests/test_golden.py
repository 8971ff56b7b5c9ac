"""Golden files pin the generated code (``hijaxc.show``) for tests/golden_corpus.py.

Update after an intended change: ``HIJAXC_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py``,
then review the diff of tests/golden/ like any other code change."""
import ast
import os
import re

import golden_corpus
import pytest

import hijaxc
from hijaxc import api

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden")
UPDATE = os.environ.get("HIJAXC_UPDATE_GOLDEN") == "1"


def _normalise(text):
    return text.replace(golden_corpus.__file__, "golden_corpus.py")


def _check_golden(name, text):
    path = os.path.join(GOLDEN, f"{name}.py")
    if UPDATE or not os.path.exists(path):
        if not UPDATE:
            pytest.fail(f"no golden file for {name}; run with HIJAXC_UPDATE_GOLDEN=1")
        with open(path, "w") as f:
            f.write(text)
    with open(path) as f:
        assert text == f.read(), f"generated code of {name} changed; see HIJAXC_UPDATE_GOLDEN"


@pytest.mark.parametrize("name", golden_corpus.NAMES)
def test_generated_code_matches_golden(name):
    text = _normalise(hijaxc.show(getattr(golden_corpus, name)))
    ast.parse(text)  # valid Python
    _check_golden(name, text)


@pytest.mark.parametrize("name", sorted(golden_corpus.CALLEES))
def test_converted_callee_matches_golden(name):
    text = _normalise(api.converted_source(golden_corpus.CALLEES[name]))
    ast.parse(text)
    _check_golden(name, text)


@pytest.mark.parametrize("name", sorted(golden_corpus.FALLBACKS))
def test_no_source_fallback_matches_golden(name):
    with pytest.warns(UserWarning, match="falling back to threading arguments and closure cells"):
        text = hijaxc.show(golden_corpus.FALLBACKS[name])
    _check_golden(name, text)


def test_every_user_line_is_commented_with_its_origin():
    for name in golden_corpus.NAMES:
        text = _normalise(hijaxc.show(getattr(golden_corpus, name)))
        body = re.split(r"\n +def \S+__pure_step\(", text)[0]
        for line in body.splitlines()[3:]:
            if line.strip() and not line.strip().startswith("#") and "def __hx_factory" not in line:
                assert "# golden_corpus.py:" in line, (name, line)

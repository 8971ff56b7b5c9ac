"""Golden files pin the generated code (``hijaxc.show``) for tests/golden_corpus.py.

Update after an intended change: ``HIJAXC_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py``,
then review the diff of tests/golden/ like any other code change."""
import ast
import os

import pytest

import golden_corpus
import hijaxc

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden")
UPDATE = os.environ.get("HIJAXC_UPDATE_GOLDEN") == "1"


def _normalise(text):
    return text.replace(golden_corpus.__file__, "golden_corpus.py")


@pytest.mark.parametrize("name", golden_corpus.NAMES)
def test_generated_code_matches_golden(name):
    fn = getattr(golden_corpus, name)
    text = _normalise(hijaxc.show(fn))
    ast.parse(text)  # valid Python
    path = os.path.join(GOLDEN, f"{name}.py")
    if UPDATE or not os.path.exists(path):
        if not UPDATE:
            pytest.fail(f"no golden file for {name}; run with HIJAXC_UPDATE_GOLDEN=1")
        with open(path, "w") as f:
            f.write(text)
    with open(path) as f:
        assert text == f.read(), f"generated code of {name} changed; see HIJAXC_UPDATE_GOLDEN"


def test_every_user_line_is_commented_with_its_origin():
    for name in golden_corpus.NAMES:
        text = _normalise(hijaxc.show(getattr(golden_corpus, name)))
        body = text.split(f"def {name}__pure_step")[0]
        for line in body.splitlines()[3:]:
            if line.strip() and not line.strip().startswith("#") and "def __hx_factory" not in line:
                assert "# golden_corpus.py:" in line, (name, line)

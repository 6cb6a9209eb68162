"""Every case of the bad-input corpus: no traceback, a documented exit code, no write outside the output
folder, strict JSON, a message that names the file, line or key, and no silent drop."""

from __future__ import annotations

import pytest

from tests.reliability.corpus import all_cases
from tests.reliability.harness import run_case

CASES = all_cases()


def test_corpus_is_large_enough():
    assert len(CASES) >= 250
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case, corpus_base, tmp_path, monkeypatch):
    outcome = run_case(case, tmp_path, monkeypatch)
    assert not outcome.problems, (
        f"{case.name} (exit {outcome.code}): {outcome.problems}\n{outcome.output[-2000:]}"
    )

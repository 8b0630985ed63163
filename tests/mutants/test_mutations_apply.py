"""Every named mutation still applies to the current source (else it would be a no-op)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mutations import MUTATIONS, Mutation

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.name for m in MUTATIONS])
def test_the_mutation_patch_applies_exactly_once(mutation: Mutation) -> None:
    source = (ROOT / mutation.path).read_text()
    assert source.count(mutation.old) == 1, (mutation.name, mutation.path)
    assert mutation.old != mutation.new


def test_mutation_names_are_unique() -> None:
    assert len({m.name for m in MUTATIONS}) == len(MUTATIONS)


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.name for m in MUTATIONS])
def test_the_tests_that_should_kill_the_mutation_exist(mutation: Mutation) -> None:
    for path in mutation.tests:
        assert (ROOT / path.split("::")[0]).exists(), (mutation.name, path)

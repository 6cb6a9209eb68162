import pytest

from tests.reliability.corpus import BASE, build_base


@pytest.fixture(scope="session")
def corpus_base(tmp_path_factory):
    if "root" not in BASE:
        build_base(tmp_path_factory.mktemp("corpus-base"))
    return BASE["root"]

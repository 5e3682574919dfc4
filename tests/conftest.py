import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from stack import Stack  # noqa: E402


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """One full stack per test module; tests that inject faults clear them before returning."""
    s = Stack(tmp_path_factory.mktemp("stack"), jwks_refetch_interval="2s")
    yield s
    s.close()

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))  # the naive reference baseline lives there


@pytest.fixture
def names_head():
    """The first 200 bundled names: small, real data."""
    from microgpt.data import read_documents

    return read_documents()[:200]

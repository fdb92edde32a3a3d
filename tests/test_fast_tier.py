"""The fast tier (tests/fast_tier.py, `bash scripts/test.sh --fast`) cannot rot silently: every
entry still names a test that the tier runs, and the tier holds nothing the list does not name."""

import subprocess
import sys
from pathlib import Path

from fast_tier import FAST, selects

TESTS = Path(__file__).resolve().parent


def fast_tier() -> list[str]:
    """The ids ("test_x.py::test_name[case]") that `bash scripts/test.sh --fast` runs."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
        + ["-m", "fast and not slow", str(TESTS)],
        cwd=TESTS.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ids = [line.split("::", 1) for line in done.stdout.splitlines() if "::" in line]
    return [f"{Path(path).name}::{name}" for path, name in ids]


def test_every_entry_selects_a_test_of_the_tier_and_nothing_else_is_in_it():
    tier = fast_tier()
    unknown = [entry for entry in FAST if not any(selects(entry, t) for t in tier)]
    assert not unknown, f"tests/fast_tier.py names tests that do not exist (or are slow): {unknown}"
    assert all(any(selects(entry, t) for entry in FAST) for t in tier)

"""What every ember process sets up first, checked in a child process of its own."""
from __future__ import annotations

import subprocess
import sys

import pytest

resource = pytest.importorskip("resource")


def test_a_low_open_file_limit_is_raised_to_the_hard_one():
    """A soft limit of 256 open files would stop a driver at a few hundred actors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise")
    out = subprocess.run([sys.executable, "-c", (
        "import resource\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "from ember import process_setup\n"
        "process_setup.raise_open_file_limit(ceiling=4096)\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n")],
        capture_output=True, text=True, check=True)
    expected = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    assert int(out.stdout) == expected

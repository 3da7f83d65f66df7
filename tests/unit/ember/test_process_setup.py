"""What every ember process sets up first, checked in a child process of its own."""
from __future__ import annotations

import subprocess
import sys

import pytest

resource = pytest.importorskip("resource")

from ember import process_setup  # noqa: E402 - after the platform check


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


@pytest.fixture
def gc_state():
    """The interpreter's collector settings, restored after the test."""
    import gc
    saved = gc.get_threshold()
    yield gc
    gc.set_threshold(*saved)


def test_tune_gc_collects_less_often_but_keeps_a_users_choice(gc_state, monkeypatch):
    from ember.config import config
    monkeypatch.setattr(config, "gc_gen0_threshold", 7000)
    gc_state.set_threshold(700, 10, 10)
    process_setup.tune_gc()
    assert gc_state.get_threshold() == (7000, 10, 10)
    gc_state.set_threshold(50_000, 5, 5)  # the user's own, higher: kept
    process_setup.tune_gc()
    assert gc_state.get_threshold() == (50_000, 5, 5)
    gc_state.set_threshold(0, 10, 10)  # collection turned off: stays off
    process_setup.tune_gc()
    assert gc_state.get_threshold() == (0, 10, 10)


def test_cycles_are_still_collected_without_an_explicit_collect(gc_state, monkeypatch):
    """Raising the threshold delays the collection of cycles, it does not stop it."""
    import weakref
    from ember.config import config
    monkeypatch.setattr(config, "gc_gen0_threshold", 7000)
    gc_state.set_threshold(700, 10, 10)
    process_setup.tune_gc()

    class Node:
        pass
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    junk = [[] for _ in range(3 * 7000)]  # allocations past the threshold
    assert gone() is None
    del junk

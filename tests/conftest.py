"""Fixtures for tests that run real ember clusters.

- ``shared``: a cluster started with ``num_cpus=2`` that the tests of one module
  share (starting a cluster takes about half a second). A test that needs
  other settings asks for ``fresh`` instead, which stops the shared cluster;
  the next ``shared`` test starts it again.
- ``fresh(**init_kwargs)``: a cluster of the test's own, stopped after it.

Every cluster of the session lives under a private ``EMBER_TEMP_DIR``, set
before ember is imported so that clusters, workers, driver subprocesses and
``ember start`` all inherit it. That lets the session-end check find exactly
this session's processes, and it must find none.
"""
from __future__ import annotations

import os
import shutil
import tempfile

TEMP_ROOT = tempfile.mkdtemp(prefix="ember-t", dir="/tmp")
os.environ["EMBER_TEMP_DIR"] = TEMP_ROOT

import cloudpickle  # noqa: E402
import pytest  # noqa: E402

import ember  # noqa: E402
import helpers  # noqa: E402
from helpers import ember_shm_entries, wait_no_ember_processes  # noqa: E402

cloudpickle.register_pickle_by_value(helpers)

SHARED_INIT = {"num_cpus": 2}


class _Clusters:
    """Which cluster this process is the driver of: the shared one, a fresh one, none."""

    shared_running = False

    def start_shared(self):
        if not (self.shared_running and ember.is_initialized()):
            self.stop()
            ember.init(**SHARED_INIT)
            self.shared_running = True

    def stop(self):
        if ember.is_initialized():
            ember.shutdown()
        self.shared_running = False


_clusters = _Clusters()


@pytest.fixture(scope="session", autouse=True)
def no_leftovers(request):
    """At the end of the session no ember process and no ember /dev/shm entry remains."""
    shm_before = ember_shm_entries()
    yield
    _clusters.stop()
    wait_no_ember_processes(TEMP_ROOT)
    new_shm = ember_shm_entries() - shm_before
    assert not new_shm, f"ember shared-memory entries left in /dev/shm: {sorted(new_shm)}"
    if not request.session.testsfailed:
        shutil.rmtree(TEMP_ROOT, ignore_errors=True)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """A failed run keeps its clusters' session dirs (logs): say where, even under -q."""
    if os.path.isdir(TEMP_ROOT) and (exitstatus != 0 or terminalreporter.stats.get("failed")):
        terminalreporter.write_sep("-", "ember logs")
        terminalreporter.write_line(
            f"the session dirs (logs) of this run's clusters are kept in {TEMP_ROOT}")


@pytest.fixture(scope="module", autouse=True)
def _module_setup(request):
    """Test modules are not importable by workers: ship what tasks use from them by value.

    A user's driver script is ``__main__``, which cloudpickle already pickles by
    value; a test module is imported by pytest from a path workers do not have.
    """
    cloudpickle.register_pickle_by_value(request.module)
    yield
    cloudpickle.unregister_pickle_by_value(request.module)
    _clusters.stop()


@pytest.fixture
def shared():
    """The module's shared ``num_cpus=2`` cluster; yields ember."""
    _clusters.start_shared()
    yield ember


@pytest.fixture
def fresh():
    """Start a cluster of this test's own: ``fresh(num_gpus=2, ...)``; stopped after."""
    _clusters.stop()

    def start(**init_kwargs):
        return ember.init(**init_kwargs)
    yield start
    _clusters.stop()


@pytest.fixture(scope="session")
def temp_root():
    """The directory under which this session's clusters keep their sessions."""
    return TEMP_ROOT

"""Entering a task's or actor's runtime env in a worker (see ember/runtime_env.py).

Ray starts a worker process per runtime env. ember's workers are shared by
every task of their job, so a worker enters the env a task needs in place,
before the task's function is loaded (a function pickled by reference to a
module of a working_dir can only be unpickled from there):

- ``env_vars`` are set in ``os.environ``, and the values they replaced saved;
- each package (working_dir, py_modules) is made local once per node, under
  ``<session_dir>/runtime_resources/node_<id>/<kind>_<hash>/``: fetched from
  the GCS and unzipped into a temporary directory that is then renamed into
  place, so that workers of one node that need it at once never see half a
  copy (the loser of the rename throws its copy away);
- py_modules' copies, then the working_dir's, go first on ``sys.path``, and
  the working_dir becomes the cwd;
- then the ``worker_process_setup_hook`` runs (fetched from the GCS if it was
  a callable, imported if it was a name), once per entry into the env: as in
  Ray, once per worker process, since tasks of one env enter it once.

The env is left when a task with another env starts: the variables get their
old values back, the cwd and ``sys.path`` are restored, and the modules
imported from the env's packages are dropped from ``sys.modules``, so that
the next task neither sees them nor gets a stale copy of a module of the same
name from another working_dir. Tasks in a row with the same env (a job-level
env, a loop over one function) enter it once. An actor enters its env in its
creation task and stays in it: its method calls never switch.

Owned by the executor; used on the thread that runs tasks (the main thread).
Known limit: a function loaded by reference from a package module stays
cached by the worker after the env is left (functions are cached by pickle).
"""
from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
import time

import cloudpickle

from .. import runtime_env
from ..exceptions import RuntimeEnvSetupError
from ..protocol import core_worker as cw
from ..protocol import gcs as gcs_msg

#: Seconds a package download may take, unless config.setup_timeout_seconds says.
DEFAULT_SETUP_TIMEOUT_S = 600.0
#: How many distinct runtime envs a worker remembers for list_runtime_envs.
MAX_REMEMBERED = 64


class _Entered:
    """How to leave an env: what entering it changed."""

    __slots__ = ("saved_env", "cwd", "paths")

    def __init__(self):
        #: Variable -> its value before (None: it was not set).
        self.saved_env: dict[str, str | None] = {}
        #: The cwd before, if the env has a working_dir.
        self.cwd: str | None = None
        #: Directories put on sys.path, whose modules are dropped on leaving.
        self.paths: list[str] = []

    def leave(self) -> None:
        for name, value in self.saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if self.cwd is not None:
            try:
                os.chdir(self.cwd)
            except OSError:
                pass
        for path in self.paths:
            try:
                sys.path.remove(path)
            except ValueError:
                pass
        if self.paths:
            _forget_modules_under(self.paths)


def _forget_modules_under(paths: list[str]) -> None:
    prefixes = tuple(os.path.join(path, "") for path in paths)
    for name, module in list(sys.modules.items()):
        where = getattr(module, "__file__", None)
        if where is None:
            module_path = getattr(module, "__path__", None)
            where = next(iter(module_path), None) if module_path else None
        if where is not None and where.startswith(prefixes):
            sys.modules.pop(name, None)


class RuntimeEnvSetup:
    def __init__(self, io, gcs, info):
        self._io = io
        self._gcs = gcs
        self._where = f"node {info.node_id.hex()[:12]} ({info.node_ip})"
        #: The wire form of the env in force ("" for none).
        self.current = ""
        self._entered: _Entered | None = None
        self._root = os.path.join(info.session_dir, "runtime_resources",
                                  "node_" + info.node_id.hex()[:12])
        #: wire form -> (whether its setup succeeded, unix ms of the first, the error),
        #: for list_runtime_envs; the most recent MAX_REMEMBERED.
        self._seen: dict[str, tuple[bool, float, str]] = {}

    def switch(self, serialized: str, what: str) -> None:
        """Leave the env in force and enter ``serialized``.

        Raises RuntimeEnvSetupError, naming ``what``, when a package cannot be
        made local; no env is then in force.
        """
        if self._entered is not None:
            self._entered.leave()
            self._entered = None
        self.current = ""
        if not serialized:
            return
        try:
            self._enter(serialized, what)
        except RuntimeEnvSetupError as exc:
            self._remember(serialized, False, str(exc))
            raise
        self._remember(serialized, True, "")

    def _remember(self, serialized: str, success: bool, error: str) -> None:
        first = self._seen.pop(serialized, None)
        self._seen[serialized] = (success, first[1] if first else time.time() * 1000, error)
        if len(self._seen) > MAX_REMEMBERED:
            del self._seen[next(iter(self._seen))]

    def uses(self) -> list[cw.RuntimeEnvUse]:
        """The runtime envs this worker set up (the one it is in marked in use).

        Called on the I/O thread while the main thread may switch envs: the
        dict is copied in one step (atomic under the GIL) before it is read.
        """
        return [cw.RuntimeEnvUse(serialized, success, created, error, serialized == self.current)
                for serialized, (success, created, error) in list(self._seen.items())]

    def _enter(self, serialized: str, what: str) -> None:
        env = runtime_env.decode(serialized)
        timeout = env.get("config", {}).get("setup_timeout_seconds", DEFAULT_SETUP_TIMEOUT_S)
        timeout = None if timeout == -1 else timeout
        try:
            working_dir = (self.local_copy(env["working_dir"], timeout)
                           if env.get("working_dir") else None)
            modules = [self.local_copy(uri, timeout) for uri in env.get("py_modules", ())]
        except Exception as exc:  # noqa: BLE001 - any failure fails the task alike
            raise RuntimeEnvSetupError(
                f"Could not set up the runtime env of {what} on {self._where}: "
                f"{exc}") from exc
        entered = _Entered()
        for name, value in env.get("env_vars", {}).items():
            entered.saved_env[name] = os.environ.get(name)
            os.environ[name] = value
        # Inserted in reverse, so that the working_dir comes first, then py_modules
        # in the order given.
        for path in [*reversed(modules), working_dir] if working_dir else reversed(modules):
            sys.path.insert(0, path)
            entered.paths.append(path)
        if working_dir is not None:
            entered.cwd = os.getcwd()
            os.chdir(working_dir)
        hook = env.get("worker_process_setup_hook")
        if hook:
            try:
                self._load_hook(hook, timeout)()
            except BaseException as exc:
                entered.leave()
                raise RuntimeEnvSetupError(
                    f"The worker_process_setup_hook {hook!r} of the runtime env of {what} "
                    f"failed on {self._where}: {type(exc).__name__}: {exc}") from exc
        self._entered = entered
        self.current = serialized

    def _load_hook(self, hook: str, timeout: float | None):
        if not hook.startswith("gcs://"):
            module, _, name = hook.rpartition(".")
            return getattr(importlib.import_module(module), name)
        return cloudpickle.loads(self._fetch(hook, timeout))

    def _fetch(self, uri: str, timeout: float | None) -> bytes:
        reply = self._io.run(self._gcs.call(gcs_msg.KVGet(runtime_env.KV_NAMESPACE,
                                                          runtime_env.kv_key(uri))), timeout)
        if reply.value is None:
            raise RuntimeError(f"the package {uri} is not in the GCS (was the cluster "
                               "restarted since the driver uploaded it?)")
        return reply.value

    def local_copy(self, uri: str, timeout: float | None) -> str:
        """This node's extracted copy of package ``uri``; fetched the first time."""
        kind, digest = runtime_env.parse_uri(uri)
        target = os.path.join(self._root, f"{kind}_{digest}")
        if os.path.isdir(target):
            return target
        data = self._fetch(uri, timeout)
        os.makedirs(self._root, exist_ok=True)
        scratch = tempfile.mkdtemp(prefix=f".{kind}_{digest}.", dir=self._root)
        try:
            runtime_env.extract(data, scratch)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        try:
            os.rename(scratch, target)
        except OSError:
            shutil.rmtree(scratch, ignore_errors=True)
            if not os.path.isdir(target):  # not lost to another worker: a real failure
                raise
        return target

    def debug_state(self) -> dict:
        return {"runtime_env": self.current}

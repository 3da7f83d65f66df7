"""Runtime environments: what a job, task or actor needs around it to run.

A ``runtime_env`` is a dict given to ``ember.init()``, ``@ember.remote`` or
``.options()``. ember supports the fields that need nothing but files and
variables, so a worker can enter one in place:

- ``env_vars``: variables the task or actor sees in ``os.environ``;
- ``working_dir``: a local directory, run in (cwd) and imported from;
- ``py_modules``: local packages (directories), modules or ``.py`` files,
  importable by name;
- ``excludes``: gitignore-style patterns left out of both;
- ``worker_process_setup_hook``: a callable (or ``"module.function"``) run in a
  worker when it enters the env, before the task: logging set-up and the like;
- ``config``: accepted (``setup_timeout_seconds`` bounds the download).

The fields that install software (``pip``, ``conda``, ``uv``) or start the
worker elsewhere (``container``, ``image_uri``) need what Ray has and ember has
not: a worker pool per environment and an agent on each node that builds
environments. They, and unknown fields, are refused where they are given,
with a ValueError that says what to do instead; Ray only warns about unknown
fields, and a typo then fails minutes later on a worker.

Why the design is what it is:

- **Validate early, touch files late.** The dict's shape is checked by the
  decorator, ``.options()`` and ``init()``. Directories are read at the
  first ``.remote()`` (or at ``init()``): a decorator also runs when a worker
  imports the module, and the driver's paths do not exist there.
- **Only URIs travel.** Each directory is zipped once (files in a fixed order
  with fixed timestamps, so equal contents give equal bytes), named by a hash
  of its contents, ``gcs://<kind>/<hash>``, and stored in the GCS key-value
  store (namespace ``runtime_env``, key ``<kind>/<hash>``), as exported
  functions are. A worker on any node fetches it from there, never from the
  driver's disk, once per node (see ``core_worker/runtime_env_setup.py``).
  Packages are limited to 100 MiB zipped, as in Ray: the GCS holds them in
  memory.
- **The wire form is a string.** A task spec carries the resolved env (env
  vars, URIs, config) as canonical JSON, or "" for none, so that tasks without
  one pay one empty field, and a worker knows by comparing two strings whether
  the next task needs another env than the one in force.
- **Merging follows Ray.** A task's or actor's own env overrides its parent's
  field by field, except ``env_vars``, merged key by key (the child's win).
  The parent is the job's env in a driver, and the running task's or actor's
  env in a worker, so nested tasks inherit it.
"""
from __future__ import annotations

import fnmatch
import functools
import hashlib
import io
import json
import os
import stat
import types
import zipfile

from .core_worker.serialization import pickle_by_value
from .protocol import gcs as gcs_msg

#: The GCS key-value namespace packages are stored in.
KV_NAMESPACE = "runtime_env"
#: Zipped size above which a package is refused (the GCS keeps packages in memory).
MAX_PACKAGE_SIZE = 100 * 1024 * 1024
#: Directories never packaged: version control, and byte code that changes on
#: every local import (it would change the hash, and so upload again).
ALWAYS_EXCLUDED = (".git", "__pycache__")

SUPPORTED_FIELDS = ("config", "env_vars", "excludes", "py_modules", "working_dir",
                    "worker_process_setup_hook")
#: Package kinds (the ``<kind>`` of their URIs); a setup hook travels pickled, as one.
PACKAGE_KINDS = ("working_dir", "py_modules", "setup_hook")
_CONFIG_FIELDS = {"setup_timeout_seconds": int, "eager_install": bool, "log_files": list}
_INSTEAD_OF_INSTALLING = (
    "ember does not install packages per job, task or actor: install them in the Python "
    "environment ember runs in on every node, or ship local code with 'py_modules' or "
    "'working_dir'.")
_UNSUPPORTED = {
    "pip": _INSTEAD_OF_INSTALLING,
    "conda": _INSTEAD_OF_INSTALLING,
    "uv": _INSTEAD_OF_INSTALLING,
    "container": "ember runs workers in the Python of their node and cannot start them in "
                 "a container: run the ember node itself in that image.",
    "image_uri": "ember runs workers in the Python of their node and cannot start them in "
                 "an image: run the ember node itself in that image.",
    "java_jars": "ember runs Python workers only.",
}


class RuntimeEnv(dict):
    """A runtime env as a dict, as ``ray.runtime_env.RuntimeEnv``: usable wherever a
    ``runtime_env`` dict is, and what ``get_runtime_context().runtime_env`` returns."""

    def __init__(self, *, _validate: bool = True, **fields):
        super().__init__(fields)
        if _validate:
            validate(self)

    def env_vars(self) -> dict:
        return dict(self.get("env_vars") or {})

    def working_dir(self) -> str:
        return self.get("working_dir") or ""

    def py_modules(self) -> list:
        return list(self.get("py_modules") or [])

    def to_dict(self) -> dict:
        return dict(self)


# --- validation (where the user gives it) -------------------------------------------


def validate(runtime_env) -> None:
    """Raise TypeError or ValueError, naming the field, if ``runtime_env`` is malformed.

    Only the shape is checked; directories are read when the env is packaged.
    """
    if runtime_env is None:
        return
    if not isinstance(runtime_env, dict):
        raise TypeError(f"runtime_env must be a dict, got {type(runtime_env).__name__}.")
    for field, value in runtime_env.items():
        if field in _UNSUPPORTED:
            raise ValueError(f"runtime_env field {field!r} is not supported by ember. "
                             f"{_UNSUPPORTED[field]}")
        check = _FIELD_CHECKS.get(field)
        if check is None:
            raise ValueError(f"runtime_env field {field!r} is not known. ember supports "
                             f"{list(SUPPORTED_FIELDS)}.")
        if value is not None:
            check(value)


def _check_env_vars(env_vars) -> None:
    if not isinstance(env_vars, dict):
        raise TypeError("runtime_env['env_vars'] must be a dict of str to str, got "
                        f"{type(env_vars).__name__}.")
    for key, value in env_vars.items():
        if not isinstance(key, str):
            raise TypeError("runtime_env['env_vars'] keys must be str, got "
                            f"{type(key).__name__} ({key!r}).")
        if not isinstance(value, str):
            raise TypeError(
                f"runtime_env['env_vars'][{key!r}] must be a str, got "
                f"{type(value).__name__} ({value!r}): environment variables hold strings, "
                f"so pass str({value!r}).")


def _check_location(value, field: str, allow_module: bool) -> None:
    if allow_module and isinstance(value, types.ModuleType):
        if not getattr(value, "__file__", None):
            raise ValueError(f"runtime_env[{field!r}]: module {value.__name__} has no file "
                             "(a namespace package or a built-in), so it cannot be shipped; "
                             "pass its directory instead.")
        return
    if not isinstance(value, (str, os.PathLike)):
        kinds = "a path or a module" if allow_module else "a path"
        raise TypeError(f"runtime_env[{field!r}] must be {kinds} (str), got "
                        f"{type(value).__name__} ({value!r}).")
    path = os.fspath(value)
    if "://" in path and not _is_gcs_uri(path):
        raise ValueError(
            f"runtime_env[{field!r}] = {path!r}: ember takes local paths (and the gcs:// "
            "URIs it makes of them), not remote URIs; download the package first and pass "
            "its local directory.")


def _check_working_dir(value) -> None:
    _check_location(value, "working_dir", allow_module=False)


def _check_py_modules(value) -> None:
    if not isinstance(value, (list, tuple)):
        raise TypeError("runtime_env['py_modules'] must be a list of paths or modules, got "
                        f"{type(value).__name__}.")
    for item in value:
        _check_location(item, "py_modules", allow_module=True)


def _check_excludes(value) -> None:
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) for p in value):
        raise TypeError("runtime_env['excludes'] must be a list of str patterns, got "
                        f"{value!r}.")


def _check_config(value) -> None:
    if not isinstance(value, dict):
        raise TypeError(f"runtime_env['config'] must be a dict, got {type(value).__name__}.")
    for key, item in value.items():
        kind = _CONFIG_FIELDS.get(key)
        if kind is None:
            raise ValueError(f"runtime_env['config'] key {key!r} is not known; the keys are "
                             f"{sorted(_CONFIG_FIELDS)}.")
        if not isinstance(item, kind) or (kind is int and isinstance(item, bool)):
            raise TypeError(f"runtime_env['config'][{key!r}] must be a {kind.__name__}, got "
                            f"{type(item).__name__} ({item!r}).")


def _check_setup_hook(value) -> None:
    if isinstance(value, str):
        module, _, name = value.rpartition(".")
        if not module or not name or _is_gcs_uri(value):
            raise ValueError(
                f"runtime_env['worker_process_setup_hook'] = {value!r} must name a function "
                "as 'module.function' (importable on the workers), or be a callable.")
    elif not callable(value):
        raise TypeError("runtime_env['worker_process_setup_hook'] must be a callable or a "
                        f"'module.function' string, got {type(value).__name__} ({value!r}).")


_FIELD_CHECKS = {"env_vars": _check_env_vars, "working_dir": _check_working_dir,
                 "py_modules": _check_py_modules, "excludes": _check_excludes,
                 "config": _check_config, "worker_process_setup_hook": _check_setup_hook}


# --- the wire form and merging ---------------------------------------------------------


def encode(resolved: dict) -> str:
    """Canonical JSON of a resolved env (equal envs give equal strings); "" if empty."""
    resolved = {k: v for k, v in resolved.items() if v}
    return json.dumps(resolved, sort_keys=True, separators=(",", ":")) if resolved else ""


@functools.lru_cache(maxsize=64)
def decode(serialized: str) -> dict:
    """The resolved env of a wire string. Cached: callers must not change it."""
    return json.loads(serialized) if serialized else {}


def merge(parent: dict, child: dict) -> dict:
    """``child`` over ``parent``: field by field, and ``env_vars`` key by key."""
    merged = dict(parent)
    merged.update(child)
    if parent.get("env_vars") and child.get("env_vars"):
        merged["env_vars"] = {**parent["env_vars"], **child["env_vars"]}
    return merged


def resolve(core, runtime_env: dict | None, parent: str, what: str) -> str:
    """The wire form of ``runtime_env`` merged over ``parent`` (a wire form).

    Local directories are packaged and uploaded to the GCS here; errors name
    ``what``. An absent or empty env inherits the parent's unchanged.
    """
    if not runtime_env:
        return parent
    runtime_env = with_packages(runtime_env, lambda uri, data: _upload(core, uri, data), what)
    own: dict = {}
    if runtime_env.get("env_vars"):
        own["env_vars"] = dict(runtime_env["env_vars"])
    for field in ("working_dir", "py_modules"):
        if runtime_env.get(field) is not None:
            own[field] = runtime_env[field]
    if runtime_env.get("config"):
        own["config"] = dict(runtime_env["config"])
    hook = runtime_env.get("worker_process_setup_hook")
    if hook is not None:
        own["worker_process_setup_hook"] = hook if isinstance(hook, str) else \
            _pickled_hook_uri(core, hook, what)
    return encode(merge(decode(parent), own))


def with_packages(runtime_env: dict, upload, what: str) -> dict:
    """A copy of ``runtime_env`` whose local working_dir and py_modules are package URIs.

    Each package is zipped once and handed to ``upload(uri, make_data)``,
    which stores ``make_data()`` under ``uri`` unless it is there already: the
    GCS directly from a driver, or the dashboard's HTTP API from
    ``JobSubmissionClient``. URIs given are kept as they are.
    """
    packaged = dict(runtime_env)
    excludes = tuple(runtime_env.get("excludes") or ())
    if runtime_env.get("working_dir") is not None:
        packaged["working_dir"] = _package_uri(runtime_env["working_dir"], "working_dir",
                                               excludes, what, upload)
    if runtime_env.get("py_modules") is not None:
        packaged["py_modules"] = [_package_uri(module, "py_modules", excludes, what, upload)
                                  for module in runtime_env["py_modules"]]
    return packaged


# --- packages -----------------------------------------------------------------------


def uri_for(kind: str, digest: str) -> str:
    return f"gcs://{kind}/{digest}"


def _is_gcs_uri(value: str) -> bool:
    try:
        parse_uri(value)
    except ValueError:
        return False
    return True


def parse_uri(uri: str) -> tuple[str, str]:
    """(kind, hash) of a package URI ``gcs://<kind>/<hash>``."""
    kind, _, digest = uri.removeprefix("gcs://").partition("/")
    if not uri.startswith("gcs://") or kind not in PACKAGE_KINDS or \
            not digest.isalnum():
        raise ValueError(f"{uri!r} is not an ember package URI (gcs://<kind>/<hash>).")
    return kind, digest


def kv_key(uri: str) -> bytes:
    kind, digest = parse_uri(uri)
    return f"{kind}/{digest}".encode()


#: (kind, path, excludes) -> (listing fingerprint, uri): a directory whose files
#: have the same names, sizes and mtimes is not read and zipped again.
_known_packages: dict[tuple, tuple] = {}


def _package_uri(location, kind: str, excludes: tuple, what: str, upload) -> str:
    """Package ``location`` (unless it is a URI already), upload it once, return its URI."""
    if isinstance(location, types.ModuleType):
        location = location.__file__
        if os.path.basename(location) == "__init__.py":
            location = os.path.dirname(location)
    location = os.fspath(location)
    if _is_gcs_uri(location):
        return location
    root = os.path.abspath(os.path.expanduser(location))
    field = f"runtime_env[{kind!r}]"
    if kind == "working_dir" and not os.path.isdir(root):
        raise ValueError(f"{what}: {field} = {location!r} is not an existing directory "
                         f"(resolved to {root}).")
    if kind == "py_modules" and not (os.path.isdir(root) or
                                     (os.path.isfile(root) and root.endswith(".py"))):
        raise ValueError(f"{what}: {field} entry {location!r} is not an existing package "
                         f"directory or .py file (resolved to {root}).")
    files = _list_files(root, kind, excludes)
    fingerprint = tuple((arcname, st.st_size, st.st_mtime_ns, st.st_mode)
                        for arcname, _, st in files)
    cache_key = (kind, root, excludes)
    known = _known_packages.get(cache_key)
    data = None
    if known is not None and known[0] == fingerprint:
        uri = known[1]
    else:
        uri, data = _zip(files, kind, f"{what}: {field} {location!r}")
        _known_packages[cache_key] = (fingerprint, uri)
    upload(uri, lambda: data if data is not None else
           _zip(files, kind, f"{what}: {field} {location!r}")[1])
    return uri


def _pickled_hook_uri(core, hook, what: str) -> str:
    """Pickle a setup hook (by value, as remote functions are) and upload it once."""
    try:
        data = pickle_by_value(hook)
    except Exception as exc:
        raise TypeError(f"{what}: runtime_env['worker_process_setup_hook'] {hook!r} cannot "
                        f"be pickled ({exc}); pass a plain function, or its "
                        "'module.function' name.") from exc
    uri = uri_for("setup_hook", hashlib.blake2b(data, digest_size=16).hexdigest())
    _upload(core, uri, lambda: data)
    return uri


def _upload(core, uri: str, make_data) -> None:
    """Put the package ``uri`` in the GCS unless it is there (``make_data()`` gives it)."""
    if uri in core.uploaded_packages:
        return
    key = kv_key(uri)
    if not core.io.run(core.gcs.call(gcs_msg.KVExists(KV_NAMESPACE, key)), 30).exists:
        core.io.run(core.gcs.call(gcs_msg.KVPut(KV_NAMESPACE, key, make_data(),
                                                overwrite=False)), 120)
    core.uploaded_packages.add(uri)


def _list_files(root: str, kind: str, excludes: tuple) -> list:
    """[(name in the zip, path, stat)] of what to package, sorted by name.

    A working_dir's files sit at the top of its zip; a py_module keeps its own
    name as the top directory, so that its extracted copy's parent goes on
    ``sys.path``. Directories are listed too (with a trailing slash), so that
    empty ones survive the trip.
    """
    if os.path.isfile(root):
        return [(os.path.basename(root), root, os.stat(root))]
    prefix = os.path.basename(root) + "/" if kind == "py_modules" else ""
    found = []
    for directory, subdirs, names in os.walk(root):
        rel_dir = os.path.relpath(directory, root).replace(os.sep, "/")
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        subdirs[:] = sorted(d for d in subdirs if d not in ALWAYS_EXCLUDED
                            and not excluded(rel_dir + d, excludes))
        for d in subdirs:
            path = os.path.join(directory, d)
            found.append((prefix + rel_dir + d + "/", path, os.stat(path)))
        for name in names:
            if excluded(rel_dir + name, excludes):
                continue
            path = os.path.join(directory, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:  # a dangling symlink
                continue
            if stat.S_ISREG(st.st_mode):
                found.append((prefix + rel_dir + name, path, st))
    found.sort(key=lambda item: item[0])
    return found


def excluded(rel_path: str, patterns) -> bool:
    """Whether a path (relative, with "/") matches one of gitignore-style ``patterns``.

    A pattern without a slash matches a name at any depth (``*.log``, ``data``);
    one with a slash, or a leading one, matches from the top (``/build``,
    ``docs/*.pdf``). Excluding a directory excludes what is in it.
    """
    if not patterns:
        return False
    parts = rel_path.split("/")
    prefixes = ["/".join(parts[:i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        anchored = pattern.startswith("/") or "/" in pattern.rstrip("/")
        pattern = pattern.strip("/")
        candidates = prefixes if anchored else parts
        if any(fnmatch.fnmatchcase(candidate, pattern) for candidate in candidates):
            return True
    return False


def _zip(files: list, kind: str, what: str) -> tuple[str, bytes]:
    """(uri, zip bytes) of ``files``; the hash covers names, modes and contents."""
    digest = hashlib.blake2b(kind.encode(), digest_size=16)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for arcname, path, st in files:
            info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (st.st_mode & 0xFFFF) << 16
            digest.update(f"\0{arcname}\0{st.st_mode & 0o777}\0".encode())
            if arcname.endswith("/"):
                archive.writestr(info, b"")
                continue
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as source, archive.open(info, "w") as target:
                while chunk := source.read(1 << 20):
                    digest.update(chunk)
                    target.write(chunk)
                    if buffer.tell() > MAX_PACKAGE_SIZE:
                        break
            if buffer.tell() > MAX_PACKAGE_SIZE:
                raise ValueError(
                    f"{what}: the package is over the limit of "
                    f"{MAX_PACKAGE_SIZE // (1024 * 1024)} MiB zipped (it had reached "
                    f"{buffer.tell() / (1024 * 1024):.1f} MiB at {arcname}). Leave large "
                    "files out with runtime_env['excludes'] (gitignore-style patterns), and "
                    "read large data from storage every node can reach.")
    return uri_for(kind, digest.hexdigest()), buffer.getvalue()


def extract(data: bytes, directory: str) -> None:
    """Unzip a package into ``directory``, keeping the files' permission bits."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        archive.extractall(directory)
        for info in archive.infolist():
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                os.chmod(os.path.join(directory, info.filename), mode)


__all__ = ["RuntimeEnv"]

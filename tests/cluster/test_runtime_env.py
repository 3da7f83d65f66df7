"""Runtime environments: env_vars, working_dir, py_modules, merging and bad input.

What a user relies on: a task or actor sees its env and the next task on the
same worker does not; the job's env and a task's own merge as in Ray (fields
override, env vars merge key by key) and nested tasks inherit; a working_dir
or py_modules package is importable and readable on any node, fetched from
the GCS (the driver's copy is deleted before the task on the second node
runs); every bad input raises Ray's exception type naming the field.
"""
from __future__ import annotations

import os
import shutil
import uuid

import pytest

import ember
from ember import runtime_env as runtime_env_mod
from ember.cluster_utils import Cluster
from ember.exceptions import RuntimeEnvSetupError
from ember.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@ember.remote
def read_env(*names):
    return {name: os.environ.get(name) for name in names}, os.getpid()


@ember.remote
def where():
    return os.getcwd(), ember.get_runtime_context().get_node_id()


@ember.remote
class EnvActor:
    def __init__(self):
        self.cwd_at_init = os.getcwd()

    def read(self, *names):
        return {name: os.environ.get(name) for name in names}, os.getcwd()

    def runtime_env(self):
        return dict(ember.get_runtime_context().runtime_env)


def _unique(prefix: str) -> str:
    """A module name no other test (or earlier run on a reused worker) has imported."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def _working_dir(tmp_path, module: str):
    root = tmp_path / "wd"
    (root / "data").mkdir(parents=True)
    (root / f"{module}.py").write_text("VALUE = 41\n")
    (root / "data" / "numbers.txt").write_text("1 2 3\n")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "big.log").write_text("x" * 1000)
    return root


# --- env_vars ----------------------------------------------------------------------


def test_task_env_vars_are_set_then_restored_on_the_same_worker(fresh, monkeypatch):
    monkeypatch.setenv("RTENV_PRESET", "original")
    fresh(num_cpus=1)  # one worker: both tasks run in the same process
    env = {"RTENV_NEW": "new", "RTENV_PRESET": "changed"}
    seen, pid = ember.get(read_env.options(runtime_env={"env_vars": env}).remote(
        "RTENV_NEW", "RTENV_PRESET"))
    assert seen == env
    after, pid_after = ember.get(read_env.remote("RTENV_NEW", "RTENV_PRESET"))
    assert pid_after == pid
    assert after == {"RTENV_NEW": None, "RTENV_PRESET": "original"}


def test_actor_keeps_its_env_vars_for_life(shared):
    actor = EnvActor.options(runtime_env={"env_vars": {"RTENV_ACTOR": "a"}}).remote()
    for _ in range(2):
        seen, _ = ember.get(actor.read.remote("RTENV_ACTOR"))
        assert seen == {"RTENV_ACTOR": "a"}
    assert ember.get(actor.runtime_env.remote()) == {"env_vars": {"RTENV_ACTOR": "a"}}
    ember.kill(actor)


def test_job_env_merges_with_task_and_actor_envs_and_is_inherited(fresh):
    job_env = {"env_vars": {"RTENV_JOB": "job", "RTENV_BOTH": "job"}}
    fresh(num_cpus=2, runtime_env=job_env)
    assert ember.get_runtime_context().runtime_env == job_env
    names = ("RTENV_JOB", "RTENV_BOTH", "RTENV_TASK")

    seen, _ = ember.get(read_env.remote(*names))
    assert seen == {"RTENV_JOB": "job", "RTENV_BOTH": "job", "RTENV_TASK": None}

    own = {"env_vars": {"RTENV_BOTH": "task", "RTENV_TASK": "task"}}
    seen, _ = ember.get(read_env.options(runtime_env=own).remote(*names))
    assert seen == {"RTENV_JOB": "job", "RTENV_BOTH": "task", "RTENV_TASK": "task"}

    @ember.remote
    def parent():
        return ember.get(read_env.remote(*names))[0]
    # The child sets no env of its own: it runs in its parent's (job's merged with own).
    assert ember.get(parent.options(runtime_env=own).remote()) == \
        {"RTENV_JOB": "job", "RTENV_BOTH": "task", "RTENV_TASK": "task"}

    actor = EnvActor.options(runtime_env={"env_vars": {"RTENV_TASK": "actor"}}).remote()
    seen, _ = ember.get(actor.read.remote(*names))
    assert seen == {"RTENV_JOB": "job", "RTENV_BOTH": "job", "RTENV_TASK": "actor"}


# --- working_dir and py_modules ---------------------------------------------------------


def test_working_dir_is_cwd_and_importable_and_left_after(shared, tmp_path):
    module = _unique("rtenv_wd")
    root = _working_dir(tmp_path, module)

    @ember.remote
    def use_working_dir(module):
        imported = __import__(module)
        with open("data/numbers.txt") as f:
            numbers = f.read().split()
        return imported.VALUE + 1, numbers, sorted(os.listdir(".")), os.getcwd(), os.getpid()

    env = {"working_dir": str(root), "excludes": ["*.log"]}
    value, numbers, listing, cwd, pid = ember.get(
        use_working_dir.options(runtime_env=env).remote(module))
    assert (value, numbers) == (42, ["1", "2", "3"])
    # .git and excluded files stay behind (the import may have made __pycache__).
    assert [n for n in listing if n != "__pycache__"] == ["data", f"{module}.py"]
    assert os.path.join("runtime_resources", "node_") in cwd and cwd != str(root)

    @ember.remote
    def try_import(module):
        try:
            __import__(module)
        except ImportError:
            return os.getcwd(), os.getpid()
        return "imported", os.getpid()
    # A later task without the env, on the same worker, neither imports the
    # module (from sys.path or sys.modules) nor runs in the copy.
    for _ in range(50):
        left_cwd, left_pid = ember.get(try_import.remote(module))
        assert left_cwd not in ("imported", cwd)
        if left_pid == pid:
            break
    assert left_pid == pid, "no task ran on the worker that had the working_dir"


def test_actor_runs_in_its_working_dir_for_life(shared, tmp_path):
    root = _working_dir(tmp_path, _unique("rtenv_actor_wd"))
    actor = EnvActor.options(runtime_env={"working_dir": str(root)}).remote()
    _, cwd = ember.get(actor.read.remote())
    _, cwd_again = ember.get(actor.read.remote())
    assert cwd == cwd_again and os.path.isfile(os.path.join(cwd, "data", "numbers.txt"))
    assert ember.get(actor.runtime_env.remote())["working_dir"].startswith(
        "gcs://working_dir/")
    ember.kill(actor)


def test_py_modules_are_importable(shared, tmp_path):
    package = _unique("rtenv_pkg")
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("from .inner import answer\n")
    (tmp_path / package / "inner.py").write_text("def answer():\n    return 42\n")
    single = _unique("rtenv_single")
    (tmp_path / f"{single}.py").write_text("NAME = 'single'\n")

    @ember.remote
    def use(package, single):
        return __import__(package).answer(), __import__(single).NAME
    env = {"py_modules": [str(tmp_path / package), str(tmp_path / f"{single}.py")]}
    assert ember.get(use.options(runtime_env=env).remote(package, single)) == (42, "single")


def test_same_directory_is_one_package(shared, tmp_path):
    root = _working_dir(tmp_path, _unique("rtenv_same"))
    env = {"working_dir": str(root)}
    first = ember.get(where.options(runtime_env=env).remote())[0]
    assert ember.get(where.options(runtime_env=env).remote())[0] == first
    (root / "new.txt").write_text("changed")
    assert ember.get(where.options(runtime_env=env).remote())[0] != first


def test_missing_package_fails_the_task_with_runtime_env_setup_error(shared):
    missing = runtime_env_mod.uri_for("working_dir", "0" * 32)
    with pytest.raises(RuntimeEnvSetupError, match="not in the GCS"):
        ember.get(where.options(runtime_env={"working_dir": missing}).remote())
    # The worker is still usable, outside any env.
    assert ember.get(read_env.remote("PATH"))[0]["PATH"]


def test_worker_process_setup_hook_runs_once_per_worker_before_its_tasks(shared, tmp_path):
    marker = str(tmp_path / "hooked")

    def setup():  # a closure: shipped pickled, through the GCS
        with open(marker, "a") as f:
            f.write(f"{os.getpid()}\n")
        os.environ["RTENV_HOOKED"] = "yes"

    @ember.remote
    def hooked():
        return os.getpid(), os.environ.get("RTENV_HOOKED")
    task = hooked.options(runtime_env={"worker_process_setup_hook": setup})
    results = [ember.get(task.remote()) for _ in range(4)]
    assert all(flag == "yes" for _, flag in results)
    with open(marker) as f:
        hooked_pids = f.read().split()
    # Once per worker that entered the env, not once per task.
    assert sorted(hooked_pids) == sorted({str(pid) for pid, _ in results})


def test_setup_hook_by_name_comes_from_py_modules(shared, tmp_path):
    module = _unique("rtenv_hook")
    (tmp_path / f"{module}.py").write_text(
        "import os\n"
        "def setup():\n"
        "    os.environ['RTENV_BY_NAME'] = 'set'\n"
        "def broken():\n"
        "    raise RuntimeError('no logging config here')\n")
    env = {"py_modules": [str(tmp_path / f"{module}.py")],
           "worker_process_setup_hook": f"{module}.setup"}
    assert ember.get(read_env.options(runtime_env=env).remote("RTENV_BY_NAME"))[0] == \
        {"RTENV_BY_NAME": "set"}
    env["worker_process_setup_hook"] = f"{module}.broken"
    with pytest.raises(RuntimeEnvSetupError, match="no logging config here"):
        ember.get(read_env.options(runtime_env=env).remote("PATH"))


@pytest.fixture
def two_nodes(fresh):
    """A head (1 CPU) and a second node (1 CPU) of one Cluster, the driver on the head."""
    cluster = Cluster()
    try:
        cluster.add_node(num_cpus=1)
        second = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ember.init(address=cluster.address)
        yield second
    finally:
        ember.shutdown()
        cluster.shutdown()


def test_working_dir_reaches_a_second_node_through_the_gcs(two_nodes, tmp_path):
    module = _unique("rtenv_remote")
    root = _working_dir(tmp_path, module)

    @ember.remote
    def use(module):
        with open("data/numbers.txt") as f:
            return __import__(module).VALUE, f.read(), os.getcwd(), \
                ember.get_runtime_context().get_node_id()
    pinned = NodeAffinitySchedulingStrategy(two_nodes.node_id, soft=False)
    ref = use.options(runtime_env={"working_dir": str(root)},
                      scheduling_strategy=pinned).remote(module)
    shutil.rmtree(root)  # uploaded by .remote(): the driver's copy is not needed
    value, numbers, cwd, node_id = ember.get(ref)
    assert (value, numbers, node_id) == (41, "1 2 3\n", two_nodes.node_id)
    assert f"node_{two_nodes.node_id[:12]}" in cwd


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("runtime_env, error, words", [
    ({"pip": ["requests"]}, ValueError, ["'pip'", "py_modules"]),
    ({"conda": "env"}, ValueError, ["'conda'", "py_modules"]),
    ({"uv": ["requests"]}, ValueError, ["'uv'", "install them"]),
    ({"container": {"image": "x"}}, ValueError, ["'container'", "image"]),
    ({"image_uri": "x"}, ValueError, ["'image_uri'", "image"]),
    ({"java_jars": ["a.jar"]}, ValueError, ["'java_jars'", "Python"]),
    ({"workingdir": "."}, ValueError, ["'workingdir'", "working_dir"]),
    ({"env_vars": {"N": 1}}, TypeError, ["['env_vars']['N']", "str"]),
    ({"env_vars": ["A=1"]}, TypeError, ["'env_vars'"]),
    ({"working_dir": 3}, TypeError, ["'working_dir'"]),
    ({"working_dir": "s3://bucket/pkg.zip"}, ValueError, ["'working_dir'", "local"]),
    ({"py_modules": "pkg"}, TypeError, ["'py_modules'", "list"]),
    ({"excludes": "*.log"}, TypeError, ["'excludes'"]),
    ({"config": {"timeout": 1}}, ValueError, ["'config'", "setup_timeout_seconds"]),
    ({"worker_process_setup_hook": 7}, TypeError, ["'worker_process_setup_hook'"]),
    ({"worker_process_setup_hook": "setup"}, ValueError,
     ["'worker_process_setup_hook'", "'module.function'"]),
])
def test_bad_runtime_env_is_refused_where_given(runtime_env, error, words):
    def check(excinfo, what):
        message = str(excinfo.value)
        assert what in message and all(word in message for word in words), message

    with pytest.raises(error) as excinfo:
        ember.remote(runtime_env=runtime_env)(lambda: None)
    check(excinfo, "remote function")
    with pytest.raises(error) as excinfo:
        read_env.options(runtime_env=runtime_env)
    check(excinfo, "read_env")
    with pytest.raises(error) as excinfo:
        EnvActor.options(runtime_env=runtime_env)
    check(excinfo, "EnvActor")


def test_bad_runtime_env_fails_init_before_starting_a_cluster(fresh):
    with pytest.raises(ValueError, match="'pip'"):
        ember.init(runtime_env={"pip": ["requests"]})
    assert not ember.is_initialized()


def test_missing_working_dir_fails_init_and_stops_its_cluster(fresh, tmp_path):
    with pytest.raises(ValueError, match="'working_dir'.*not an existing directory"):
        ember.init(num_cpus=1, runtime_env={"working_dir": str(tmp_path / "nowhere")})
    assert not ember.is_initialized()


def test_missing_working_dir_fails_remote(shared, tmp_path):
    with pytest.raises(ValueError, match="read_env: runtime_env\\['working_dir'\\]"):
        read_env.options(runtime_env={"working_dir": str(tmp_path / "nowhere")}).remote()


def test_package_over_the_size_limit_is_refused(shared, tmp_path, monkeypatch):
    monkeypatch.setattr(runtime_env_mod, "MAX_PACKAGE_SIZE", 4096)
    (tmp_path / "noise.bin").write_bytes(os.urandom(16384))
    with pytest.raises(ValueError, match="working_dir.*over the limit.*excludes"):
        read_env.options(runtime_env={"working_dir": str(tmp_path)}).remote()


# --- pure functions ------------------------------------------------------------------------


@pytest.mark.parametrize("path, patterns, expected", [
    ("a/b/run.log", ["*.log"], True),
    ("data", ["data"], True),
    ("src/data/x.csv", ["data"], True),
    ("src/data/x.csv", ["/data"], False),
    ("data/x.csv", ["/data"], True),
    ("docs/a.pdf", ["docs/*.pdf"], True),
    ("src/docs/a.pdf", ["docs/*.pdf"], False),
    ("main.py", ["*.log", "# comment", ""], False),
])
def test_excludes_follow_gitignore_basics(path, patterns, expected):
    assert runtime_env_mod.excluded(path, patterns) is expected


def test_merge_overrides_fields_and_merges_env_vars():
    parent = {"env_vars": {"A": "p", "B": "p"}, "working_dir": "gcs://working_dir/1",
              "py_modules": ["gcs://py_modules/2"]}
    child = {"env_vars": {"B": "c", "C": "c"}, "working_dir": "gcs://working_dir/3"}
    assert runtime_env_mod.merge(parent, child) == {
        "env_vars": {"A": "p", "B": "c", "C": "c"}, "working_dir": "gcs://working_dir/3",
        "py_modules": ["gcs://py_modules/2"]}

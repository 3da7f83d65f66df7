"""Progress bars made in tasks and actors are drawn at the driver, not printed."""
from __future__ import annotations

import ember as ray
from ember.experimental import tqdm_ray
from helpers import wait_for_condition


@ray.remote
class Worker:
    def __init__(self):
        self.bar = tqdm_ray.tqdm(desc="loading", total=100, flush_interval_s=0)
        self.bar.update(42)

    def advance(self):
        self.bar.update(8)

    def finish(self):
        self.bar.close()


@ray.remote
def count_to(n: int) -> int:
    total = 0
    for i in tqdm_ray.tqdm(range(n), desc="counting", flush_interval_s=0):
        total += i
    return total


def _bars():
    return [bar.state for group in tqdm_ray.instance().bar_groups.values()
            for bar in group.bars_by_uuid.values()]


def test_an_actors_bar_is_drawn_at_the_driver_and_never_printed(shared, capsys):
    worker = Worker.remote()
    wait_for_condition(lambda: [b["x"] for b in _bars()] == [42], timeout=10,
                       message="the actor's bar at 42 on the driver")
    (state,) = _bars()
    assert state["total"] == 100 and "loading" in state["desc"] and "pid=" in state["desc"]
    ray.get(worker.advance.remote())
    wait_for_condition(lambda: [b["x"] for b in _bars()] == [50], timeout=10,
                       message="the bar to advance to 50")
    ray.get(worker.finish.remote())
    wait_for_condition(lambda: not _bars(), timeout=10, message="the closed bar to go")
    assert tqdm_ray.RAY_TQDM_MAGIC not in capsys.readouterr().out
    ray.kill(worker)


def test_a_task_iterating_a_bar_gets_its_items_and_closes_it(shared):
    assert ray.get(count_to.remote(10)) == 45
    wait_for_condition(lambda: not _bars(), timeout=10, message="no bar left open")


def test_a_bar_in_the_driver_updates_the_manager_directly(shared):
    with tqdm_ray.tqdm(total=3, desc="here", flush_interval_s=0) as bar:
        bar.update(2)
        assert [b["x"] for b in _bars()] == [2]
    assert not _bars()


def test_a_driver_script_named_tqdm_py_finishes(tmp_path):
    # Importing "tqdm" from the log-printing thread would run the script again
    # (its directory is on sys.path) and block that thread: ember imports it once,
    # when tqdm_ray is imported.
    import subprocess
    import sys
    script = tmp_path / "tqdm.py"
    script.write_text(
        "import ember\n"
        "from ember.experimental.tqdm_ray import tqdm\n\n"
        "@ember.remote\n"
        "def count():\n"
        "    for _ in tqdm(range(3), desc='counting', flush_interval_s=0):\n"
        "        pass\n\n"
        "ember.get(count.remote())\n"
        "print('finished')\n")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "finished" in done.stdout

"""The pure parts under the dashboard's state routes: query parameters, the charted
metric values, and the log follower the streams are built on. No cluster."""
from __future__ import annotations

import pytest

pytest.importorskip("aiohttp")
from multidict import MultiDict  # noqa: E402  (aiohttp's own dependency)

from ember.dashboard.metrics_history import node_values  # noqa: E402
from ember.dashboard.state_routes import BadParameter, ListOptions, filters_of  # noqa: E402
from ember.observability.logs import LogFollower  # noqa: E402
from ember.protocol.raylet import ReadLogFile  # noqa: E402
from ember.raylet.log_files import LogFiles  # noqa: E402
from ember.protocol.metrics import MetricSample  # noqa: E402


def query(*pairs) -> MultiDict:
    return MultiDict(pairs)


def test_filters_come_as_three_parallel_parameters():
    q = query(("filter_keys", "state"), ("filter_predicates", "="), ("filter_values", "ALIVE"),
              ("filter_keys", "class_name"), ("filter_predicates", "!="),
              ("filter_values", "A"))
    assert filters_of(q) == [("state", "=", "ALIVE"), ("class_name", "!=", "A")]


def test_list_options_defaults_are_rays():
    options = ListOptions.from_query(query(), "actors")
    assert (options.limit, options.timeout, options.detail, options.filters) == (100, 30, False, [])


def test_workers_exclude_the_driver_unless_asked():
    assert ListOptions.from_query(query(), "workers").filters == [
        ("worker_type", "!=", "DRIVER")]
    assert ListOptions.from_query(query(("exclude_driver", "0")), "workers").filters == []


@pytest.mark.parametrize("pairs, message", [
    ([("limit", "ten")], "Invalid limit='ten': expected an integer."),
    ([("limit", "10001")], "Invalid limit=10001: expected between 1 and 10000."),
    ([("timeout", "0")], "Invalid timeout=0: expected at least 1."),
    ([("detail", "yes")], "Invalid detail='yes': expected true, false, 1 or 0."),
    ([("filter_keys", "state"), ("filter_predicates", "~"), ("filter_values", "x")],
     "Invalid filter_predicates='~': expected one of =, !=."),
    ([("filter_keys", "state")], "filter_keys, filter_predicates and filter_values must come "
                                 "in equal numbers (got 1, 0 and 0)."),
])
def test_bad_parameters_are_named(pairs, message):
    with pytest.raises(BadParameter) as info:
        ListOptions.from_query(query(*pairs), "tasks")
    assert str(info.value) == message


def test_node_values_pick_the_charted_metrics_by_name_and_label():
    node = (("NodeAddress", "10.0.0.1"),)
    samples = [MetricSample("ember_node_cpu_utilization", node, 42.0),
               MetricSample("ember_object_store_memory", node + (("Location", "MMAP_SHM"),), 7.0),
               MetricSample("ember_object_store_memory", node + (("Location", "SPILLED"),), 3.0),
               MetricSample("ember_workers", node + (("State", "IDLE"),), 2.0)]
    assert node_values(samples) == {"cpu_percent": 42.0, "object_store_used": 7.0,
                                    "object_store_spilled": 3.0}


def _local_follower(path) -> LogFollower:
    """A follower reading ``path`` through the raylet's log-file service, in process."""
    service = LogFiles(str(path.parent.parent))

    def read(offset, tail):
        return service.read(None, ReadLogFile(path.name, offset, tail))
    return LogFollower(read)


def test_log_follower_tails_then_returns_only_complete_new_lines(tmp_path):
    (tmp_path / "logs").mkdir()
    path = tmp_path / "logs" / "worker.out"
    path.write_text("one\ntwo\nthree\n")
    follower = _local_follower(path)
    assert follower.last_lines(2) == ["two", "three"]
    assert follower.poll() == []
    with open(path, "a") as f:
        f.write("four\nfi")
    assert follower.poll() == ["four"]  # "fi" waits for its newline
    with open(path, "a") as f:
        f.write("ve\n")
    assert follower.poll() == ["five"]


def test_log_follower_tail_zero_and_all(tmp_path):
    (tmp_path / "logs").mkdir()
    path = tmp_path / "logs" / "gcs.log"
    path.write_text("a\nb\n")
    for tail, expected in ((0, []), (-1, ["a", "b"])):
        assert _local_follower(path).last_lines(tail) == expected


def test_log_follower_of_a_missing_file_says_so(tmp_path):
    (tmp_path / "logs").mkdir()
    with pytest.raises(FileNotFoundError, match="nope.out"):
        _local_follower(tmp_path / "logs" / "nope.out").last_lines()

"""The raylet's log-file service: listing, tails, reads from an offset, and what it refuses."""
import os

import pytest

from ember.protocol import raylet as msg
from ember.raylet import log_files
from ember.raylet.log_files import LogFiles


@pytest.fixture
def service(tmp_path):
    os.makedirs(tmp_path / "logs")
    (tmp_path / "logs" / "worker-abc.out").write_text("".join(f"line {i}\n" for i in range(10)))
    (tmp_path / "logs" / "gcs.out").write_text("gcs\n")
    (tmp_path / "secret").write_text("not a log\n")
    return LogFiles(str(tmp_path))


def test_lists_names_matching_the_glob(service):
    assert service.list_files(None, msg.ListLogFiles()).names == ["gcs.out", "worker-abc.out"]
    assert service.list_files(None, msg.ListLogFiles("worker-*")).names == ["worker-abc.out"]


@pytest.mark.parametrize("tail,expected", [(3, [7, 8, 9]), (0, []), (-1, list(range(10))),
                                           (50, list(range(10)))])
def test_tail_gives_the_last_lines_and_the_end(service, tail, expected):
    reply = service.read(None, msg.ReadLogFile("worker-abc.out", -1, tail))
    assert reply.data.decode().splitlines() == [f"line {i}" for i in expected]
    assert reply.offset == 70 and not reply.error


def test_tail_across_chunks_of_a_large_file(service, tmp_path, monkeypatch):
    monkeypatch.setattr(log_files, "_TAIL_CHUNK", 16)
    reply = service.read(None, msg.ReadLogFile("worker-abc.out", -1, 4))
    assert reply.data.decode().splitlines() == [f"line {i}" for i in (6, 7, 8, 9)]


def test_reads_on_from_an_offset(service, tmp_path):
    end = service.read(None, msg.ReadLogFile("worker-abc.out", -1, 0)).offset
    with open(tmp_path / "logs" / "worker-abc.out", "a") as f:
        f.write("appended\n")
    reply = service.read(None, msg.ReadLogFile("worker-abc.out", end))
    assert reply.data == b"appended\n" and reply.offset == end + 9
    assert service.read(None, msg.ReadLogFile("worker-abc.out", reply.offset)).data == b""


@pytest.mark.parametrize("name", ["../secret", "/etc/passwd", "..", "", "a\0b"])
def test_refuses_anything_but_a_plain_name(service, name):
    reply = service.read(None, msg.ReadLogFile(name))
    assert reply.error and reply.data == b""


def test_a_missing_file_is_an_error_naming_it(service):
    assert "nope.out" in service.read(None, msg.ReadLogFile("nope.out")).error

"""The Jobs API's pure parts: the job lifecycle, submission checks, the record store."""
from __future__ import annotations

import asyncio

import pytest

from ember.dashboard.job_store import JobStore
from ember.job_submission.models import (BadRequest, InvalidTransition, JobDetails, JobInfo,
                                         JobStatus, JobSubmitRequest, new_submission_id)
from ember.protocol import gcs as gcs_msg

S = JobStatus


def pending(**fields) -> JobInfo:
    return JobInfo(status=S.PENDING, entrypoint="python x.py", **fields)


@pytest.mark.parametrize("path", [
    [S.RUNNING, S.SUCCEEDED], [S.RUNNING, S.FAILED], [S.RUNNING, S.STOPPED],
    [S.FAILED], [S.STOPPED]])
def test_allowed_lifecycles(path):
    info = pending(start_time=1)
    for status in path:
        info = info.transition(status, now_ms=5)
    assert info.status is path[-1]
    assert info.status.is_terminal() and info.end_time == 5
    assert info.message == JobInfo(status=path[-1], entrypoint="").message


@pytest.mark.parametrize("terminal", [S.SUCCEEDED, S.FAILED, S.STOPPED])
@pytest.mark.parametrize("target", list(JobStatus))
def test_a_terminal_state_never_changes(terminal, target):
    info = pending().transition(S.RUNNING).transition(terminal)
    if target is terminal:
        return
    with pytest.raises(InvalidTransition, match=f"from {terminal.value} to {target.value}"):
        info.transition(target)


def test_running_cannot_go_back_to_pending_and_pending_cannot_succeed():
    with pytest.raises(InvalidTransition):
        pending().transition(S.RUNNING).transition(S.PENDING)
    with pytest.raises(InvalidTransition):
        pending().transition(S.SUCCEEDED)


def test_is_terminal_and_str_are_rays():
    assert [s.value for s in JobStatus if s.is_terminal()] == ["STOPPED", "SUCCEEDED", "FAILED"]
    assert str(S.RUNNING) == "RUNNING" and S("FAILED") is S.FAILED


def test_records_round_trip_through_json():
    info = pending(metadata={"a": "b"}, runtime_env={"env_vars": {"X": "1"}},
                   entrypoint_num_cpus=1.5).transition(S.FAILED, "it broke",
                                                       driver_exit_code=3, now_ms=9)
    assert JobInfo.from_json(info.to_json()) == info
    details = JobDetails.of("job-1", info)
    as_json = details.to_json()
    assert as_json["status"] == "FAILED" and as_json["type"] == "SUBMISSION"
    assert as_json["submission_id"] == "job-1" and as_json["driver_exit_code"] == 3
    assert JobDetails.from_json(as_json) == details
    # Fields a newer server adds are ignored, not an error.
    assert JobInfo.from_json({**info.to_json(), "retry_policy": None}) == info


def test_submit_request_takes_rays_fields():
    request = JobSubmitRequest.parse({"entrypoint": "echo hi", "job_id": "old-name",
                                      "entrypoint_resources": {"a": 1}, "metadata": {"k": "v"}})
    assert request.submission_id == "old-name"
    assert request.entrypoint_resources == {"a": 1}


@pytest.mark.parametrize("body, message", [
    ([], "must be a JSON object"),
    ({}, "'entrypoint' must be a non-empty string"),
    ({"entrypoint": "  "}, "'entrypoint' must be a non-empty string"),
    ({"entrypoint": "x", "bogus": 1}, "Unknown field(s) ['bogus']"),
    ({"entrypoint": "x", "submission_id": "a/b"}, "submission_id 'a/b' must be"),
    ({"entrypoint": "x", "runtime_env": "{}"}, "'runtime_env' must be a JSON object"),
    ({"entrypoint": "x", "metadata": {"k": 1}}, "'metadata' must map strings to strings"),
    ({"entrypoint": "x", "entrypoint_num_cpus": -1}, "'entrypoint_num_cpus' must be a non-neg"),
    ({"entrypoint": "x", "entrypoint_num_gpus": True}, "'entrypoint_num_gpus' must be a non-neg"),
    ({"entrypoint": "x", "entrypoint_resources": {"a": "1"}}, "entrypoint_resources['a']"),
])
def test_submit_request_refusals_name_the_field(body, message):
    with pytest.raises(BadRequest) as info:
        JobSubmitRequest.parse(body)
    assert message in str(info.value)


def test_new_submission_ids_are_rays_form_and_unique():
    ids = {new_submission_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith("raysubmit_") and len(i) == 26 for i in ids)


class FakeKV:
    """The GCS key-value store's semantics for the four requests JobStore sends."""

    def __init__(self):
        self.data: dict[tuple[str, bytes], bytes] = {}

    async def call(self, request):
        key = (request.namespace, getattr(request, "key", b""))
        if isinstance(request, gcs_msg.KVPut):
            added = key not in self.data
            if added or request.overwrite:
                self.data[key] = request.value
            return gcs_msg.KVPutReply(added)
        if isinstance(request, gcs_msg.KVGet):
            return gcs_msg.KVGetReply(self.data.get(key))
        if isinstance(request, gcs_msg.KVDel):
            return gcs_msg.KVDelReply(int(self.data.pop(key, None) is not None))
        if isinstance(request, gcs_msg.KVKeys):
            return gcs_msg.KVKeysReply([k for ns, k in self.data
                                        if ns == request.namespace
                                        and k.startswith(request.prefix)])
        raise AssertionError(f"unexpected request {request!r}")


def test_store_keeps_one_record_per_id_and_never_leaves_a_terminal_state():
    async def scenario():
        store = JobStore(FakeKV().call)
        assert await store.create("a", pending())
        assert not await store.create("a", pending(metadata={"second": "x"}))
        assert (await store.get("a")).metadata is None  # the first record stands
        running = await store.transition("a", S.RUNNING, driver_node_id="ab")
        assert running.status is S.RUNNING and running.driver_node_id == "ab"
        assert (await store.transition("a", S.FAILED, "exit 3")).message == "exit 3"
        assert await store.transition("a", S.STOPPED) is None  # already ended: unchanged
        assert (await store.get("a")).status is S.FAILED
        with pytest.raises(KeyError):
            await store.transition("missing", S.RUNNING)
        await store.create("b", pending())
        assert sorted(await store.list()) == ["a", "b"]
        assert await store.delete("a") and not await store.delete("a")
        assert list(await store.list()) == ["b"] and await store.get("a") is None
    asyncio.run(scenario())

"""What the normal task submitter does next for one scheduling key, with no I/O.

The submitter (:mod:`.task_submitter`) is asked to "pump" a key whenever
something about it changes: a task became ready, a reply came back, a lease
was granted or failed. Pumping is a decision followed by I/O. The decision
lives here, as a pure function of the key's state, so that it can be tested
exhaustively without processes, sockets or an event loop (as dask's
``worker_state_machine``: events in, instructions out). The submitter is the
thin shell that sends the pushes, starts the lease requests and arms the
timers that :func:`plan_pump` asks for.

The rules (those of Ray's ``NormalTaskSubmitter``):

- The head of the queue goes to the leased worker with the fewest tasks in
  flight, ties to the one leased first, as long as that worker has fewer than
  the pipeline depth in flight (see :func:`pipeline_depth`). A task of a
  function with ``max_calls`` goes only to a worker with nothing in flight:
  the worker may exit after any such task, and tasks pipelined behind it would
  die with it. The queue is served in order: the first task that fits nowhere
  stops the pushes.
- A dead worker (already let go of) is never chosen. A chosen worker whose
  connection has closed (it or its node died while its lease sat idle here)
  is dropped, and the choice is made again.
- While tasks remain queued, lease requests are started until
  ``min(len(queue), max_pending_leases)`` are outstanding. Requests already
  outstanding are not cancelled while tasks remain, even when fewer tasks
  wait than requests: a granted surplus lease is cheap (it idles and goes
  back), and a cancel and re-request costs a round trip each.
- Once the queue is empty, the outstanding lease requests are cancelled, and
  each live worker with nothing in flight and no idle timer gets one: it is
  kept ``lease_idle_timeout_s`` for the next task of its key, so that a tight
  ``get(f.remote())`` loop leases once, not once per task.

This is the submit hot path (every task goes through it), so a plan is a
plain tuple of a few lists of workers, not an object per instruction: task
``i`` of the plan's pushes is the ``i``-th task at the head of the queue, and
the lists are a shared empty one when there is nothing to do.
"""
from __future__ import annotations

import sys
import typing

#: The simulated load of a worker that may not be chosen (dead, or dropped).
_UNUSABLE = sys.maxsize


class PumpPlan(typing.NamedTuple):
    """The instructions for one pump of one key, in the order to carry them out.

    :func:`plan_pump` returns them as a plain tuple of these fields, in this order.
    """

    #: Workers that were chosen but whose connection has closed: let them go,
    #: as failed (their raylet must not lend them again).
    lost: list
    #: One worker per task pushed: the queue's head goes to ``pushes[0]``, the
    #: next task to ``pushes[1]``, and so on. A worker may appear more than once.
    pushes: list
    #: How many new lease requests to start.
    lease_requests: int
    #: Cancel every outstanding lease request (the queue is empty).
    cancel_leases: bool
    #: Workers to arm an idle timer on (the queue is empty and they run nothing).
    idle: list


#: Shared and never mutated: most pumps push nothing, lose no worker and idle none.
_EMPTY: list = []


def pipeline_depth(avg_duration: float | None, max_in_flight: int,
                   max_short_duration_s: float) -> int:
    """How many tasks of a key to push to one worker at once.

    Pipelining hides the round trip of tiny tasks, but queues a long task
    behind another on one worker while a second worker might be free. So only
    keys whose tasks are known to be short (a moving average of their run
    time, ``avg_duration``, under ``max_short_duration_s``) are pipelined.
    """
    if avg_duration is not None and avg_duration < max_short_duration_s:
        return max(1, max_in_flight)
    return 1


def plan_pump(queue: typing.Iterable, queued: int, workers: list, pending_leases: int,
              depth: int, max_pending_leases: int) -> tuple:
    """Decide one pump of a key; reads its arguments and changes nothing.

    ``queue``: the key's ready tasks, head first (``queued`` of them); only a
    task's ``spec.max_calls`` is read. ``workers``: the key's leased workers in
    the order they were leased; only ``inflight``, ``dead``, ``conn.closed``
    and ``idle_timer`` are read. ``pending_leases``: how many lease requests
    are outstanding. ``depth``: :func:`pipeline_depth` for the key.

    Returns a plain tuple in the order of :class:`PumpPlan`'s fields (making
    the named tuple would cost more than the rest of a typical pump);
    ``PumpPlan(*plan)`` names them.
    """
    pushes = lost = _EMPTY
    # The in-flight counts as they will be once the planned pushes are sent.
    # While every push went to one worker (most pumps push one task, or fill
    # one new worker) they are the workers' own counts plus ``extra`` on
    # ``first``; only a plan that pushes to two workers or loses one makes the
    # list ``loads``. The scans hold workers, not indices: they run over every
    # worker of the key on every submission.
    first = None
    extra = 0
    loads = None
    if workers and queued:
        for task in queue:
            limit = 1 if task.spec.max_calls else depth
            while True:
                best = None
                best_load = limit
                if loads is not None:  # min and index loop in C: keys may lease hundreds
                    least = min(loads)
                    if least < limit:
                        best = workers[loads.index(least)]
                elif first is None:
                    for w in workers:
                        if w.inflight < best_load and not w.dead:
                            best, best_load = w, w.inflight
                else:
                    for w in workers:
                        load = w.inflight + extra if w is first else w.inflight
                        if load < best_load and not w.dead:
                            best, best_load = w, load
                if best is None or not best.conn.closed:
                    break
                if lost is _EMPTY:
                    lost = []
                lost.append(best)
                if loads is None:
                    loads = _loads(workers, first, extra)
                loads[workers.index(best)] = _UNUSABLE
            if best is None:
                break
            if loads is not None:
                loads[workers.index(best)] += 1
            elif first is None or best is first:
                first = best
                extra += 1
            else:
                loads = _loads(workers, first, extra)
                loads[workers.index(best)] += 1
            if pushes is _EMPTY:
                pushes = []
            pushes.append(best)
    remaining = queued - len(pushes)
    if remaining:
        want = remaining if remaining < max_pending_leases else max_pending_leases
        return lost, pushes, want - pending_leases if want > pending_leases else 0, False, _EMPTY
    idle = _EMPTY
    i = 0
    for w in workers:
        if w.idle_timer is None and (w.inflight == 0 and not w.dead and w is not first
                                     if loads is None else loads[i] == 0):
            if idle is _EMPTY:
                idle = []
            idle.append(w)
        i += 1
    return lost, pushes, 0, pending_leases > 0, idle


def _loads(workers: list, first, extra: int) -> list[int]:
    """The workers' in-flight counts with ``extra`` planned on ``first`` (if not
    None); a dead worker's too high to be chosen."""
    loads = [_UNUSABLE if w.dead else w.inflight for w in workers]
    if first is not None:
        loads[workers.index(first)] += extra
    return loads

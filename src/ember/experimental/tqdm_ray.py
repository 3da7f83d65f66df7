"""Progress bars from tasks and actors, drawn at the driver (Ray's ``tqdm_ray``).

``from ember.experimental.tqdm_ray import tqdm`` in place of ``from tqdm import
tqdm``. Bars of many workers printed by each worker would overwrite each
other on the driver's terminal; instead a worker's bar prints its state as
one JSON line marked with :data:`RAY_TQDM_MAGIC`, at most every
``flush_interval_s``, and the driver's log printer hands such lines to the
process's :class:`_BarManager` instead of printing them. The manager gives
each worker's bars their own rows and draws them with the real ``tqdm`` if it
is installed, else as plain status lines. In the driver itself a bar updates
the manager directly.
"""
from __future__ import annotations

import json
import os
import sys
import time
import uuid
from typing import Any, Iterable

# The real tqdm draws the bars on the driver. Imported here, on the thread that
# imports this module, as Ray does; never later from the I/O thread that prints
# logs, where an import can run a program's own module of that name (a script
# called tqdm.py) and block the thread that its ember calls need.
try:
    import tqdm as _real_tqdm
except ImportError:
    _real_tqdm = None
if not isinstance(getattr(_real_tqdm, "tqdm", None), type):
    _real_tqdm = None  # a module named tqdm that is not the package

#: Marks a log line that carries a bar's state (the name as Ray spells it).
RAY_TQDM_MAGIC = "__ray_tqdm_magic_token__"

_manager: "_BarManager | None" = None


class tqdm:
    """A progress bar usable in any task, actor or driver (a subset of tqdm's API)."""

    def __init__(self, iterable: Iterable | None = None, desc: str | None = None,
                 total: int | None = None, position: int | None = None,
                 flush_interval_s: float = 1.0, unit: str = "it"):
        if total is None and iterable is not None:
            try:
                total = len(iterable)
            except (TypeError, AttributeError):
                total = None
        self._iterable = iterable
        self._state = {"__magic_token__": RAY_TQDM_MAGIC, "x": 0, "pos": position or 0,
                       "desc": desc or "", "total": total, "unit": unit, "ip": _node_ip(),
                       "pid": os.getpid(), "uuid": uuid.uuid4().hex, "closed": False}
        self._interval = flush_interval_s
        self._last = None  # when the state was last sent
        self._send(force=True)

    @property
    def n(self) -> int:
        return self._state["x"]

    def update(self, n: int = 1) -> None:
        self._state["x"] += n
        self._send()

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self._state["desc"] = desc
        self._send(force=refresh)

    def refresh(self) -> None:
        self._send(force=True)

    def close(self) -> None:
        if not self._state["closed"]:
            self._state["closed"] = True
            self._send(force=True)

    def __iter__(self):
        if self._iterable is None:
            raise ValueError("This tqdm was made without an iterable: pass one, or call "
                             "update() yourself.")
        try:
            for item in self._iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "tqdm":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _send(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and self._last is not None and now - self._last < self._interval:
            return
        self._last = now
        if _in_worker():
            # One write of one line, so that other output cannot split it.
            sys.stdout.write(json.dumps(self._state) + "\n")
            sys.stdout.flush()
        else:
            instance().process_state_update(dict(self._state))


def safe_print(*args, **kwargs) -> None:
    """print() at the driver without breaking the bars drawn there."""
    manager = instance()
    manager.hide_bars()
    try:
        print(*args, **kwargs)
    finally:
        manager.unhide_bars()


def _in_worker() -> bool:
    from ..core_worker import context
    core = context.core
    return core is not None and not core.is_driver


def _node_ip() -> str:
    from ..core_worker import context
    core = context.core
    return core.info.node_ip if core is not None else "127.0.0.1"


class _Bar:
    """One worker's bar as the driver draws it."""

    def __init__(self, state: dict, row: int):
        self.state = state
        self.row = row
        self._drawn = _draw(state, row)

    def update(self, state: dict) -> None:
        if self._drawn is not None:
            if state["desc"] != self.state["desc"]:
                self._drawn.set_description(state["desc"], refresh=False)
            self._drawn.update(state["x"] - self.state["x"])
        else:
            _print_line(state)
        self.state = state

    def move(self, row: int) -> None:
        if row != self.row and self._drawn is not None:
            self._drawn.clear()
            self._drawn.pos = -row  # tqdm's convention for a fixed row
            self._drawn.refresh()
        self.row = row

    def hide(self) -> None:
        if self._drawn is not None:
            self._drawn.clear()

    def show(self) -> None:
        if self._drawn is not None:
            self._drawn.refresh()

    def close(self, state: dict) -> None:
        """The bar's final ``state`` arrived."""
        if self._drawn is not None:
            self.update(state)
            self._drawn.close()
        else:
            _print_line(state)


class _BarGroup:
    """The bars of one process; they keep their rows relative to the group's first."""

    def __init__(self, first_row: int):
        self.first_row = first_row
        self.bars_by_uuid: dict[str, _Bar] = {}

    def rows(self) -> int:
        return 1 + max((b.state["pos"] for b in self.bars_by_uuid.values()), default=-1)

    def move(self, first_row: int) -> None:
        self.first_row = first_row
        for bar in self.bars_by_uuid.values():
            bar.move(first_row + bar.state["pos"])


class _BarManager:
    """The driver's bars, by (ip, pid) of the process that made them."""

    def __init__(self):
        self.pid = os.getpid()
        self.ip = _node_ip()
        self.bar_groups: dict[tuple[str, int], _BarGroup] = {}
        self._hidden = False

    def process_state_update(self, state: dict[str, Any]) -> None:
        """Apply a bar's state sent by a worker (or made here)."""
        self.unhide_bars()
        key = (state["ip"], state["pid"])
        if key != (self.ip, self.pid):
            where = (f"pid={state['pid']}" if state["ip"] == self.ip
                     else f"pid={state['pid']}, ip={state['ip']}")
            state["desc"] = f"({where}) {state['desc']}".rstrip()
        group = self.bar_groups.get(key)
        if group is None:
            group = self.bar_groups[key] = _BarGroup(self._rows_used())
        bar = group.bars_by_uuid.get(state["uuid"])
        if bar is None:
            if state["closed"]:
                return  # opened and closed between two flushes: nothing to draw
            group.bars_by_uuid[state["uuid"]] = _Bar(state, group.first_row + state["pos"])
            self._place_groups()
        elif state["closed"]:
            bar.close(state)
            del group.bars_by_uuid[state["uuid"]]
            if not group.bars_by_uuid:
                del self.bar_groups[key]
            self._place_groups()
        else:
            bar.update(state)

    def hide_bars(self) -> None:
        if not self._hidden:
            self._hidden = True
            for bar in self._all_bars():
                bar.hide()

    def unhide_bars(self) -> None:
        if self._hidden:
            self._hidden = False
            for bar in self._all_bars():
                bar.show()

    def _all_bars(self):
        return [bar for group in self.bar_groups.values()
                for bar in group.bars_by_uuid.values()]

    def _rows_used(self) -> int:
        return sum(group.rows() for group in self.bar_groups.values())

    def _place_groups(self) -> None:
        row = 0
        for group in self.bar_groups.values():
            group.move(row)
            row += group.rows()


def instance() -> _BarManager:
    """This process's bar manager (the driver's draws every worker's bars)."""
    global _manager
    if _manager is None:
        _manager = _BarManager()
    return _manager


def handle_line(line: str) -> bool:
    """If ``line`` is a bar's state, apply it and return True (the log printer's hook)."""
    if RAY_TQDM_MAGIC not in line:
        return False
    try:
        state = json.loads(line)
    except ValueError:
        return False
    if not isinstance(state, dict) or state.get("__magic_token__") != RAY_TQDM_MAGIC:
        return False
    instance().process_state_update(state)
    return True


def _draw(state: dict, row: int):
    """A real tqdm bar at ``row``, or None without tqdm installed (plain lines then)."""
    if _real_tqdm is None:
        _print_line(state)
        return None
    bar = _real_tqdm.tqdm(desc=state["desc"], total=state["total"], unit=state["unit"],
                         position=row, leave=False)
    if state["x"]:
        bar.update(state["x"])
    return bar


def _print_line(state: dict) -> None:
    total = f"/{state['total']}" if state["total"] is not None else ""
    done = " (done)" if state["closed"] else ""
    print(f"{state['desc']}: {state['x']}{total} {state['unit']}{done}", file=sys.stderr,
          flush=True)

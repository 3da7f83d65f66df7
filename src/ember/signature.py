"""Checking a call's arguments against the callee's signature, at ``.remote()``.

Ray binds the arguments of ``f.remote(...)``, ``Actor.remote(...)`` and
``actor.method.remote(...)`` to the signature before anything is sent, so that
a missing or extra argument is a ``TypeError`` at the call site, not a failed
task later. ember does the same. Whether arguments bind depends only on how
many positional ones there are and the keywords' names, so each such shape is
checked once and the verdict remembered: the check costs one dict lookup per
call.

Signatures travel inside actor handles, so defaults are replaced by a marker
(a default value need not pickle).
"""
from __future__ import annotations

import inspect

_EMPTY = inspect.Parameter.empty
_UNSEEN = object()


class _Default:
    """Stands for a parameter's default value: shown as ``<default>``, pickled by name."""

    def __repr__(self) -> str:
        return "<default>"

    def __reduce__(self):
        return "DEFAULT"


DEFAULT = _Default()
#: Verdicts kept per callee; beyond this many shapes, each call is checked afresh.
_MAX_SHAPES = 256


def call_signature(fn, drop_first: bool = False) -> inspect.Signature | None:
    """The parameters of ``fn`` (without ``self`` when ``drop_first``), defaults as markers.

    None when Python cannot tell (some builtins): such calls are not checked.
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params = list(signature.parameters.values())
    if drop_first and params and params[0].kind in (
            inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        params = params[1:]
    return inspect.Signature([
        p.replace(default=_EMPTY if p.default is _EMPTY else DEFAULT, annotation=_EMPTY)
        for p in params])


class ArgumentCheck:
    """``check(args, kwargs)`` raises TypeError, naming ``what``, if they do not bind."""

    __slots__ = ("_signature", "_what", "_verdicts")

    def __init__(self, signature: inspect.Signature | None, what: str):
        self._signature = signature
        self._what = what
        self._verdicts: dict = {}

    def __call__(self, args: tuple, kwargs: dict) -> None:
        if self._signature is None:
            return
        shape = (len(args), tuple(kwargs)) if kwargs else len(args)
        error = self._verdicts.get(shape, _UNSEEN)
        if error is _UNSEEN:
            try:
                self._signature.bind(*args, **kwargs)
                error = None
            except TypeError as exc:
                error = f"{self._what}: {exc} (its signature is {self._signature})."
            if len(self._verdicts) < _MAX_SHAPES:
                self._verdicts[shape] = error
        if error is not None:
            raise TypeError(error)

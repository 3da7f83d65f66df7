"""Ray's ``label_selector`` and ``fallback_strategy`` task and actor options.

A selector maps a node label to what its value must be: ``"v"`` (equal),
``"!v"`` (not equal, or absent), ``"in(a, b)"`` and ``"!in(a, b)"``. Keys
and values follow Kubernetes' label syntax, as in Ray. A selector becomes the
hard constraints of the NODE_LABEL policy (``raylet/policies/node_label.py``);
each ``fallback_strategy`` entry's selector is tried, in order, when no node
could ever satisfy the ones before it.
"""
from __future__ import annotations

import re

_NAME = r"[a-zA-Z0-9]([a-zA-Z0-9_.-]{0,61}[a-zA-Z0-9])?"
_NAME_RE = re.compile(_NAME)
_PREFIX_RE = re.compile(rf"({_NAME})?(\.({_NAME})?)*")
_SELECTOR_RE = re.compile(rf"!?(in)?\({_NAME}(, ?{_NAME})*\)|!?{_NAME}")


def key_problem(key) -> str | None:
    if not isinstance(key, str):
        return f"label keys must be strings, got {type(key).__name__} ({key!r})"
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _PREFIX_RE.fullmatch(prefix)):
        return (f"invalid label key prefix {prefix!r}: DNS labels separated by dots, "
                "at most 253 characters")
    if len(name) > 63 or not _NAME_RE.fullmatch(name):
        return (f"invalid label key {name!r}: at most 63 characters, alphanumeric at both "
                "ends, with '-', '_' and '.' between")
    return None


def selector_problem(selector) -> str | None:
    """Why ``selector`` is not a valid label selector, or None."""
    if not isinstance(selector, dict):
        return f"a label selector must be a dict, got {type(selector).__name__}"
    for key, value in selector.items():
        problem = key_problem(key)
        if problem:
            return problem
        if not isinstance(value, str) or (value and not _SELECTOR_RE.fullmatch(value)):
            return (f"invalid label selector value {value!r} for {key!r}: use 'value', "
                    "'!value', 'in(a, b)' or '!in(a, b)', each value at most 63 characters, "
                    "alphanumeric at both ends")
    return None


def fallback_problem(fallbacks) -> str | None:
    """Why ``fallbacks`` is not a valid ``fallback_strategy``, or None."""
    if not isinstance(fallbacks, list):
        return f"fallback_strategy must be a list of dicts, got {type(fallbacks).__name__}"
    for entry in fallbacks:
        if not isinstance(entry, dict) or not entry:
            return f"each fallback_strategy entry must be a non-empty dict, got {entry!r}"
        unknown = set(entry) - {"label_selector"}
        if unknown:
            return (f"unsupported fallback_strategy option(s) {sorted(unknown)}; only "
                    "'label_selector' is supported")
        problem = selector_problem(entry["label_selector"])
        if problem:
            return problem
    return None


def constraints(selector: dict) -> dict:
    """The selector as the policy's constraints: label -> (operator, values)."""
    out = {}
    for key, value in selector.items():
        negated = value.startswith("!")
        value = value[1:] if negated else value
        if value.startswith(("in(", "(")) and value.endswith(")"):
            values = [v.strip() for v in value[value.index("(") + 1:-1].split(",")]
        else:
            values = [value]
        out[key] = ("not_in" if negated else "in", values)
    return out

"""Option parsing shared by the modules of the ``ember`` command (cli.py, dashboard/job_cli.py)."""
from __future__ import annotations

import json

import click


def parse_json_object(value: str | None, option: str) -> dict:
    """``value`` (an option's JSON) as a dict; {} if not given; a click error naming ``option``."""
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{option} must be a JSON object: {exc}") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter(f"{option} must be a JSON object, got {value!r}")
    return parsed

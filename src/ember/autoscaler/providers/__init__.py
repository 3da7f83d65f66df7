"""Node providers, chosen by ``provider.type``; see :mod:`.base` for the interface."""
from __future__ import annotations

from .base import NodeProvider
from .command import CommandNodeProvider
from .local import LocalNodeProvider

PROVIDERS = {"local": LocalNodeProvider, "command": CommandNodeProvider}


def make_provider(provider_config: dict, gcs_address: str, session_dir: str) -> NodeProvider:
    return PROVIDERS[provider_config["type"]](provider_config, gcs_address, session_dir)

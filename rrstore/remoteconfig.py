"""Remote settings (backends layer: above ``config``, beside the S3 backend whose options they set):
``[remote]`` in ``rrstore.toml`` or ``[tool.rrstore.remote]`` in ``pyproject.toml``, and which remote a
command uses.

A team configures its shared remote once (``url``, ``endpoint_url``,
``region``, ``profile``, ``push``, and the server-side encryption and storage
class every upload asks for); every command that talks to a remote then
works without ``--remote``. Precedence: the ``--remote`` flag, then
``RRSTORE_REMOTE``, then ``url``; ``--endpoint-url``, then ``endpoint_url``,
then the AWS chain (``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``).

Credentials never come from this file (it is committed with the project):
a key that names one is refused, and boto3 finds them in the standard AWS
chain (environment, ``profile`` / ``AWS_PROFILE``, instance roles).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backends.s3 import S3Options, parse_remote
from .config import load_section
from .errors import UsageError

PUSH_POLICIES = ("never", "on-failure", "always")
SSE_MODES = ("AES256", "aws:kms")
# Classes whose objects cannot be read back at once: a ref or record there would be unrestorable.
ARCHIVAL_CLASSES = ("GLACIER", "DEEP_ARCHIVE")
ENV_REMOTE = "RRSTORE_REMOTE"
_STRINGS = ("url", "endpoint_url", "region", "profile", "push", "sse", "sse_kms_key_id", "storage_class")
_SECRET = re.compile(r"secret|access_key|session_token|password|credential|token", re.IGNORECASE)


@dataclass(frozen=True)
class RemoteSettings:
    """The project's ``[remote]`` table, checked; ``source`` names the file and table for messages."""

    url: str | None = None
    endpoint_url: str | None = None
    push: str = "never"
    options: S3Options = field(default_factory=S3Options)
    source: str = "remote"


@dataclass(frozen=True)
class RemoteTarget:
    """The remote a command talks to, resolved by precedence, and the boto3 options for it."""

    url: str
    endpoint_url: str | None
    options: S3Options
    origin: str  # "--remote", ENV_REMOTE or the settings' source: where the url came from


def parse_remote_settings(table: Mapping[str, Any], where: str) -> RemoteSettings:
    """``table`` checked: only known keys, each a non-empty string, ``push``/``sse`` from their lists."""
    for key in table:
        if _SECRET.search(key):
            raise UsageError(f"{where}: {key!r} is refused: credentials never go in a settings file (it is "
                             "shared with the project); use the standard AWS chain (AWS_ACCESS_KEY_ID and "
                             "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or profile = \"...\", an instance role)")
        if key not in _STRINGS:
            raise UsageError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(_STRINGS))})")
        value = table[key]
        if not isinstance(value, str) or not value.strip():
            raise UsageError(f"{where}: {key} must be a non-empty string")
    values = {key: table.get(key) for key in _STRINGS}
    _check_choices(values, where)
    if values["url"] is not None:
        try:
            parse_remote(values["url"])
        except UsageError as exc:
            raise UsageError(f"{where}: url: {exc}") from None
    options = S3Options(values["region"], values["profile"], values["sse"], values["sse_kms_key_id"],
                        values["storage_class"])
    return RemoteSettings(values["url"], values["endpoint_url"], values["push"] or "never", options, where)


def _check_choices(values: dict[str, Any], where: str) -> None:
    if values["push"] is not None and values["push"] not in PUSH_POLICIES:
        raise UsageError(f"{where}: push must be one of {', '.join(PUSH_POLICIES)}, not {values['push']!r}")
    if values["sse"] is not None and values["sse"] not in SSE_MODES:
        raise UsageError(f"{where}: sse must be one of {', '.join(SSE_MODES)}, not {values['sse']!r}")
    if values["sse_kms_key_id"] is not None and values["sse"] != "aws:kms":
        raise UsageError(f"{where}: sse_kms_key_id needs sse = \"aws:kms\"")
    if values["storage_class"] is not None and values["storage_class"].upper() in ARCHIVAL_CLASSES:
        raise UsageError(f"{where}: storage_class {values['storage_class']!r} cannot be read back at once, "
                         "and rrstore reads refs and records on every listing: choose e.g. STANDARD_IA, "
                         "INTELLIGENT_TIERING or GLACIER_IR")
    if values["endpoint_url"] is not None and not re.match(r"https?://", values["endpoint_url"]):
        raise UsageError(f"{where}: endpoint_url must start with http:// or https://")


def load_remote_settings(root: Path) -> RemoteSettings:
    """The project's remote settings (the defaults when it has no ``[remote]`` table)."""
    table, where = load_section(root, "remote")
    return parse_remote_settings(table, where)


def resolve_remote(settings: RemoteSettings, remote: str | None = None, endpoint_url: str | None = None,
                   env: Mapping[str, str] | None = None) -> RemoteTarget:
    """The remote to use: ``remote`` (the flag), else ``RRSTORE_REMOTE``, else ``settings.url``; the
    endpoint: ``endpoint_url``, else ``settings.endpoint_url``, else None (the AWS chain's).
    UsageError when none names a remote."""
    env = os.environ if env is None else env
    endpoint = endpoint_url or settings.endpoint_url
    if remote:
        return RemoteTarget(remote, endpoint, settings.options, "--remote")
    if env.get(ENV_REMOTE):
        return RemoteTarget(env[ENV_REMOTE], endpoint, settings.options, ENV_REMOTE)
    if settings.url:
        return RemoteTarget(settings.url, endpoint, settings.options, settings.source)
    raise UsageError(f"no remote given: pass --remote s3://BUCKET/PREFIX, set {ENV_REMOTE}, or set url in "
                     "[remote] of rrstore.toml (or [tool.rrstore.remote] of pyproject.toml)")

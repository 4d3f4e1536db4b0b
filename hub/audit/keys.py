"""The log's Ed25519 signing key: from settings, from the data dir, or made up in memory.

`HUB_LOG_SIGNING_KEY` holds a note signer key (`PRIVATE+KEY+<name>+<hash>+<base64>`, the form
golang.org/x/mod/sumdb/note reads). For the embedded default, `hub up` generates one on first
start into `<data dir>/log_signing_key` (mode 0600) and passes it in settings. Without either
(tests, a bare `build_hub`), a key is generated in memory and a warning logged: its tree heads
cannot be verified after a restart. The key's name is the log's origin.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from hub.settings import Settings
from projections.merkle import NoteSigner

log = structlog.get_logger(__name__)
KEY_FILE = "log_signing_key"


def origin_for(hub_id: str) -> str:
    """The log's origin (and key name): `credit-hub.<hub id>/log`."""
    return f"credit-hub.{hub_id}/log"


def key_file(data_dir: Path, hub_id: str) -> str:
    """The signer key saved in `data_dir`, generated (mode 0600) when absent."""
    path = data_dir / KEY_FILE
    if path.exists():
        return path.read_text().strip()
    key = NoteSigner.generate(origin_for(hub_id)).private_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    return key


def signer_from(settings: Settings) -> NoteSigner:
    if settings.log_signing_key:
        return NoteSigner.from_key(settings.log_signing_key.strip())
    log.warning(
        "log_signing_key_ephemeral",
        detail="HUB_LOG_SIGNING_KEY is unset: tree heads are signed with a key made up for "
        "this process only",
    )
    return NoteSigner.generate(origin_for(settings.hub_id))

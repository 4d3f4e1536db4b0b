"""Auditing the credit log: signed tree heads, proofs, export and offline verification.

`AuditLog` answers the API; `TreeHeads` signs checkpoints as the tree grows; `export` writes
the log with its heads and key to a directory and `verify` checks such a directory offline.
"""

from hub.audit.heads import TreeHeads
from hub.audit.keys import key_file, origin_for, signer_from
from hub.audit.service import AuditLog

__all__ = ["AuditLog", "TreeHeads", "key_file", "origin_for", "signer_from"]

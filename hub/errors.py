"""Errors of the hub, each mapped to one HTTP status by the API's single problem handler.

HubError
├── InputError        400  a field is malformed (names the field)
├── Unauthenticated   401  no key, or a key the hub does not know
├── Forbidden         403  outside the key's scopes, domains or authority
├── NotFound          404
├── Conflict          409  the same decision with other content; a concurrent change
├── RuleViolation     422  a rule of the domain refuses the command (names the rule)
├── TooManyRequests   429
└── Unavailable       503  a dependency is down or the index is behind (Retry-After)
"""

from __future__ import annotations


class HubError(Exception):
    status = 500
    title = "Internal error"
    kind = "internal"

    def __init__(
        self,
        detail: str,
        *,
        field: str | None = None,
        rule: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.rule = rule
        self.retry_after = retry_after


class InputError(HubError):
    status = 400
    title = "Invalid input"
    kind = "invalid-input"


class Unauthenticated(HubError):
    status = 401
    title = "Authentication required"
    kind = "unauthenticated"


class Forbidden(HubError):
    status = 403
    title = "Forbidden"
    kind = "forbidden"


class NotFound(HubError):
    status = 404
    title = "Not found"
    kind = "not-found"


class Conflict(HubError):
    status = 409
    title = "Conflict"
    kind = "conflict"


class RuleViolation(HubError):
    status = 422
    title = "Refused by a rule"
    kind = "rule-violation"


class TooManyRequests(HubError):
    status = 429
    title = "Too many requests"
    kind = "too-many-requests"


class Unavailable(HubError):
    status = 503
    title = "Service unavailable"
    kind = "unavailable"

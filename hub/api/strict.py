"""Strict JSON bodies: a guard that decodes every request body with msgspec in strict mode.

Litestar converts bodies leniently (a string "3" becomes 3, a number becomes a Unix-time
datetime), which would store what a client did not mean. Guards run before Litestar parses
the handler's arguments, so this one refuses such bodies first, as a 400 naming the field;
the body is cached on the request, so nothing is read twice from the socket. On routes that
need a key the check runs right after authentication (in `provide_agency`), so that a caller
without a valid key learns that first.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.connection import ASGIConnection, Request
from litestar.handlers.base import BaseRouteHandler

from hub.api.problems import field_of
from hub.errors import InputError

_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def _decoder_for(handler: BaseRouteHandler) -> tuple[msgspec.json.Decoder[Any], bool] | None:
    """The strict decoder of a handler's body type, and whether the body may be left out.

    Decoders are kept per body type: types live as long as the process, handlers do not.
    """
    param = handler.parsed_fn_signature.parameters.get("data")
    if param is None:
        return None
    decoder = _decoders.get(param.annotation)
    if decoder is None:
        decoder = _decoders[param.annotation] = msgspec.json.Decoder(param.annotation)
    return decoder, param.is_optional or param.has_default


async def strict_body(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """The guard, for routes without a key; authenticated routes check in `provide_agency`."""
    if "agency" in handler.parsed_fn_signature.parameters:
        return
    await check_body(connection, handler)


def _nul_path(value: object, path: str = "") -> str | None:
    """The dotted path of the first string holding a NUL character, if any."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    items: Any = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, item in items:
        found = _nul_path(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def _refuse_nul(body: bytes) -> None:
    """PostgreSQL text cannot hold NUL: refuse it at the door rather than fail a projection."""
    if b"\\u0000" not in body:
        return
    try:
        field = _nul_path(msgspec.json.decode(body)) or "body"
    except msgspec.DecodeError:
        return  # the decoder below names the real problem
    raise InputError("text may not contain the NUL character (\\u0000)", field=field)


async def check_body(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    for name, value in connection.query_params.items():
        if "\x00" in value:
            raise InputError("a query parameter may not contain the NUL character", field=name)
    found = _decoder_for(handler)
    if found is None or not isinstance(connection, Request):
        return
    decoder, optional = found
    body = await connection.body()
    if not body.strip():
        if optional:
            return
        raise InputError("the request body is empty; send a JSON object", field="body")
    _refuse_nul(body)
    try:
        decoder.decode(body)
    except msgspec.ValidationError as exc:
        message = str(exc)
        raise InputError(message, field=field_of(message) or "body") from None
    except msgspec.DecodeError as exc:
        raise InputError(f"the request body is not valid JSON: {exc}", field="body") from None

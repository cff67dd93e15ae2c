"""The one codec module: JSON lines and msgpack for commands and journal records.

Encoders and decoders are built once at import and reused (msgspec's fast path). Decoding a
command checks the wire contract (types, tags, decimal-string syntax, required ids); failures
raise :class:`BadCommand`, which names the field and says what was wrong. Callers add the
position (file and line, or topic offset).

Determinism: struct fields encode in declaration order and ``Decimal`` as its exact string, so
the same events always encode to the same bytes; :func:`encode_outcome_json` output is what the
replay digest hashes.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

from events.commands import COMMAND_TYPES, Command
from events.journal import Outcome

_OPTIONAL_ID: Final = frozenset({"mark_price", "accrue_interest"})


class BadCommand(ValueError):
    """A command that cannot be decoded or breaks the wire contract.

    ``field`` is a JSON path such as ``$.amt`` (or ``$`` for the whole record).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field != "$" else message)
        self.field = field
        self.message = message


_json_cmd_decoder: Final = msgspec.json.Decoder(Command)
_msgpack_cmd_decoder: Final = msgspec.msgpack.Decoder(Command)
_json_encoder: Final = msgspec.json.Encoder(decimal_format="string")
_msgpack_encoder: Final = msgspec.msgpack.Encoder(decimal_format="string")
_json_outcome_decoder: Final = msgspec.json.Decoder(Outcome)
_msgpack_outcome_decoder: Final = msgspec.msgpack.Decoder(Outcome)

_PATH_RE: Final = re.compile(r" - at `(\$[^`]*)`$")
_TAGS: Final = ", ".join(sorted(str(t.__struct_config__.tag) for t in COMMAND_TYPES))


def _bad(err: msgspec.MsgspecError) -> BadCommand:
    text = str(err)
    match = _PATH_RE.search(text)
    field = match.group(1) if match else "$"
    message = text[: match.start()] if match else text
    if message.startswith("Invalid value") and field == "$.type":
        message = f"unknown command type; expected one of: {_TAGS}"
    elif "matching regex" in message:
        message = 'expected a non-negative decimal string such as "62961.4"'
    elif message.startswith("Expected `str`, got `float`") or message.startswith("Expected `str`, got `int`"):
        message = 'decimals are JSON strings ("0.5"), not JSON numbers'
    return BadCommand(field, message)


def _check(cmd: Command) -> Command:
    tag = cmd.__struct_config__.tag
    if cmd.id is None and tag not in _OPTIONAL_ID:
        raise BadCommand("$.id", f"required for `{tag}` commands (the writer's idempotency key)")
    return cmd


def decode_command_json(data: bytes | str) -> Command:
    """Decode one JSONL command; raise :class:`BadCommand` naming the field on any error."""
    try:
        return _check(_json_cmd_decoder.decode(data))
    except msgspec.MsgspecError as err:
        raise _bad(err) from None
    except RecursionError:
        raise BadCommand("$", "nested too deeply to be a command") from None


def decode_command_msgpack(data: bytes) -> Command:
    """Decode one msgpack command; raise :class:`BadCommand` naming the field on any error."""
    try:
        return _check(_msgpack_cmd_decoder.decode(data))
    except msgspec.MsgspecError as err:
        raise _bad(err) from None
    except RecursionError:
        raise BadCommand("$", "nested too deeply to be a command") from None


def encode_command_json(cmd: Command) -> bytes:
    return _json_encoder.encode(cmd)


def encode_command_msgpack(cmd: Command) -> bytes:
    return _msgpack_encoder.encode(cmd)


def encode_outcome_json(outcome: Outcome) -> bytes:
    return _json_encoder.encode(outcome)


def encode_outcome_msgpack(outcome: Outcome) -> bytes:
    return _msgpack_encoder.encode(outcome)


def decode_outcome_json(data: bytes | str) -> Outcome:
    return _json_outcome_decoder.decode(data)


def decode_outcome_msgpack(data: bytes) -> Outcome:
    return _msgpack_outcome_decoder.decode(data)


def encode_json(obj: object) -> bytes:
    """Encode any msgspec-supported value (used for views and snapshots)."""
    return _json_encoder.encode(obj)

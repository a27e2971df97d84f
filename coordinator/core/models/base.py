"""The field types every model shares (SPEC §4 ids, money, times) and the strict request-body base."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints


def _integral(value: Any) -> Any:
    # JSON has one number type: 1800.0 is the integer 1800 (JSON Schema's "integer" says so, and a
    # JavaScript page cannot tell them apart). 1800.5, "1800" and true stay what they are, and
    # strict validation refuses them.
    if type(value) is float and value.is_integer():
        return int(value)
    return value


Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
#: A display name: 1..100 characters with at least one that is not blank, stored stripped. The bounds
#: apply before stripping so that the JSON schema (minLength, maxLength, pattern) says exactly what passes.
#: "Not blank" spelled out: ``\S`` differs between the JSON Schema (ECMA) regex a client or a
#: schema fuzzer reads, pydantic's Rust regex and Python's ``str.strip`` (U+0085, U+FEFF, U+001C-1F),
#: so the class names every character any of them calls blank. A name that passes never strips to "".
NOT_BLANK = r"[^\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
Name = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=NOT_BLANK), AfterValidator(str.strip)]
Token = Annotated[str, StringConstraints(min_length=1, max_length=512)]
#: Put last in an int's ``Annotated`` (after its bounds, so they stay JSON Schema bounds): a JSON
#: number without a fraction is an integer; never a bool or a string.
JSON_INTEGER = BeforeValidator(_integral)
Cents = Annotated[int, Field(ge=0, le=10**12), JSON_INTEGER]
#: An order version: Lua numbers are doubles, so versions stay within 2**53 to compare exactly.
Version = Annotated[int, Field(ge=1, le=2**53), JSON_INTEGER]
Quantity = Annotated[int, Field(ge=1, le=999), JSON_INTEGER]
Millis = int


class Body(BaseModel):
    """Data a client sends: unknown fields are a mistake, and every value has its JSON type.

    Strict (issue 15): a bool is a JSON ``true``/``false`` (not ``1`` or ``"yes"``), an int a JSON
    integer (a number without a fraction; not ``"1800"``, ``1800.5`` or ``true``). Enums and literals still take their JSON
    string values: bodies are parsed with ``model_validate_json``.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

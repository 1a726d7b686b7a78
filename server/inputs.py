"""The bases of every request model: `Schema` for bodies, `Query` for query strings.

Both refuse what the database cannot store (`server.validators.refuse_unstorable`: NUL in text,
integers beyond int64, unbounded keys) with 422 naming the field, so an operation whose model
derives from one of them cannot hand PostgreSQL a value it answers with a 500
(`tests/security/test_hostile_input.py` checks that every operation's models do)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator

from server.validators import refuse_unstorable


class Schema(BaseModel):
    """Base for request bodies: unknown fields are an error, not silently dropped; no field holds
    what the database cannot store (NUL in text, integers beyond int64, unbounded keys)."""

    model_config = ConfigDict(extra="forbid")

    _storable = field_validator("*")(refuse_unstorable)


class Query(BaseModel):
    """Base for query-string models: unknown parameters are ignored; the same storable checks."""

    model_config = ConfigDict(extra="ignore")

    _storable = field_validator("*")(refuse_unstorable)

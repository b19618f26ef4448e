"""Base classes shared by every request/response schema."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# Every id column is an INTEGER: int4 on PostgreSQL. Ids are bounded to it on every backend,
# so an id the database cannot hold never reaches a query (it overflowed the driver: a 500).
MAX_DB_ID = 2**31 - 1
DbId = Annotated[int, Field(ge=1, le=MAX_DB_ID)]
"""An id in a body or query: outside 1..2^31-1 is a 422 (`Annotated[DbId | None, Query()]`)."""
PathId = Annotated[int, Path(ge=1, le=MAX_DB_ID)]
"""An id in a path: outside 1..2^31-1 names no object, a 404 (`errors.py` maps it)."""

# Names are trimmed; YAML and other text keep every character as given.
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class RequestModel(BaseModel):
    """Request bodies: unknown fields are an error (no mass assignment)."""

    model_config = ConfigDict(extra="forbid")


class ResponseModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)

"""One list envelope and one paging dependency for every list endpoint."""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query, Request
from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from edl_api.errors import AppError
from edl_api.schemas import MAX_DB_ID
from edl_api.state import AppState

T = TypeVar("T")
U = TypeVar("U")
S = TypeVar("S", bound=BaseModel)


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int

    def with_items(self, items: list[U]) -> Page[U]:
        """The same page with other items (a list that adds per-page counts to each row)."""
        return Page(items=items, total=self.total, limit=self.limit, offset=self.offset)


class PageParams(BaseModel):
    limit: int = 50
    offset: int = 0


class PageTooLarge(AppError):
    code = "validation_error"
    status_code = 422


def page_params(
    request: Request,
    limit: Annotated[int, Query(ge=1, description="page size")] = 50,
    # No table holds more rows than an id can number; a larger offset overflowed SQLite.
    offset: Annotated[int, Query(ge=0, le=MAX_DB_ID, description="items to skip")] = 0,
) -> PageParams:
    page_max = AppState.of(request.app).settings.page_max
    if limit > page_max:
        raise PageTooLarge(
            [
                {
                    "loc": ["query", "limit"],
                    "msg": f"limit must be <= {page_max}",
                    "type": "too_large",
                }
            ]
        )
    return PageParams(limit=limit, offset=offset)


PageDep = Annotated[PageParams, Depends(page_params)]


def document_page_max(schema: dict[str, Any], page_max: int) -> None:
    """The schema's `limit` says `maximum: page_max` (a setting, so unknown when routes are
    declared); `page_params` enforces it."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for param in operation.get("parameters", []) if isinstance(operation, dict) else []:
                if param.get("in") == "query" and param.get("name") == "limit":
                    param.setdefault("schema", {})["maximum"] = page_max


async def paginate(
    session: AsyncSession, query: Select[Any], page: PageParams, schema: type[S]
) -> Page[S]:
    """One page of `query`'s rows (first column) as `schema`, and the total without paging."""
    total = (
        await session.execute(select(func.count()).select_from(query.order_by(None).subquery()))
    ).scalar_one()
    rows = (await session.execute(query.limit(page.limit).offset(page.offset))).scalars().all()
    return Page(
        items=[schema.model_validate(row) for row in rows],
        total=int(total),
        limit=page.limit,
        offset=page.offset,
    )

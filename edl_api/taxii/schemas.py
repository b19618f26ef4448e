"""TAXII 2.1 resources as documented in OpenAPI (the routes send prebuilt bytes)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class TaxiiErrorBody(BaseModel):
    title: str
    description: str | None = None
    http_status: str | None = None


class DiscoveryResource(BaseModel):
    title: str
    description: str | None = None
    default: str | None = None
    api_roots: list[str] = []


class ApiRootResource(BaseModel):
    title: str
    description: str | None = None
    versions: list[str]
    max_content_length: int


class CollectionResource(BaseModel):
    id: str
    title: str
    description: str | None = None
    can_read: bool
    can_write: bool
    media_types: list[str] = []


class CollectionsResource(BaseModel):
    collections: list[CollectionResource] = []


class EnvelopeResource(BaseModel):
    more: bool = False
    next: str | None = None
    objects: list[dict[str, Any]] = []


class ManifestRecord(BaseModel):
    id: str
    date_added: str
    version: str
    media_type: str | None = None


class ManifestResource(BaseModel):
    more: bool = False
    next: str | None = None
    objects: list[ManifestRecord] = []

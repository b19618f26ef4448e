"""Swagger UI (`/docs`) and ReDoc (`/redoc`) from packaged assets, so an air-gapped SOC gets
working API docs: nothing is loaded from a CDN.

The JavaScript and CSS come from the `fastapi-offline` wheel (1.7.7 ships Swagger UI 5.32.6
and ReDoc 2.5.3 under `fastapi_offline/static/`; MIT, Swagger UI itself Apache-2.0), read
through `importlib.resources`. The pages are written here rather than by FastAPI's helpers so
they carry no inline script (the Swagger UI options live in a served file) and can be sent
with a strict Content-Security-Policy. Every URL in them is relative, so the docs work behind
a path prefix too (`/edl/docs` loads `/edl/openapi.json`).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import html
import importlib.metadata
import importlib.resources
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request, Response

from edl_api import __version__
from edl_api.auth.deps import public
from edl_api.errors import NotFound
from edl_api.feeds.http import accepts_gzip

router = APIRouter(dependencies=[Depends(public)], include_in_schema=False)

ASSET_PACKAGE = "fastapi_offline"
# Changes with either package, so a browser never keeps an old bundle after an upgrade.
ASSET_VERSION = f"{__version__}-{importlib.metadata.version('fastapi-offline')}"
ONE_YEAR = 31_536_000

# Options as FastAPI's own /docs sets them, plus `validatorUrl: null`: by default Swagger UI
# may send the spec to validator.swagger.io, which an offline service must not do.
SWAGGER_INIT_JS = """\
// The spec is fetched relative to this page, so a path prefix in front of /docs just works.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: new URL("openapi.json", document.baseURI).href,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
});
"""
DOCS_CSS = "body { margin: 0; padding: 0; }\n"

# name → (media type, file in ASSET_PACKAGE's static/ or None for the text above)
_ASSETS: dict[str, tuple[str, str | None]] = {
    "swagger-ui-bundle.js": ("text/javascript; charset=utf-8", "swagger-ui-bundle.js"),
    "swagger-ui.css": ("text/css; charset=utf-8", "swagger-ui.css"),
    "redoc.standalone.js": ("text/javascript; charset=utf-8", "redoc.standalone.js"),
    "favicon.png": ("image/png", "favicon.png"),
    "swagger-init.js": ("text/javascript; charset=utf-8", None),
    "docs.css": ("text/css; charset=utf-8", None),
}
_OWN_TEXT = {"swagger-init.js": SWAGGER_INIT_JS, "docs.css": DOCS_CSS}

# Swagger UI and ReDoc style elements inline (React style attributes, styled-components), so
# style-src needs 'unsafe-inline'; ReDoc's search runs in a Worker made from a blob: URL.
# Scripts only from this service: no inline script, no eval. ReDoc 2.5.3 shows a logo from
# cdn.redoc.ly in its side menu: img-src refuses that request (the logo then hides itself).
CSP = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "font-src 'self' data:",
    "connect-src 'self'",
    "worker-src blob:",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-cache",  # small; the big files it names are versioned and cached
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str  # weak: the gzip and identity encodings are the same content

    @functools.cached_property
    def gzipped(self) -> bytes:
        return gzip.compress(self.body, compresslevel=6, mtime=0)


@functools.cache
def load_asset(name: str) -> Asset | None:
    """The named docs asset (read once per process), or None for a name that is not one."""
    if name not in _ASSETS:
        return None
    media_type, packaged = _ASSETS[name]
    if packaged is None:
        body = _OWN_TEXT[name].encode()
    else:
        body = (importlib.resources.files(ASSET_PACKAGE) / "static" / packaged).read_bytes()
    digest = hashlib.sha256(body).hexdigest()[:20]
    return Asset(body, media_type, f'W/"{digest}"')


def _asset_url(name: str) -> str:
    return f"docs/assets/{name}?v={ASSET_VERSION}"



def _page(title: str, head: str, body: str) -> Response:
    document = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(title)}</title>\n"
        f"<link rel=\"icon\" type=\"image/png\" href=\"{_asset_url('favicon.png')}\">\n"
        f"{head}</head>\n<body>\n"
        "<noscript>These docs need JavaScript; the OpenAPI schema itself is at "
        "<a href=\"openapi.json\">openapi.json</a>.</noscript>\n"
        f"{body}</body>\n</html>\n"
    )
    return Response(document, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


@router.get("/docs")
async def swagger_ui(request: Request) -> Response:
    return _page(
        f"{request.app.title} - Swagger UI",
        f"<link rel=\"stylesheet\" href=\"{_asset_url('swagger-ui.css')}\">\n",
        "<div id=\"swagger-ui\"></div>\n"
        f"<script src=\"{_asset_url('swagger-ui-bundle.js')}\"></script>\n"
        f"<script src=\"{_asset_url('swagger-init.js')}\"></script>\n",
    )


@router.get("/redoc")
async def redoc(request: Request) -> Response:
    # No Google Fonts link (FastAPI's page has one): ReDoc falls back to local fonts.
    return _page(
        f"{request.app.title} - ReDoc",
        f"<link rel=\"stylesheet\" href=\"{_asset_url('docs.css')}\">\n",
        "<redoc spec-url=\"openapi.json\"></redoc>\n"
        f"<script src=\"{_asset_url('redoc.standalone.js')}\"></script>\n",
    )


@router.get("/docs/assets/{name}")
async def docs_asset(name: str, request: Request, v: str | None = None) -> Response:
    """A docs asset: cached for a year when asked for at the current version (the pages ask
    so), else revalidated by ETag; gzip when the client takes it (the bundles are ~1.5 MB)."""
    asset = load_asset(name)
    if asset is None:
        raise NotFound(f"no docs asset {name!r}")
    headers = {
        "ETag": asset.etag,
        "Cache-Control": f"public, max-age={ONE_YEAR}, immutable" if v == ASSET_VERSION
        else "no-cache",
        "Vary": "Accept-Encoding",
        "X-Content-Type-Options": "nosniff",
    }
    wanted = {tag.strip() for tag in request.headers.get("if-none-match", "").split(",")}
    if asset.etag in wanted or asset.etag.removeprefix("W/") in wanted or "*" in wanted:
        return Response(status_code=304, headers=headers)
    if accepts_gzip(request.headers.get("accept-encoding")):
        return Response(asset.gzipped, media_type=asset.media_type,
                        headers=headers | {"Content-Encoding": "gzip"})
    return Response(asset.body, media_type=asset.media_type, headers=headers)

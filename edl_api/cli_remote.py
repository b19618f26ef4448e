"""`edl-api runs list|show|logs` and `edl-api feeds list`: read a running server's API.

The key comes from EDL_CLI_KEY only (an argument would show in `ps` and shell history);
the server from --url or EDL_CLI_URL. Every failure is one line on stderr saying what to
change (exit 1), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported by the commands that talk to a server: run-local does not
    import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "EDL_CLI_URL"
KEY_ENV = "EDL_CLI_KEY"
PAGE = 500  # the server's default EDL_PAGE_MAX: fewer round trips for long lists


class CliError(Exception):
    """A failure the operator can fix; its text is printed as `error: …`."""


class Remote:
    def __init__(self, url: str, key: str, timeout: float = 30.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.client = httpx.Client(
            base_url=self.url, headers={"X-API-Key": key}, timeout=timeout,
            follow_redirects=False,
        )

    def close(self) -> None:
        self.client.close()

    def unreachable(self, exc: Exception) -> CliError:
        return CliError(
            f"cannot reach the EDL API at {self.url} ({type(exc).__name__}: {exc}); is "
            f"`edl-api serve` running there? Point --url or {URL_ENV} at it"
        )

    def check(self, response: httpx.Response, what: str) -> httpx.Response:
        status = response.status_code
        if status < 400:
            return response
        if status == 401:
            raise CliError(
                f"{self.url} refused the key (401): set {KEY_ENV} to a valid admin (edla_…) "
                "or profile (edlp_…) key"
            )
        if status == 404:
            raise CliError(f"{what}: not found (or outside this key's scope)")
        try:
            body = response.json()
            reason = f"{body.get('error')}: {body.get('detail')}"
        except (ValueError, AttributeError):
            reason = response.text[:200]
        raise CliError(f"{what}: HTTP {status} {reason}")

    def get(self, path: str, what: str, **params: Any) -> httpx.Response:
        import httpx

        query = {k: v for k, v in params.items() if v is not None}
        try:
            response = self.client.get(path, params=query)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise self.unreachable(exc) from None
        return self.check(response, what)

    def json(self, path: str, what: str, **params: Any) -> Any:
        response = self.get(path, what, **params)
        try:
            return response.json()
        except ValueError:
            raise CliError(
                f"{self.url}{path} did not answer JSON: is {self.url} the EDL API?"
            ) from None

    def pages(self, path: str, what: str, **params: Any) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            page = self.json(path, what, limit=PAGE, offset=offset, **params)
            items = page.get("items", [])
            yield from items
            offset += len(items)
            if not items or offset >= int(page.get("total", 0)):
                return


def _remote(args: argparse.Namespace) -> Remote:
    key = os.environ.get(KEY_ENV, "").strip()
    if not key:
        raise CliError(
            f"no key: set {KEY_ENV} to an admin (edla_…) or profile (edlp_…) key, e.g. "
            f"export {KEY_ENV}=$(edl-api create-admin --name me --role reader)"
        )
    return Remote(args.url, key)


def _time(value: str | None) -> str:
    return "-" if not value else value.replace("T", " ")[:19]


def _published(run: dict[str, Any]) -> str:
    published = (run.get("counts") or {}).get("published")
    if isinstance(published, dict) and any(published.values()):
        return " ".join(f"{kind}={count}" for kind, count in published.items() if count)
    return "nothing published"


def _runs_list(remote: Remote, args: argparse.Namespace) -> Any:
    page = remote.json(
        "/runs", "runs", limit=args.limit, state=args.state, pipeline_id=args.pipeline_id,
        profile_id=args.profile_id, trigger=args.trigger,
    )
    if args.json:
        return page
    print(f"{'ID':>6}  {'STATE':<11} {'TRIGGER':<8} {'PIPELINE':>8}  {'CREATED':<19}  "
          "PUBLISHED / ERROR")
    for run in page["items"]:
        # A failed run shows why; a succeeded one what it published (its errors are
        # warnings: an optional source down, a feed held by a guard) and how many.
        errors = run.get("errors") or []
        if errors and run["state"] != "succeeded":
            tail = f"error: {_error_text(errors[0])}"
        else:
            tail = _published(run) + (f" ({len(errors)} warning(s))" if errors else "")
        print(f"{run['id']:>6}  {run['state']:<11} {run['trigger']:<8} {run['pipeline_id']:>8}  "
              f"{_time(run['created_at']):<19}  {tail}")
    print(f"({len(page['items'])} of {page['total']} runs)")
    return None


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        parts = [str(error[k]) for k in ("source", "message", "detail", "error") if error.get(k)]
        return ": ".join(parts) or json.dumps(error)
    return str(error)


def _runs_show(remote: Remote, args: argparse.Namespace) -> Any:
    run = remote.json(f"/runs/{args.run_id}", f"run {args.run_id}")
    if args.json:
        return run
    print(f"run {run['id']}: {run['state']} (trigger {run['trigger']}, mode {run['mode']}, "
          f"pipeline {run['pipeline_id']}, config {run['profile_config_id']} "
          f"v{run['config_version']})")
    print(f"  created {_time(run['created_at'])}, started {_time(run.get('started_at'))}, "
          f"finished {_time(run.get('finished_at'))}")
    if run.get("reason"):
        print(f"  reason: {run['reason']}")
    for artifact in run.get("artifacts") or []:
        state = "published" if artifact.get("published") else (
            f"not published: {artifact.get('reason') or '-'}"
        )
        print(f"  {artifact['indicator_type']}: {artifact['count']} entries, {state}")
    label = "warning" if run["state"] == "succeeded" else "error"  # it ran; these held feeds
    for error in run.get("errors") or []:
        print(f"  {label}: {_error_text(error)}")
    print(f"  log: edl-api runs logs {run['id']}")
    return None


def _runs_logs(remote: Remote, args: argparse.Namespace) -> Any:
    import httpx

    path, what = f"/runs/{args.run_id}/logs", f"run {args.run_id}"
    params = {k: v for k, v in (("tail", args.tail), ("follow", "true" if args.follow else None))
              if v is not None}
    try:
        with remote.client.stream("GET", path, params=params, timeout=None) as response:
            if response.status_code >= 400:
                response.read()
                remote.check(response, what)
            for chunk in response.iter_text():
                sys.stdout.write(chunk)
                sys.stdout.flush()
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise remote.unreachable(exc) from None
    return None


def _profiles(remote: Remote) -> list[dict[str, Any]]:
    me = remote.json("/me", "who am I")
    if me.get("kind") == "profile":  # a profile key cannot list profiles, only read its own
        return [remote.json(f"/profiles/{pid}", f"profile {pid}") for pid in me["profile_ids"]]
    return list(remote.pages("/profiles", "profiles"))  # the server lists the key's scope


def _feeds_list(remote: Remote, args: argparse.Namespace) -> Any:
    rows: list[dict[str, Any]] = []
    for profile in _profiles(remote):
        pid = profile["id"]
        active = remote.json(f"/profiles/{pid}/pipelines/active", f"profile {pid}")
        for pipeline in active.get("items", []):
            for kind, feed in sorted((pipeline.get("feeds") or {}).items()):
                rows.append({
                    "profile_id": pid, "profile": profile.get("name"), "kind": "pipeline",
                    "name": pipeline["name"], "id": pipeline["pipeline_id"],
                    "indicator_type": kind, "count": feed.get("count"),
                    "url": f"{remote.url}/pipelines/{pipeline['pipeline_id']}/edl/{kind}",
                })
        for device in remote.pages(f"/profiles/{pid}/devices", f"devices of profile {pid}"):
            for feed in device.get("feeds") or []:
                rows.append({
                    "profile_id": pid, "profile": profile.get("name"), "kind": "device",
                    "name": device["name"], "id": device["id"],
                    "indicator_type": feed["indicator_type"], "count": feed.get("allocated"),
                    "url": feed["url"],
                })
    if args.json:
        return {"items": rows}
    print("# firewalls read these with HTTP Basic: any user name, a device token (edlf_…) "
          "as the password")
    for row in rows:
        count = "-" if row["count"] is None else row["count"]
        print(f"{row['profile']}  {row['kind']} {row['id']} {row['name']}  "
              f"{row['indicator_type']}  {count}  {row['url']}")
    if not rows:
        print("# no published feeds yet: run a pipeline (POST /runs) first")
    return None


def _run(args: argparse.Namespace) -> int:
    try:
        remote = _remote(args)
        try:
            result = args.remote(remote, args)
        finally:
            remote.close()
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if result is not None:
        print(json.dumps(result, indent=2))
    return 0


def add_parsers(sub: Any) -> None:
    """Add `runs` and `feeds` to the `edl-api` subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", default=os.environ.get(URL_ENV) or DEFAULT_URL,
        help=f"the server's base URL ({URL_ENV}, default {DEFAULT_URL}); the key is read "
        f"from {KEY_ENV}",
    )
    common.add_argument("--json", action="store_true",
                        help="print the API's JSON answer instead of a table (default off)")

    runs = sub.add_parser("runs", help="list runs, show one, print its log (running server)")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True)
    listing = runs_sub.add_parser("list", parents=[common], help="recent runs, newest first")
    listing.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    listing.add_argument("--state", help="only this state, e.g. failed (default all)")
    listing.add_argument("--pipeline-id", type=int, help="only this pipeline (default all)")
    listing.add_argument("--profile-id", type=int, help="only this profile (default all)")
    listing.add_argument("--trigger", choices=["api", "schedule"],
                         help="only runs launched by the API or the scheduler (default both)")
    listing.set_defaults(func=_run, remote=_runs_list)
    show = runs_sub.add_parser("show", parents=[common], help="one run: state, feeds, errors")
    show.add_argument("run_id", type=int, help="the run's id")
    show.set_defaults(func=_run, remote=_runs_show)
    logs = runs_sub.add_parser("logs", parents=[common], help="a run's engine log")
    logs.add_argument("run_id", type=int, help="the run's id")
    logs.add_argument("--tail", type=int, help="only the last N lines (default all)")
    logs.add_argument("--follow", action="store_true",
                      help="keep printing until the run ends (default off)")
    logs.set_defaults(func=_run, remote=_runs_logs)

    feeds = sub.add_parser("feeds", help="feed URLs ready to paste into a firewall")
    feeds_sub = feeds.add_subparsers(dest="feeds_command", required=True)
    feed_list = feeds_sub.add_parser(
        "list", parents=[common],
        help="every published feed and device feed URL the key can see",
    )
    feed_list.set_defaults(func=_run, remote=_feeds_list)

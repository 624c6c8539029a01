"""The HTTP front of the API server (aiohttp): routing, content negotiation, auth and request limits."""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..logs import get_logger
from . import admin, discovery, openapi, protobuf, scale, table
from .api import FIELD_VALIDATION, WARNINGS, Api, check_patch_type
from .errors import ApiError, bad_request, method_not_allowed
from .patch import parse_body
from .registry import ResourceType
from .watch import stream

Obj = dict[str, Any]
MAX_BODY = 3 * 1024 * 1024  # the real API server's request size limit
_log = get_logger("interp_operator.local.server")


@dataclass
class Target:
    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(body, separators=(",", ":")).encode(), status=status,
                        content_type="application/json")


class ApiServer:
    def __init__(self, api: Api, token: str | None = None, bookmark_interval: float = 60.0,
                 watch_timeout: float = 1800.0):
        self.api = api
        self.token = token
        self.bookmark_interval = bookmark_interval
        self.watch_timeout = watch_timeout
        self.kubelet: Any = None  # set when pods run here; fault injection goes through it
        self.app = web.Application(client_max_size=MAX_BODY, middlewares=[self._middleware])
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.token and request.path not in ("/healthz", "/readyz", "/livez", "/version"):
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                return _json(ApiError(401, "Unauthorized", "Unauthorized").status(), 401)
        directive = request.query.get("fieldValidation", "Warn")
        if directive not in ("Strict", "Warn", "Ignore"):
            return _json(bad_request(f"fieldValidation: Unsupported value: {directive!r}: supported values: "
                                     '"Ignore", "Strict", "Warn"').status(), 400)
        FIELD_VALIDATION.set(directive)
        warnings: list[str] = []
        WARNINGS.set(warnings)
        try:
            response = await handler(request)
            if not response.prepared:
                for warning in dict.fromkeys(warnings):
                    escaped = warning.replace("\\", "\\\\").replace('"', '\\"')
                    response.headers.add("Warning", f'299 - "{escaped}"')
            return response
        except ApiError as exc:
            return _json(exc.status(), exc.code)
        except web.HTTPRequestEntityTooLarge:
            return _json(ApiError(413, "RequestEntityTooLarge", f"the request body exceeds {MAX_BODY} bytes")
                         .status(), 413)
        except web.HTTPException:
            raise
        except Exception as exc:  # a server bug answers 500 with a Status, as the real server does
            _log.exception("request failed", method=request.method, path=request.path)
            return _json(ApiError(500, "InternalError", f"an error on the server ({type(exc).__name__}: {exc}) "
                                  "has prevented the request from succeeding").status(), 500)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if request.method == "GET":
            static = self._static(parts)
            if static is not None:
                return static
        if parts[:2] == ["interp-local", "v1"]:
            return _json(await admin.handle(self.kubelet, request, parts))
        if len(parts) >= 2 and parts[0] == "api" and parts[1] == "v1":
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({request.path})")
        watch = False
        if rest and rest[0] == "watch":
            watch, rest = True, rest[1:]
        target = self._target(group, version, rest)
        return await self._serve(request, target, watch)

    def _static(self, parts: list[str]) -> web.Response | None:
        registry = self.api.registry
        if parts in ([], ["healthz"], ["readyz"], ["livez"]):
            return web.Response(text="ok")
        if parts == ["version"]:
            return _json(discovery.SERVER_VERSION)
        if parts == ["api"]:
            return _json(discovery.core_versions())
        if parts == ["api", "v1"]:
            return _json(discovery.resource_list(registry, "", "v1"))
        if parts == ["apis"]:
            return _json(discovery.group_list(registry))
        if len(parts) == 2 and parts[0] == "apis":
            doc = discovery.group(registry, parts[1])
            if doc is None:
                raise ApiError(404, "NotFound", f"the server could not find the requested resource (group {parts[1]})")
            return _json(doc)
        if len(parts) == 3 and parts[0] == "apis":
            if not registry.has_version(parts[1], parts[2]):
                raise ApiError(404, "NotFound", f"the server could not find the requested resource "
                               f"({parts[1]}/{parts[2]})")
            return _json(discovery.resource_list(registry, parts[1], parts[2]))
        if parts == ["openapi", "v3"]:
            return _json(openapi.root(registry))
        if len(parts) >= 4 and parts[:2] == ["openapi", "v3"]:
            group, version = ("", parts[3]) if parts[2] == "api" else (parts[3], parts[4] if len(parts) > 4 else "")
            if not registry.has_version(group, version):
                raise ApiError(404, "NotFound", f"no OpenAPI document for {'/'.join(parts[2:])}")
            return _json(openapi.group_version(registry, group, version))
        if parts and parts[0] in ("openapi", "metrics", "logs"):
            raise ApiError(404, "NotFound", f"/{'/'.join(parts)} is not served by interp-local")
        return None

    def _target(self, group: str, version: str, rest: list[str]) -> Target:
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces" and not (len(rest) == 3 and rest[2] in ("status", "finalize")):
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rt = self.api.registry.get(group, version, rest[0])
        if namespace is not None and not rt.namespaced:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource: {rt.plural} is "
                           "cluster-scoped")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else ""
        allowed = {"status"} if rt.status_subresource else set()
        if rt.scale is not None:
            allowed.add("scale")
        allowed |= set(rt.extra_subresources)
        if rt.plural == "namespaces" and rt.group == "":
            allowed.add("finalize")
        if sub and sub not in allowed:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource "
                           f"({rt.plural}/{sub})")
        return Target(rt, namespace, name, sub)

    async def _serve(self, request: web.Request, t: Target, watch: bool) -> web.StreamResponse:
        q = request.query
        method = request.method
        manager = q.get("fieldManager") or _manager_from_agent(request.headers.get("User-Agent", ""))
        dry_run = q.get("dryRun") == "All"
        api, rt = self.api, t.rt
        if t.name is None:
            if method == "GET":
                if watch or q.get("watch") in ("true", "1"):
                    return await self._watch(request, t)
                return self._list(request, t)
            if method == "POST":
                body = await self._body(request)
                return _json(api.present(rt, api.create(rt, t.namespace, body, manager=manager,
                                                         dry_run=dry_run)), 201)
            if method == "DELETE":
                return await self._delete_collection(request, t)
            raise method_not_allowed(f"{method} is not supported on the collection of {rt.plural}")
        if watch:
            raise bad_request("watching a single object: use a fieldSelector of metadata.name on the collection")
        if t.subresource == "scale":
            return await self._scale(request, t, manager, dry_run)
        if t.subresource == "log":
            return await self._log(request, t)
        if method == "GET":
            obj = api.get(rt, t.namespace, t.name)
            if table.wants_table(request.headers.get("Accept", "")) and not t.subresource:
                return _json(table.table(rt, [api.present(rt, obj)], obj["metadata"]["resourceVersion"],
                                         q.get("includeObject")))
            return _json(api.present(rt, obj))
        if method == "PUT":
            body = await self._body(request)
            return _json(api.present(rt, api.update(rt, t.namespace, t.name, body, subresource=t.subresource,
                                                    manager=manager, dry_run=dry_run)))
        if method == "PATCH":
            check_patch_type(request.headers.get("Content-Type", ""), rt)
            body = await self._body(request)
            existed = api.store.get(rt.storage_key, ((t.namespace or "") if rt.namespaced else "", t.name))
            obj = api.patch(rt, t.namespace, t.name, request.headers.get("Content-Type", ""), body,
                            subresource=t.subresource, manager=manager, force=q.get("force") == "true",
                            dry_run=dry_run)
            return _json(api.present(rt, obj), 200 if existed is not None else 201)
        if method == "DELETE":
            if t.subresource:
                raise method_not_allowed(f"DELETE is not supported on {rt.plural}/{t.subresource}")
            options = await self._delete_options(request)
            obj, gone = api.delete(rt, t.namespace, t.name, options, dry_run=dry_run)
            return _json(api.present(rt, obj), 200 if gone else 202)
        if method == "POST":
            raise method_not_allowed(f"POST is not supported on a single {rt.kind}; create on the collection")
        raise method_not_allowed(f"{method} is not supported")

    async def _body(self, request: web.Request) -> Any:
        content_type = request.headers.get("Content-Type", "application/json")
        if "protobuf" in content_type:
            return protobuf.decode(await request.read())
        if "cbor" in content_type:
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                           "accepted media types include: application/json, application/yaml")
        return parse_body(await request.read(), request.headers.get("Content-Type", "application/json"))

    async def _delete_options(self, request: web.Request) -> Obj:
        raw = await request.read()
        options = parse_body(raw, request.headers.get("Content-Type", "application/json")) if raw else {}
        if not isinstance(options, dict):
            raise bad_request("DeleteOptions must be an object")
        q = request.query
        if "propagationPolicy" in q:
            options["propagationPolicy"] = q["propagationPolicy"]
        if "gracePeriodSeconds" in q:
            options["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
        if "orphanDependents" in q:
            options["orphanDependents"] = q["orphanDependents"] == "true"
        return options

    def _list(self, request: web.Request, t: Target) -> web.Response:
        q = request.query
        limit = int(q["limit"]) if q.get("limit") else None
        items, rv, token = self.api.list(t.rt, t.namespace, q.get("labelSelector"), q.get("fieldSelector"),
                                         limit, q.get("continue"))
        items = [self.api.present(t.rt, o) for o in items]
        if table.wants_table(request.headers.get("Accept", "")):
            return _json(table.table(t.rt, items, rv, q.get("includeObject"), token))
        metadata: Obj = {"resourceVersion": rv}
        if token:
            metadata["continue"] = token
        return _json({"kind": f"{t.rt.kind}List", "apiVersion": t.rt.api_version, "metadata": metadata,
                      "items": items})

    async def _watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json",
                                                           "Transfer-Encoding": "chunked"})
        started = False

        async def send(chunk: bytes) -> None:
            nonlocal started
            if not started:
                await response.prepare(request)
                started = True
            await response.write(chunk)

        try:
            await stream(self.api, t.rt, t.namespace, dict(request.query), send, self.bookmark_interval,
                         self.watch_timeout, table.wants_table(request.headers.get("Accept", "")))
        except (ConnectionResetError, ConnectionError):
            return response
        except ApiError:
            if not started:
                raise
        if not started:
            await response.prepare(request)
        await response.write_eof()
        return response

    async def _delete_collection(self, request: web.Request, t: Target) -> web.Response:
        q = request.query
        options = await self._delete_options(request)
        items, _, _ = self.api.list(t.rt, t.namespace, q.get("labelSelector"), q.get("fieldSelector"))
        deleted = []
        for obj in items:
            md = obj["metadata"]
            try:
                result, _ = self.api.delete(t.rt, md.get("namespace"), md["name"], options,
                                            dry_run=q.get("dryRun") == "All")
            except ApiError as exc:
                if exc.code == 404:
                    continue
                raise
            deleted.append(self.api.present(t.rt, result))
        return _json({"kind": f"{t.rt.kind}List", "apiVersion": t.rt.api_version,
                      "metadata": {"resourceVersion": str(self.api.store.rv)}, "items": deleted})

    async def _scale(self, request: web.Request, t: Target, manager: str, dry_run: bool) -> web.Response:
        api = self.api
        if request.method == "GET":
            return _json(scale.get_scale(api, t.rt, t.namespace, t.name or ""))
        body = await self._body(request)
        if request.method == "PUT":
            return _json(scale.update_scale(api, t.rt, t.namespace, t.name or "", body, manager=manager,
                                            dry_run=dry_run))
        if request.method == "PATCH":
            content_type = request.headers.get("Content-Type", "")
            return _json(scale.patch_scale(api, t.rt, t.namespace, t.name or "", content_type, body,
                                           manager=manager, dry_run=dry_run))
        raise method_not_allowed(f"{request.method} is not supported on {t.rt.plural}/scale")

    async def _log(self, request: web.Request, t: Target) -> web.StreamResponse:
        if request.method != "GET":
            raise method_not_allowed("only GET is supported on pods/log")
        pod = self.api.get(t.rt, t.namespace, t.name or "")
        if self.kubelet is None:
            raise bad_request(f'pod "{t.name}" has no logs: no kubelet runs in this control plane')
        query = dict(request.query)
        if query.get("follow") != "true":
            return web.Response(text=await self.kubelet.read_logs(pod, query), content_type="text/plain")
        chunks = self.kubelet.follow_logs(pod, query)
        first = await chunks.__anext__()  # errors (no such container) still answer with a Status
        response = web.StreamResponse(headers={"Content-Type": "text/plain", "Transfer-Encoding": "chunked"})
        await response.prepare(request)
        try:
            await response.write(first)
            async for chunk in chunks:
                await response.write(chunk)
        except (ConnectionResetError, ConnectionError):
            return response
        await response.write_eof()
        return response


def _manager_from_agent(agent: str) -> str:
    """The real server's default field manager: the user agent up to the first '/'."""
    return (agent.split("/", 1)[0] or "unknown")[:128]

"""The API semantics: create, read, update, patch and delete with the real server's rules.

This layer knows nothing of HTTP; the handlers translate requests into these calls. All calls run on the
server's event loop, so each is atomic with respect to the others.
"""

from __future__ import annotations

import base64
import builtins
import contextvars
import copy
import json
from typing import Any

from . import cel, crd, kinds, meta, schema, ssa
from .deletion import DeletionMixin, awaits_kubelet
from .errors import ApiError, Cause, already_exists, bad_request, conflict, field_error, forbidden, invalid, not_found
from .patch import json_patch, merge_patch, strategic_merge_patch
from .registry import Registry, ResourceType
from .selectors import make_filter
from .store import Store

Obj = dict[str, Any]
_SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_LABEL_NAMED = {("", "namespaces"), ("", "services")}
# apiextensions-apiserver's hasBlockingErr: after one of these the CEL rules are not run.
_BLOCKS_CEL = (Cause.NOT_SUPPORTED, Cause.REQUIRED, Cause.TOO_LONG, Cause.TOO_MANY, Cause.TYPE)
_CEL_SKIPPED = ("some validation rules were not checked because the object was invalid; "
                "correct the existing errors to complete validation")
PATCH_TYPES = {
    "application/merge-patch+json": "merge", "application/json-patch+json": "json",
    "application/strategic-merge-patch+json": "strategic", "application/apply-patch+yaml": "apply",
    "application/apply-patch+json": "apply",
}


class Api(DeletionMixin):
    def __init__(self, store: Store | None = None, registry: Registry | None = None):
        self.store = store or Store()
        self.registry = registry or Registry()
        self.cluster_ips = kinds.ClusterIPs()
        # Nodes whose pods a kubelet here terminates gracefully; pods elsewhere are deleted at once.
        self.kubelet_nodes: set[str] = set()
        ns_type = self.registry.get("", "v1", "namespaces")
        for name in _SYSTEM_NAMESPACES:
            self.create(ns_type, None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    # -- views --------------------------------------------------------------------------------------------
    def present(self, rt: ResourceType, obj: Obj) -> Obj:
        """The object as this resource's version shows it (same storage may back several versions)."""
        if rt.group == "events.k8s.io":
            return kinds.event_from_core(obj)
        if obj.get("apiVersion") != rt.api_version:
            return {**obj, "apiVersion": rt.api_version}
        return obj

    def _key(self, rt: ResourceType, namespace: str | None, name: str) -> tuple[str, str]:
        return (namespace or "") if rt.namespaced else "", name

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self.store.get(rt.storage_key, self._key(rt, namespace, name))
        if obj is None:
            raise not_found(rt.group, rt.plural, name)
        return obj

    def list(self, rt: ResourceType, namespace: str | None, label_selector: str | None = None,
             field_selector: str | None = None, limit: int | None = None,
             continue_token: str | None = None) -> tuple[builtins.list[Obj], str, str | None]:
        accept = make_filter(namespace, label_selector, field_selector, self._field_labels(rt), rt.kind)
        items = sorted((o for o in self.store.items(rt.storage_key) if accept(o)),
                       key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        start = 0
        list_rv = str(self.store.rv)
        if continue_token:
            try:
                state = json.loads(base64.urlsafe_b64decode(continue_token))
                after, list_rv = tuple(state["after"]), state["rv"]
            except (ValueError, KeyError, TypeError) as exc:
                raise bad_request(f"invalid continue token: {exc}") from exc
            start = next((i for i, o in enumerate(items)
                          if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > after), len(items))
        next_token = None
        if limit and limit > 0 and start + limit < len(items):
            last = items[start + limit - 1]["metadata"]
            state = {"after": [last.get("namespace", ""), last["name"]], "rv": list_rv}
            next_token = base64.urlsafe_b64encode(json.dumps(state).encode()).decode()
            items = items[start:start + limit]
        else:
            items = items[start:]
        return items, list_rv, next_token

    def _field_labels(self, rt: ResourceType) -> tuple[str, ...]:
        return (*rt.field_labels, *rt.selectable_fields)

    # -- create -------------------------------------------------------------------------------------------
    def create(self, rt: ResourceType, namespace: str | None, body: Any, *, manager: str = "",
               dry_run: bool = False, applied: bool = False) -> Obj:
        obj = self._check_body(rt, body)
        if rt.group == "events.k8s.io":
            obj = kinds.event_to_core(obj)
        md = obj["metadata"]
        self._check_namespace(rt, namespace, md)
        if not md.get("name"):
            if not md.get("generateName"):
                raise invalid(rt.group, rt.kind, "", [field_error(Cause.REQUIRED, "metadata.name",
                                                                   "name or generateName is required")])
            for _ in range(8):
                md["name"] = meta.generated_name(md["generateName"])
                if self.store.get(rt.storage_key, self._key(rt, namespace, md["name"])) is None:
                    break
        if self.store.get(rt.storage_key, self._key(rt, namespace, md["name"])) is not None:
            raise already_exists(rt.group, rt.plural, md["name"])
        for key in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            md.pop(key, None)
        if not applied:
            md.pop("managedFields", None)
        md["uid"] = meta.new_uid()
        md["creationTimestamp"] = meta.now()
        if self._tracks_generation(rt):
            md["generation"] = 1
        if rt.status_subresource and rt.is_custom:
            obj.pop("status", None)
        self._prepare_create(rt, obj)
        obj = self._admit(rt, obj, None)
        if manager:
            ssa.record_update(None, obj, manager, rt.schema, rt.api_version)
        if dry_run:
            return obj
        self.store.put(rt.storage_key, obj)
        if (rt.group, rt.plural) == ("apiextensions.k8s.io", "customresourcedefinitions"):
            obj = self._establish(obj)
        return obj

    def _check_body(self, rt: ResourceType, body: Any) -> Obj:
        """Validate the envelope of a request body; the API takes ownership of ``body`` (no copy)."""
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        obj = body
        if obj.get("kind") and obj["kind"] != rt.kind:
            raise bad_request(f"the kind of the object ({obj['kind']}) does not match the resource ({rt.kind})")
        if obj.get("apiVersion") and obj["apiVersion"] != rt.api_version:
            raise bad_request(f"the API version in the data ({obj['apiVersion']}) does not match the expected "
                              f"API version ({rt.api_version})")
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        if not isinstance(obj.setdefault("metadata", {}), dict):
            raise bad_request("metadata must be an object")
        return obj

    def _check_namespace(self, rt: ResourceType, namespace: str | None, md: Obj) -> None:
        if not rt.namespaced:
            md.pop("namespace", None)
            return
        if md.get("namespace") and namespace and md["namespace"] != namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the "
                              "request")
        namespace = namespace or md.get("namespace")
        if not namespace:
            raise bad_request("a namespace is required for namespaced resources")
        md["namespace"] = namespace
        ns = self.store.get("/namespaces", ("", namespace))
        if ns is None:
            raise not_found("", "namespaces", namespace)
        if ns["metadata"].get("deletionTimestamp"):
            raise forbidden(f"{rt.plural} \"{md.get('name') or md.get('generateName', '')}\" is forbidden: unable "
                            f"to create new content in namespace {namespace} because it is being terminated")

    def _tracks_generation(self, rt: ResourceType) -> bool:
        return rt.is_custom or rt.plural == "customresourcedefinitions"

    def _prepare_create(self, rt: ResourceType, obj: Obj) -> None:
        if rt.group != "":
            return
        if rt.plural == "pods":
            kinds.prepare_pod_create(obj)
        elif rt.plural == "services":
            kinds.prepare_service_create(obj, self.cluster_ips)
        elif rt.plural == "namespaces":
            kinds.prepare_namespace_create(obj)

    def _admit(self, rt: ResourceType, obj: Obj, old: Obj | None) -> Obj:
        """Schema pruning/defaulting/validation and CEL for custom resources; kind checks for the others."""
        md = obj["metadata"]
        label = (rt.group, rt.plural) in _LABEL_NAMED
        errors = meta.name_errors(md["name"], label) if old is None and not rt.is_custom else []
        if rt.is_custom and old is None:
            errors = meta.name_errors(md["name"], False)
        errors += meta.label_errors(md)
        if rt.schema is not None:
            _check_unknown_fields(rt, obj)
            obj = schema.apply_defaults(schema.prune(obj, rt.schema, root=True), rt.schema)
            body_schema = {**rt.schema, "properties": {k: v for k, v in (rt.schema.get("properties") or {}).items()
                                                       if k not in ("metadata", "apiVersion", "kind")}}
            body = {k: v for k, v in obj.items() if k not in ("metadata", "apiVersion", "kind")}
            errors += schema.validate(body, body_schema) + schema.list_type_errors(body, body_schema)
            if blocking := [e for e in errors if e["reason"] in _BLOCKS_CEL]:
                # the real strategy skips the CEL rules after these and says so in one more cause
                errors.append(field_error(Cause.INVALID, "<nil>", _CEL_SKIPPED, None))
            if not blocking:
                view = {**body, "apiVersion": obj["apiVersion"], "kind": obj["kind"],
                        "metadata": {"name": md.get("name", ""), "generateName": md.get("generateName", "")}}
                old_view = cel._MISSING
                if old is not None:
                    old_view = {k: v for k, v in old.items() if k not in ("metadata",)}
                    old_view["metadata"] = {"name": old["metadata"]["name"],
                                            "generateName": old["metadata"].get("generateName", "")}
                errors += cel.evaluate(view, rt.schema, old_view)
        elif rt.group == "" and rt.plural == "pods":
            errors += kinds.pod_errors(obj) if old is None else kinds.pod_update_errors(old, obj)
        elif rt.plural == "customresourcedefinitions":
            errors += crd.crd_errors(obj)
            if old is not None and old["spec"].get("group") != obj["spec"].get("group"):
                errors.append(field_error(Cause.INVALID, "spec.group", "field is immutable", obj["spec"]["group"]))
        if errors:
            raise invalid(rt.group, rt.kind, md.get("name", ""), errors)
        return obj

    def _establish(self, definition: Obj) -> Obj:
        for rt in crd.resource_types(definition):
            self.registry.add(rt)
        established = copy.deepcopy(definition)
        established["status"] = crd.accepted_status(definition, meta.now())
        return self.store.put("apiextensions.k8s.io/customresourcedefinitions", established)

    # -- update / patch -----------------------------------------------------------------------------------
    def update(self, rt: ResourceType, namespace: str | None, name: str, body: Any, *, subresource: str = "",
               manager: str = "", dry_run: bool = False) -> Obj:
        obj = self._check_body(rt, body)
        if rt.group == "events.k8s.io":
            obj = kinds.event_to_core(obj)
        md = obj["metadata"]
        if md.get("name") and md["name"] != name:
            raise bad_request(f"the name of the object ({md['name']}) does not match the name on the URL ({name})")
        md["name"] = name
        old = self.get(rt, namespace, name)
        if not md.get("resourceVersion") and rt.is_custom:
            raise invalid(rt.group, rt.kind, name, [field_error(
                Cause.INVALID, "metadata.resourceVersion", "must be specified for an update", 0)])
        return self._write(rt, old, obj, subresource, manager, dry_run)

    def patch(self, rt: ResourceType, namespace: str | None, name: str, content_type: str, body: Any, *,
              subresource: str = "", manager: str = "", force: bool = False, dry_run: bool = False) -> Obj:
        kind = check_patch_type(content_type, rt)
        old = self.store.get(rt.storage_key, self._key(rt, namespace, name))
        if kind == "apply":
            if not isinstance(body, dict):
                raise bad_request("an apply patch must be an object")
            if not manager:
                raise bad_request("PATCH requests with apply content type require fieldManager to be set")
            applied = self._check_body(rt, body)
            if applied["metadata"].get("name") not in (None, name):
                raise bad_request(f"the name of the object ({applied['metadata']['name']}) does not match the name "
                                  f"on the URL ({name})")
            applied["metadata"]["name"] = name
            if rt.namespaced and namespace:
                applied["metadata"]["namespace"] = namespace
            if old is None:
                if subresource:
                    raise not_found(rt.group, rt.plural, name)
                created = ssa.apply(None, applied, manager, force, rt.schema, rt.api_version)
                return self.create(rt, namespace, created, dry_run=dry_run, applied=True)
            result = ssa.apply(self._for_patch(rt, old, subresource), applied, manager, force, rt.schema,
                               rt.api_version, subresource)
            return self._write(rt, old, result, subresource, "", dry_run)
        if old is None:
            raise not_found(rt.group, rt.plural, name)
        base = self._for_patch(rt, old, subresource)
        if kind == "merge":
            if not isinstance(body, dict):
                raise bad_request("a merge patch must be an object")
            result = merge_patch(base, body)
        elif kind == "json":
            result = json_patch(base, body)
        else:
            result = strategic_merge_patch(base, body)
        if not isinstance(result, dict):
            raise bad_request("the patch does not produce an object")
        return self._write(rt, old, result, subresource, manager, dry_run)

    def _for_patch(self, rt: ResourceType, old: Obj, subresource: str) -> Obj:
        view = copy.deepcopy(self.present(rt, old))
        if rt.group == "events.k8s.io":
            view["apiVersion"] = rt.api_version
        return view

    def _write(self, rt: ResourceType, old: Obj, new: Obj, subresource: str, manager: str, dry_run: bool) -> Obj:
        if rt.group == "events.k8s.io" and new.get("apiVersion") == rt.api_version:
            new = kinds.event_to_core(new)
        new["apiVersion"], new["kind"] = rt.api_version, rt.kind
        md = new.setdefault("metadata", {})
        old_md = old["metadata"]
        if md.get("resourceVersion") and md["resourceVersion"] != old_md["resourceVersion"]:
            raise conflict(rt.group, rt.plural, old_md["name"], "the object has been modified; please apply your "
                           "changes to the latest version and try again")
        if md.get("uid") and md["uid"] != old_md["uid"]:
            raise conflict(rt.group, rt.plural, old_md["name"], f"Precondition failed: UID in precondition: "
                           f"{md['uid']}, UID in object meta: {old_md['uid']}")
        for key in ("uid", "creationTimestamp", "namespace", "deletionTimestamp", "deletionGracePeriodSeconds",
                    "generation", "resourceVersion"):
            if key in old_md:
                md[key] = old_md[key]
            else:
                md.pop(key, None)
        if md.get("name") != old_md["name"]:
            raise bad_request("the name of the object does not match the name on the URL")
        if subresource == "status":
            status = new.get("status")
            managed = md.get("managedFields")
            new = copy.deepcopy(old)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
            if managed is not None:
                new["metadata"]["managedFields"] = managed
        elif rt.status_subresource:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        if rt.plural == "namespaces" and rt.group == "" and subresource != "finalize":
            new["spec"] = copy.deepcopy(old.get("spec") or {})
        if rt.plural == "pods" and rt.group == "" and subresource != "status":
            kinds.default_pod_spec(new)
        if rt.plural == "services" and rt.group == "":
            kinds.default_service_spec(new)
            new["spec"]["clusterIP"] = old["spec"].get("clusterIP")
            new["spec"]["clusterIPs"] = old["spec"].get("clusterIPs")
        if old_md.get("deletionTimestamp"):
            added = set(md.get("finalizers") or []) - set(old_md.get("finalizers") or [])
            if added:
                raise invalid(rt.group, rt.kind, old_md["name"], [field_error(
                    Cause.FORBIDDEN, "metadata.finalizers", f"no new finalizers can be added if the object is being "
                    f"deleted, found new finalizers {sorted(added)}")])
        new = self._admit(rt, new, old)
        if self._tracks_generation(rt) and _spec_changed(old, new, rt.status_subresource):
            new["metadata"]["generation"] = old_md.get("generation", 1) + 1
        # A request that rewrites managedFields itself (kubectl's client-side to server-side apply upgrade)
        # gets them as written; otherwise the manager gains the fields it changed.
        explicit_managed = new["metadata"].get("managedFields") != old_md.get("managedFields")
        if manager and not explicit_managed:
            ssa.record_update(old, new, manager, rt.schema, rt.api_version, subresource)
        if _same(old, new) and not explicit_managed:
            return old
        if dry_run:
            return new
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers") \
                and not awaits_kubelet(rt, new, self.kubelet_nodes):
            return self._remove(rt, new)
        stored = self.store.put(rt.storage_key, new)
        if rt.plural == "customresourcedefinitions" and rt.group == "apiextensions.k8s.io":
            self._reregister(old, stored)
        return stored

    def _reregister(self, old: Obj, new: Obj) -> None:
        self.registry.remove_group_plural(old["spec"]["group"], old["spec"]["names"]["plural"])
        for rt in crd.resource_types(new):
            self.registry.add(rt)

# Set by the HTTP layer around each (synchronous) API call: the request's fieldValidation directive, and the
# warnings the call produced for the Warning response header.
FIELD_VALIDATION: contextvars.ContextVar[str] = contextvars.ContextVar("field_validation", default="Ignore")
WARNINGS: contextvars.ContextVar[builtins.list[str] | None] = contextvars.ContextVar("warnings", default=None)


def _check_unknown_fields(rt: ResourceType, obj: Obj) -> None:
    directive = FIELD_VALIDATION.get()
    if directive == "Ignore" or rt.schema is None:
        return
    unknown = schema.unknown_fields(obj, rt.schema, root=True)
    if not unknown:
        return
    if directive == "Strict":
        listed = ", ".join(f'unknown field "{u}"' for u in unknown)
        raise bad_request(f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: strict decoding '
                          f"error: {listed}")
    warnings = WARNINGS.get()
    if warnings is not None:
        warnings.extend(f'unknown field "{u}"' for u in unknown)


def check_patch_type(content_type: str, rt: ResourceType) -> str:
    kind = PATCH_TYPES.get(content_type.split(";")[0].strip())
    if kind is None:
        raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                       f"accepted media types include: {', '.join(PATCH_TYPES)}")
    if kind == "strategic" and rt.is_custom:
        raise ApiError(415, "UnsupportedMediaType", "strategic merge patch is not supported for custom "
                       "resources; use a JSON merge patch or server-side apply")
    return kind


def _spec_changed(old: Obj, new: Obj, status_subresource: bool) -> bool:
    skip = {"metadata", "status"} if status_subresource else {"metadata"}
    return {k: v for k, v in old.items() if k not in skip} != {k: v for k, v in new.items() if k not in skip}


def _same(old: Obj, new: Obj) -> bool:
    def strip(o: Obj) -> Obj:
        md = {k: v for k, v in o["metadata"].items() if k not in ("resourceVersion", "managedFields")}
        return {**o, "metadata": md}

    return strip(old) == strip(new)

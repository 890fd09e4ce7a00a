"""What the test API server serves: resource kinds, discovery and OpenAPI documents.

Pure data and pure functions (no sockets, no store); apiserver.py answers with them.
"""
import hashlib
import json

SERVER_VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0",
                  "gitCommit": "0000000000000000000000000000000000000000",
                  "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z",
                  "goVersion": "go1.23.4", "compiler": "gc", "platform": "linux/amd64"}

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
STATUS_VERBS = ["get", "patch", "update"]


class Kind:
    """One resource type: where it lives, what it is called and what may be done to it."""

    def __init__(self, group, version, plural, singular, kind, namespaced, short=(),
                 verbs=ALL_VERBS, subresources=(), categories=()):
        self.group, self.version, self.plural, self.singular = group, version, plural, singular
        self.kind, self.namespaced, self.short, self.verbs = kind, namespaced, list(short), verbs
        # (name, group, version, kind, verbs); group None means the resource's own group.
        self.subresources = list(subresources)
        self.categories = list(categories)

    @property
    def api_version(self):
        return self.group + "/" + self.version if self.group else self.version

    @property
    def qualified(self):
        """The name used in error messages: `pods`, `deployments.apps`."""
        return self.plural + "." + self.group if self.group else self.plural

    def subresource(self, name):
        for sub in self.subresources:
            if sub[0] == name:
                return sub
        return None


KINDS = [
    Kind("", "v1", "namespaces", "namespace", "Namespace", False, ["ns"],
         [v for v in ALL_VERBS if v != "deletecollection"],
         [("finalize", None, None, "Namespace", ["update"]),
          ("status", None, None, "Namespace", STATUS_VERBS)]),
    Kind("", "v1", "nodes", "node", "Node", False, ["no"], ["get", "list", "watch"],
         [("status", None, None, "Node", STATUS_VERBS)]),
    Kind("", "v1", "pods", "pod", "Pod", True, ["po"], ALL_VERBS,
         [("attach", None, None, "PodAttachOptions", ["create", "get"]),
          ("exec", None, None, "PodExecOptions", ["create", "get"]),
          ("log", None, None, "Pod", ["get"]),
          ("portforward", None, None, "PodPortForwardOptions", ["create", "get"]),
          ("status", None, None, "Pod", STATUS_VERBS)], ["all"]),
    Kind("", "v1", "secrets", "secret", "Secret", True),
    Kind("", "v1", "configmaps", "configmap", "ConfigMap", True, ["cm"]),
    Kind("", "v1", "services", "service", "Service", True, ["svc"], ALL_VERBS,
         [("status", None, None, "Service", STATUS_VERBS)], ["all"]),
    Kind("apps", "v1", "deployments", "deployment", "Deployment", True, ["deploy"], ALL_VERBS,
         [("scale", "autoscaling", "v1", "Scale", STATUS_VERBS),
          ("status", None, None, "Deployment", STATUS_VERBS)], ["all"]),
    Kind("authentication.k8s.io", "v1", "selfsubjectreviews", "selfsubjectreview",
         "SelfSubjectReview", False, (), ["create"]),
]

GROUP_VERSIONS = [("", "v1"), ("apps", "v1"), ("authentication.k8s.io", "v1")]


def find_kind(group, version, plural):
    for k in KINDS:
        if k.group == group and k.version == version and k.plural == plural:
            return k
    return None


def gv_kinds(group, version):
    return [k for k in KINDS if k.group == group and k.version == version]


def gv_path(group, version):
    """`api/v1` or `apis/apps/v1`, as OpenAPI v3 names its documents."""
    return "api/" + version if not group else "apis/" + group + "/" + version


# ---- legacy discovery ------------------------------------------------------------------

def api_versions(server_address):
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                            "serverAddress": server_address}]}


def api_group_list():
    groups = []
    for group, version in GROUP_VERSIONS:
        if not group:
            continue
        gv = {"groupVersion": group + "/" + version, "version": version}
        groups.append({"name": group, "versions": [gv], "preferredVersion": gv})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(group):
    for g in api_group_list()["groups"]:
        if g["name"] == group:
            return dict(g, kind="APIGroup", apiVersion="v1")
    return None


def api_resource_list(group, version):
    kinds = gv_kinds(group, version)
    if not kinds:
        return None
    out = []
    for k in kinds:
        item = {"name": k.plural, "singularName": k.singular, "namespaced": k.namespaced,
                "kind": k.kind, "verbs": k.verbs}
        if k.short:
            item["shortNames"] = k.short
        if k.categories:
            item["categories"] = k.categories
        out.append(item)
        for name, sgroup, sversion, skind, verbs in k.subresources:
            sub = {"name": k.plural + "/" + name, "singularName": "",
                   "namespaced": k.namespaced, "kind": skind, "verbs": verbs}
            if sgroup is not None:
                sub["group"], sub["version"] = sgroup, sversion
            out.append(sub)
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": (group + "/" + version) if group else version, "resources": out}


# ---- aggregated discovery (apidiscovery.k8s.io v2 and v2beta1) ------------------------

def _discovery_resource(k):
    res = {"resource": k.plural,
           "responseKind": {"group": k.group, "version": k.version, "kind": k.kind},
           "scope": "Namespaced" if k.namespaced else "Cluster",
           "singularResource": k.singular, "verbs": k.verbs}
    if k.short:
        res["shortNames"] = k.short
    if k.categories:
        res["categories"] = k.categories
    subs = []
    for name, sgroup, sversion, skind, verbs in k.subresources:
        subs.append({"subresource": name,
                     "responseKind": {"group": k.group if sgroup is None else sgroup,
                                      "version": k.version if sversion is None else sversion,
                                      "kind": skind},
                     "verbs": verbs})
    if subs:
        res["subresources"] = subs
    return res


def aggregated_discovery(legacy, version):
    """The APIGroupDiscoveryList for /api (legacy=True) or /apis, in `version` (v2, v2beta1)."""
    items = []
    for group, gv in GROUP_VERSIONS:
        if (group == "") != legacy:
            continue
        meta = {"creationTimestamp": None}
        if group:
            meta["name"] = group
        items.append({"metadata": meta, "versions": [{
            "version": gv, "freshness": "Current",
            "resources": [_discovery_resource(k) for k in gv_kinds(group, gv)]}]})
    return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/" + version,
            "metadata": {}, "items": items}


# ---- OpenAPI v3 ------------------------------------------------------------------------

def _schema_name(k):
    group = {"": "core", "authentication.k8s.io": "authentication"}.get(k.group, k.group)
    return "io.k8s.api.%s.%s.%s" % (group, k.version, k.kind)


def _operations(k, item):
    """Path item for a collection (item=False) or one object; every mutating operation
    declares the fieldValidation parameter, which tells kubectl to let the server validate."""
    gvk = {"group": k.group, "version": k.version, "kind": k.kind}
    ref = {"$ref": "#/components/schemas/" + _schema_name(k)}
    ok = {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}}
    query = [{"name": n, "in": "query", "schema": {"type": "string"}}
             for n in ("dryRun", "fieldManager", "fieldValidation")]

    def op(action, verb_params=(), body=None):
        o = {"operationId": action + k.kind, "x-kubernetes-action": action,
             "x-kubernetes-group-version-kind": gvk, "responses": ok}
        params = [p for p in query if p["name"] in verb_params]
        if params:
            o["parameters"] = params
        if body:
            o["requestBody"] = {"content": {t: {"schema": ref} for t in body}}
        return o

    write = ("dryRun", "fieldManager", "fieldValidation")
    if not item:
        ops = {}
        if "list" in k.verbs:
            ops["get"] = op("list")
        if "create" in k.verbs:
            ops["post"] = op("post", write, ["application/json"])
        if "deletecollection" in k.verbs:
            ops["delete"] = op("deletecollection")
        return ops
    ops = {}
    if "get" in k.verbs:
        ops["get"] = op("get")
    if "update" in k.verbs:
        ops["put"] = op("put", write, ["application/json"])
    if "patch" in k.verbs:
        # No strategic-merge-patch body type: kubectl then computes its apply patch from its
        # own compiled-in types instead of from these deliberately thin schemas.
        ops["patch"] = op("patch", write + ("force",),
                          ["application/apply-patch+yaml", "application/json-patch+json",
                           "application/merge-patch+json"])
        ops["patch"]["parameters"].append({"name": "force", "in": "query",
                                           "schema": {"type": "boolean"}})
    if "delete" in k.verbs:
        ops["delete"] = op("delete", ("dryRun",))
    return ops


def openapi_v3_doc(group, version):
    kinds = gv_kinds(group, version)
    if not kinds:
        return None
    prefix = "/api/" + version if not group else "/apis/" + group + "/" + version
    paths, schemas = {}, {}
    for k in kinds:
        base = prefix + ("/namespaces/{namespace}/" if k.namespaced else "/") + k.plural
        paths[base] = _operations(k, False)
        if "get" in k.verbs or "delete" in k.verbs:
            paths[base + "/{name}"] = _operations(k, True)
        schemas[_schema_name(k)] = {
            "type": "object", "description": k.kind + " (test server schema).",
            "properties": {
                "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
            "x-kubernetes-preserve-unknown-fields": True,
            "x-kubernetes-group-version-kind": [
                {"group": k.group, "version": k.version, "kind": k.kind}],
        }
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"},
            "paths": paths, "components": {"schemas": schemas}}


def openapi_v3_index():
    paths = {}
    for group, version in GROUP_VERSIONS:
        doc = json.dumps(openapi_v3_doc(group, version), sort_keys=True).encode()
        digest = hashlib.sha512(doc).hexdigest().upper()[:128]
        name = gv_path(group, version)
        paths[name] = {"serverRelativeURL": "/openapi/v3/" + name + "?hash=" + digest}
    return {"paths": paths}

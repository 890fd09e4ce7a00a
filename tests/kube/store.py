"""The in-memory object store of the test API server: CRUD, selectors, patches, watch history.

Every write takes the next value of one global resourceVersion counter and appends an event
to a history that watches replay from and then follow (a Condition wakes them).
"""
import copy
import json
import re
import threading
import uuid

import objects

HISTORY = 5000


class ApiError(Exception):
    """A failure the server reports as a `Status` object."""

    def __init__(self, code, reason, message, details=None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self):
        doc = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            doc["details"] = self.details
        return doc


def _details(kind, name):
    d = {"name": name, "kind": kind.plural}
    if kind.group:
        d["group"] = kind.group
    return d


def not_found(kind, name):
    return ApiError(404, "NotFound", '%s "%s" not found' % (kind.qualified, name),
                    _details(kind, name))


def bad_request(message):
    return ApiError(400, "BadRequest", message)


def invalid(kind, name, field, problem):
    message = '%s "%s" is invalid: %s: %s' % (kind.kind, name, field, problem)
    return ApiError(422, "Invalid", message,
                    dict(_details(kind, name), kind=kind.kind,
                         causes=[{"reason": "FieldValueInvalid", "message": problem,
                                  "field": field}]))


# ---- selectors -----------------------------------------------------------------------------

def _split_top(s):
    parts, depth, cur = [], 0, ""
    for ch in s:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return parts + [cur]


def parse_label_selector(s):
    reqs = []
    for part in (p.strip() for p in _split_top(s or "")):
        if not part:
            continue
        m = re.fullmatch(r"([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)", part)
        if m:
            reqs.append((m[1], m[2], {v.strip() for v in m[3].split(",") if v.strip()}))
            continue
        m = re.fullmatch(r"(!?)([\w./-]+)(?:\s*(==|=|!=)\s*([\w.-]*))?", part)
        if not m:
            raise bad_request("unable to parse requirement: invalid label selector: %r" % part)
        if m[3] is None:
            reqs.append((m[2], "absent" if m[1] else "exists", None))
        elif m[1]:
            raise bad_request("unable to parse requirement: %r" % part)
        else:
            reqs.append((m[2], "!=" if m[3] == "!=" else "=", m[4]))
    return reqs


def labels_match(reqs, labels):
    for key, op, val in reqs:
        have = key in labels
        if op == "=" and labels.get(key) != val or op == "!=" and have and labels[key] == val:
            return False
        if op == "in" and not (have and labels[key] in val) or \
                op == "notin" and have and labels[key] in val:
            return False
        if op == "exists" and not have or op == "absent" and have:
            return False
    return True


FIELDS = {"Pod": {"status.phase", "spec.nodeName", "spec.restartPolicy", "status.podIP",
                  "spec.serviceAccountName", "spec.schedulerName"},
          "Secret": {"type"}, "Namespace": {"status.phase"}}


def parse_field_selector(kind, s):
    reqs = []
    for part in (p.strip() for p in (s or "").split(",")):
        if not part:
            continue
        m = re.fullmatch(r"([\w.]+)\s*(==|=|!=)\s*(.*)", part)
        if not m:
            raise bad_request("invalid selector: '%s'; can't understand '%s'" % (s, part))
        if m[1] not in {"metadata.name", "metadata.namespace"} | FIELDS.get(kind.kind, set()):
            raise bad_request('field label not supported: %s' % m[1])
        reqs.append((m[1], m[2] != "!=", m[3]))
    return reqs


def fields_match(reqs, obj):
    for path, equal, val in reqs:
        cur = obj
        for seg in path.split("."):
            cur = cur.get(seg) if isinstance(cur, dict) else None
        if (str(cur if cur is not None else "") == val) != equal:
            return False
    return True


# ---- patches -------------------------------------------------------------------------------

def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def strategic_merge_patch(target, patch):
    """Strategic merge patch, simplified: lists of objects that all carry a `name` merge by
    name, other lists replace; `$patch`, `$retainKeys`, `$setElementOrder/...` and
    `$deleteFromPrimitiveList/...` directives are honoured or dropped, never stored."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: v for k, v in patch.items() if not k.startswith("$")}
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            out[field] = [x for x in out.get(field) or [] if x not in v]
        elif k.startswith("$"):
            continue
        elif v is None:
            out.pop(k, None)
        elif isinstance(v, list) and _named(v) and _named(out.get(k)):
            out[k] = _merge_named(out[k], v)
        else:
            out[k] = strategic_merge_patch(out.get(k), v)
    return out


def _named(items):
    return isinstance(items, list) and all(isinstance(i, dict) and "name" in i for i in items)


def _merge_named(current, patch):
    out = [copy.deepcopy(i) for i in current]
    for item in patch:
        idx = next((n for n, c in enumerate(out) if c["name"] == item["name"]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
        elif idx is None:
            out.append(strategic_merge_patch({}, item))
        else:
            out[idx] = strategic_merge_patch(out[idx], item)
    return out


def _pointer(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request("invalid JSON pointer: %r" % path)
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc, parts):
    cur = doc
    for p in parts:
        cur = cur[int(p)] if isinstance(cur, list) else cur[p]
    return cur


def json_patch(doc, ops):
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    doc = copy.deepcopy(doc)
    if not isinstance(ops, list):
        raise bad_request("json patch must be a list of operations")
    for op in ops:
        try:
            kind, path = op["op"], op["path"]
            parts = _pointer(path)
            if kind in ("move", "copy"):
                value = copy.deepcopy(_walk(doc, _pointer(op["from"])))
                if kind == "move":
                    json_patch_remove(doc, _pointer(op["from"]))
                kind, op = "add", dict(op, value=value)
            if kind == "test":
                if _walk(doc, parts) != op["value"]:
                    raise ApiError(422, "Invalid", "the server rejected our request due to an "
                                   "error in our request: test operation failed")
                continue
            if not parts:
                doc = copy.deepcopy(op["value"])
                continue
            parent, last = _walk(doc, parts[:-1]), parts[-1]
            if kind == "remove":
                json_patch_remove(doc, parts)
            elif kind in ("add", "replace") and isinstance(parent, list):
                i = len(parent) if last == "-" else int(last)
                if kind == "add":
                    parent.insert(i, copy.deepcopy(op["value"]))
                else:
                    parent[i] = copy.deepcopy(op["value"])
            elif kind in ("add", "replace") and isinstance(parent, dict):
                if kind == "replace" and last not in parent:
                    raise KeyError(last)
                parent[last] = copy.deepcopy(op["value"])
            else:
                raise bad_request("unknown json patch operation %r" % kind)
        except (KeyError, IndexError, ValueError, TypeError) as e:
            where = op.get("path") if isinstance(op, dict) else op
            raise ApiError(422, "Invalid", "the server rejected our request due to an error "
                           "in our request: json patch operation %r does not apply at %r (%s)"
                           % (op.get("op") if isinstance(op, dict) else op, where, e))
    return doc


def json_patch_remove(doc, parts):
    parent = _walk(doc, parts[:-1])
    if isinstance(parent, list):
        parent.pop(int(parts[-1]))
    else:
        del parent[parts[-1]]


# ---- the store -----------------------------------------------------------------------------

class Store:
    def __init__(self):
        self.cond = threading.Condition()
        self.rv = 0
        self.objects = {}     # plural -> {(namespace, name): object}
        self.history = []     # (rv, event type, plural, object)
        self.history_floor = 0

    def _bucket(self, kind):
        return self.objects.setdefault(kind.plural, {})

    def _commit(self, kind, key, obj, etype):
        # kind and apiVersion lead, as in a real server's JSON.
        obj = dict({"kind": obj.pop("kind", kind.kind), "apiVersion": obj.pop("apiVersion",
                                                                          kind.api_version)}, **obj)
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        if etype == "DELETED":
            self._bucket(kind).pop(key, None)
        else:
            self._bucket(kind)[key] = obj
        self.history.append((self.rv, etype, kind.plural, copy.deepcopy(obj)))
        if len(self.history) > HISTORY:
            self.history_floor = self.history[0][0]
            del self.history[:len(self.history) - HISTORY]
        self.cond.notify_all()
        return copy.deepcopy(obj)

    def _current(self, kind, ns, name):
        obj = self._bucket(kind).get((ns, name))
        if obj is None:
            raise not_found(kind, name)
        return obj

    def get(self, kind, ns, name):
        with self.cond:
            return copy.deepcopy(self._current(kind, ns, name))

    def list(self, kind, ns, labels="", fields=""):
        lreqs, freqs = parse_label_selector(labels), parse_field_selector(kind, fields)
        with self.cond:
            items = [copy.deepcopy(o) for (ons, _), o in sorted(self._bucket(kind).items(),
                                                                key=lambda kv: kv[0])
                     if (ns is None or ons == ns)
                     and labels_match(lreqs, o["metadata"].get("labels") or {})
                     and fields_match(freqs, o)]
            return items, str(self.rv)

    def _check_body(self, kind, obj, ns, name=None):
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata", {}), dict):
            raise bad_request("the body of the request was not a %s object" % kind.kind)
        if obj.get("kind", kind.kind) != kind.kind:
            raise bad_request('%s in version "%s" cannot be handled as a %s: the object kind '
                              "does not match" % (obj.get("kind"), obj.get("apiVersion", ""),
                                                  kind.kind))
        if obj.get("apiVersion", kind.api_version) != kind.api_version:
            raise bad_request("the API version in the data (%s) does not match the expected "
                              "API version (%s)" % (obj.get("apiVersion"), kind.api_version))
        meta = obj.setdefault("metadata", {})
        if kind.namespaced and meta.get("namespace", ns) != ns:
            raise bad_request("the namespace of the provided object does not match the "
                              "namespace sent on the request")
        if name is not None and meta.get("name", name) != name:
            raise bad_request("the name of the object (%s) does not match the name on the URL "
                              "(%s)" % (meta.get("name"), name))
        if kind.kind == "Pod" and not obj.get("spec", {}).get("containers"):
            raise invalid(kind, meta.get("name", ""), "spec.containers", "Required value")

    def create(self, kind, ns, obj, dry_run=False):
        self._check_body(kind, obj, ns)
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + objects.random_suffix()
        name = meta.get("name", "")
        if not name:
            raise invalid(kind, "", "metadata.name", "Required value: name or generateName "
                                                      "is required")
        problem = objects.name_problem(name)
        if problem:
            raise invalid(kind, name, "metadata.name", 'Invalid value: "%s": %s' % (name, problem))
        with self.cond:
            if kind.namespaced and (None, ns) not in self.objects.get("namespaces", {}):
                raise ApiError(404, "NotFound", 'namespaces "%s" not found' % ns,
                               {"name": ns, "kind": "namespaces"})
            if (ns, name) in self._bucket(kind):
                raise ApiError(409, "AlreadyExists", '%s "%s" already exists'
                               % (kind.qualified, name), _details(kind, name))
            obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
            meta.pop("resourceVersion", None)
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=objects.now())
            if kind.namespaced:
                meta["namespace"] = ns
            if "spec" in obj:
                meta["generation"] = 1
            objects.apply_defaults(kind, obj)
            if dry_run:
                return obj
            return self._commit(kind, (ns, name), obj, "ADDED")

    def update(self, kind, ns, name, obj, subresource=None, dry_run=False, create=False):
        """Replace an object (PUT); `create` lets an apply patch make one that is missing."""
        self._check_body(kind, obj, ns, name)
        with self.cond:
            if create and (ns, name) not in self._bucket(kind):
                obj.setdefault("metadata", {})["name"] = name
                return self.create(kind, ns, obj, dry_run)
            old = self._current(kind, ns, name)
            want = obj["metadata"].get("resourceVersion")
            if want and want != old["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", 'Operation cannot be fulfilled on %s "%s": the '
                               "object has been modified; please apply your changes to the "
                               "latest version and try again" % (kind.qualified, name),
                               _details(kind, name))
            if subresource == "status":
                new = dict(copy.deepcopy(old), status=obj.get("status", {}))
            else:
                new = dict(obj, apiVersion=kind.api_version, kind=kind.kind)
                # Where status is a subresource, writes to the object leave it alone.
                if kind.subresource("status") is not None:
                    new.pop("status", None)
                    if "status" in old:
                        new["status"] = copy.deepcopy(old["status"])
            meta = new["metadata"] = dict(new["metadata"])
            for k in ("uid", "creationTimestamp", "namespace", "generation", "name"):
                if k in old["metadata"]:
                    meta[k] = old["metadata"][k]
                else:
                    meta.pop(k, None)
            if "spec" in new and new.get("spec") != old.get("spec"):
                meta["generation"] = old["metadata"].get("generation", 0) + 1
            objects.apply_defaults(kind, new)
            if dry_run:
                return new
            return self._commit(kind, (ns, name), new, "MODIFIED")

    def patch(self, kind, ns, name, ptype, body, subresource=None, dry_run=False):
        with self.cond:
            if ptype == "apply" and (ns, name) not in self._bucket(kind):
                return self.update(kind, ns, name, body, dry_run=dry_run, create=True)
            old = self._current(kind, ns, name)
            if ptype == "json":
                new = json_patch(old, body)
            elif not isinstance(body, dict):
                raise bad_request("patch body must be a JSON object")
            elif ptype == "strategic":
                new = strategic_merge_patch(old, body)
            else:
                new = merge_patch(old, body)
            meta = new.get("metadata") if isinstance(new, dict) else None
            if not isinstance(meta, dict):
                raise bad_request("the patched object has no metadata")
            # A resourceVersion in the patch itself is a precondition; otherwise none.
            body_meta = body.get("metadata") if isinstance(body, dict) else None
            if not (isinstance(body_meta, dict) and body_meta.get("resourceVersion")):
                meta.pop("resourceVersion", None)
            return self.update(kind, ns, name, new, subresource, dry_run)

    def scale(self, kind, ns, name, ptype=None, body=None, dry_run=False):
        """The autoscaling/v1 Scale of a deployment; with ptype, change its replicas."""
        with self.cond:
            current = objects.scale_of(self._current(kind, ns, name))
            if ptype is None:
                return current
            if ptype == "update":
                new = body
            elif ptype == "json":
                new = json_patch(current, body)
            else:
                new = merge_patch(current, body)
            replicas = new.get("spec", {}).get("replicas") if isinstance(new, dict) else None
            if not isinstance(replicas, int) or replicas < 0:
                raise invalid(kind, name, "spec.replicas", "Invalid value: %r" % (replicas,))
            dep = self.patch(kind, ns, name, "merge", {"spec": {"replicas": replicas}},
                             dry_run=dry_run)
            return objects.scale_of(dep)

    def delete(self, kind, ns, name, dry_run=False):
        with self.cond:
            obj = copy.deepcopy(self._current(kind, ns, name))
            if dry_run:
                return obj
            if kind.plural == "namespaces":
                for bucket in self.objects.values():
                    for key in [k for k in bucket if k[0] == name]:
                        self._commit(_kind_of(bucket[key]), key, bucket[key], "DELETED")
            return self._commit(kind, (ns, name), obj, "DELETED")

    def delete_collection(self, kind, ns, labels="", fields=""):
        items, _ = self.list(kind, ns, labels, fields)
        with self.cond:
            keys = [(o["metadata"].get("namespace"), o["metadata"]["name"]) for o in items]
            return [self._commit(kind, key, self._bucket(kind)[key], "DELETED")
                    for key in keys if key in self._bucket(kind)]

    def seed(self):
        import catalog
        for plural, ns, obj in objects.seed():
            kind = catalog.find_kind("", "v1", plural)
            self.create(kind, ns, json.loads(json.dumps(obj)))


def _kind_of(obj):
    import catalog
    group, _, version = obj["apiVersion"].rpartition("/")
    for k in catalog.KINDS:
        if k.group == group and k.version == version and k.kind == obj["kind"]:
            return k
    raise KeyError(obj["kind"])

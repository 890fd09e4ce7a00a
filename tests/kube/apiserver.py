#!/usr/bin/env python3
"""A Kubernetes API server for tests, faithful on the wire to what kubectl sends and expects.

    apiserver.py --port P --log LOG --cert server.crt --key server.key --token TOKEN
                 [--client-ca ca.crt]

Serves HTTPS (HTTP/1.1, keep-alive) on 127.0.0.1:P. A request is authenticated by a client
certificate signed by --client-ca (CN = user, O = groups) or by `Authorization: Bearer
TOKEN` (user "token-user"; --token may be given more than once); anything else gets a 401 Status. Impersonate-User and
Impersonate-Group are honoured, and `kubectl auth whoami` reports the effective user.

Each response appends one JSON line to LOG (flushed at once, written when the status line
goes out, so a stream's line is there while it still runs):
    {"time": 1718000000.0, "method": "GET", "path": "/api/v1/pods?limit=500", "status": 200,
     "user": "alice", "client_cert": "CN=bob,O=devs" or null,
     "headers": {"authorization": [...], "impersonate-user": [...],
                 "impersonate-group": [...], "accept": [...], "content-type": [...],
                 "upgrade": [...], "sec-websocket-protocol": [...],
                 "x-stream-protocol-version": [...]}}
Every header value is a list (empty when absent), since some of them repeat.

Served, for namespaces, nodes (read-only), pods (log, exec, attach, portforward, status),
secrets, configmaps, services and apps/v1 deployments (scale, status):
- /version; /api and /apis as legacy APIVersions/APIGroupList or aggregated discovery
  (apidiscovery.k8s.io v2 or v2beta1, whichever the Accept header prefers: kubectl 1.27-1.29
  ask for v2beta1 only, 1.30+ for v2 then v2beta1); /api/v1, /apis/apps/v1 resource lists.
- /openapi/v3 (index and thin per-group-version documents) and /openapi/v2 as a minimal
  protobuf document (kubectl 1.27 cannot apply without it; later ones fetch it too).
  Both declare the fieldValidation parameter on PATCH, so kubectl leaves validation to the
  server, and carry no strategic-merge schemas, so kubectl uses its compiled-in types.
- CRUD with JSON, YAML or Kubernetes protobuf bodies (kubectl 1.32+ sends `create`
  objects as protobuf), resourceVersion from one global counter, labelSelector,
  fieldSelector, limit/continue, dryRun, delete preconditions, deletecollection; PATCH
  as merge, strategic merge (simplified), JSON patch and apply (server-side apply sends
  the object as JSON under application/apply-patch+yaml).
- Table output when Accept asks `as=Table` (PartialObjectMetadata rows, or whole objects
  with includeObject=Object); watch (`?watch=true` and /watch/ paths) streaming one
  JSON event per chunk as it happens, Table-shaped when asked, until timeoutSeconds.
- Pod logs: `line 1` .. `line 10`; follow=true adds a line every 200 ms up to `line 100`.
- Pod exec and attach over WebSocket (RFC 6455, v5.channel.k8s.io or v4.channel.k8s.io;
  see exec_ws.py) or SPDY/3.1 (v4 down to channel.k8s.io; see spdy.py), with a tiny shell;
  attach reaches a fresh `sh` standing in for the container's main process. A pod annotated
  `test.portcullis.dev/spdy-only: "true"` refuses the WebSocket upgrade (400), as a server
  from before WebSocket exec does, so kubectl 1.30+ fall back to SPDY.
- Pod port-forward over SPDY/3.1 (portforward.k8s.io) to port 80, an upper-case echo.
- POST .../selfsubjectreviews (authentication.k8s.io v1, v1beta1, v1alpha1).
Seeded with namespaces default, kube-system and prod, node node-1, pod default/web-0,
secret default/db-creds, configmap default/app-config and service default/kubernetes.

kubectl 1.30 and later exec over WebSocket; 1.27 to 1.29 over SPDY. Port-forward tunnelled
through a WebSocket gets a 400 Status, so kubectl 1.31 and later fall back to SPDY.
"""
import argparse
import base64
import json
import ssl
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

sys.dont_write_bytecode = True   # leave no __pycache__ beside the sibling modules
import catalog  # noqa: E402
import kubepb  # noqa: E402
import objects  # noqa: E402
from store import ApiError, Store, bad_request  # noqa: E402
from streams import Streams  # noqa: E402

try:
    import yaml
except ImportError:
    yaml = None

MAX_BODY = 16 << 20
LOG_HEADERS = ["authorization", "impersonate-user", "impersonate-group", "accept",
               "content-type", "upgrade", "sec-websocket-protocol", "x-stream-protocol-version"]
STREAMED = ("exec", "attach", "portforward")
PATCH_TYPES = {"application/json-patch+json": "json", "application/merge-patch+json": "merge",
               "application/strategic-merge-patch+json": "strategic",
               "application/apply-patch+yaml": "apply"}

args = None
store = Store()
log_lock = threading.Lock()


def status_failure(code, reason, message):
    return ApiError(code, reason, message).status()


def media_types(accept):
    """[(type, params)] from an Accept header, in the client's order."""
    out = []
    for part in (accept or "").split(","):
        items = [p.strip() for p in part.split(";")]
        params = {}
        for p in items[1:]:
            k, _, v = p.partition("=")
            params[k.strip().lower()] = v.strip()
        out.append((items[0].lower(), params))
    return out


def negotiate(accept, as_kind, group, versions):
    """The version of a `;as=KIND` form the client prefers, or None for plain JSON."""
    for mtype, params in media_types(accept):
        if params.get("as") == as_kind and params.get("g") == group \
                and params.get("v") in versions and mtype == "application/json":
            return params["v"]
        if "as" not in params and mtype in ("application/json", "*/*", "application/*", ""):
            return None
    return None


def list_doc(kind, items, rv, cont=None, remaining=None):
    meta = {"resourceVersion": rv}
    if cont:
        meta["continue"] = cont
        meta["remainingItemCount"] = remaining
    for item in items:
        item.pop("kind", None)
        item.pop("apiVersion", None)
    return {"kind": kind.kind + "List", "apiVersion": kind.api_version, "metadata": meta,
            "items": items}


class Handler(Streams, BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "portcullis-test-apiserver"

    def log_message(self, *a):
        pass

    # ---- the wire ----------------------------------------------------------------------

    def header_list(self, name):
        headers = getattr(self, "headers", None)
        return (headers.get_all(name) or []) if headers is not None else []

    def client_subject(self):
        try:
            cert = self.connection.getpeercert()
        except (AttributeError, ValueError, OSError):
            return None
        if not cert:
            return None
        short = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU"}
        return ",".join("%s=%s" % (short.get(k, k), v)
                        for rdn in cert.get("subject", ()) for k, v in rdn)

    def send_response(self, code, message=None):
        super().send_response(code, message)
        self.started = True
        line = {"time": round(time.time(), 3), "method": self.command,
                "path": getattr(self, "path", None), "status": code,
                "user": getattr(self, "user", (None,))[0], "client_cert": self.client_subject(),
                "headers": {h: self.header_list(h) for h in LOG_HEADERS}}
        with log_lock, open(args.log, "a") as f:
            f.write(json.dumps(line) + "\n")
            f.flush()

    def send_error(self, code, message=None, explain=None):
        # Malformed requests rejected by http.server still get a Status, never HTML.
        self.close_connection = True
        reasons = {400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed",
                   413: "RequestEntityTooLarge", 414: "RequestURITooLong"}
        self.send_json(code, status_failure(code, reasons.get(code, "InternalError"),
                                            message or "request failed"))

    def send_body(self, code, data, ctype):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_json(self, code, doc, ctype="application/json"):
        self.send_body(code, json.dumps(doc).encode(), ctype)

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                try:
                    size = int(self.rfile.readline(64).strip().split(b";")[0], 16)
                except ValueError:
                    self.close_connection = True
                    raise bad_request("malformed chunked body")
                if len(data) + size > MAX_BODY:
                    self.close_connection = True
                    raise ApiError(413, "RequestEntityTooLarge", "request body too large")
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline(8)
        try:
            n = int(self.headers.get("Content-Length", "0") or "0")
        except ValueError:
            raise bad_request("bad Content-Length")
        if n > MAX_BODY or n < 0:
            self.close_connection = True
            raise ApiError(413, "RequestEntityTooLarge", "request body too large")
        return self.rfile.read(n) if n else b""

    # ---- who is asking -----------------------------------------------------------------

    def authenticate(self):
        """(user, groups, extra) of the effective user, or raise 401."""
        subject = None
        try:
            cert = self.connection.getpeercert() if args.client_ca else None
        except (ValueError, OSError):
            cert = None
        if cert:
            rdns = [kv for rdn in cert.get("subject", ()) for kv in rdn]
            cn = [v for k, v in rdns if k == "commonName"]
            if cn:
                subject = (cn[0], [v for k, v in rdns if k == "organizationName"])
        if subject is None and self.headers.get("Authorization", "") in \
                ["Bearer " + t for t in args.token]:
            subject = ("token-user", [])
        if subject is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        user, groups = subject
        imp_user = self.headers.get_all("Impersonate-User") or []
        imp_groups = self.headers.get_all("Impersonate-Group") or []
        if imp_groups and not imp_user:
            raise ApiError(500, "InternalError", "Internal error occurred: requested %s without "
                           "impersonating a user" % imp_groups)
        extra = {}
        if imp_user:
            user, groups = imp_user[0], imp_groups
            for k, v in self.headers.items():
                if k.lower().startswith("impersonate-extra-"):
                    extra.setdefault(k[len("impersonate-extra-"):].lower(), []).append(v)
        if user != "system:anonymous" and "system:authenticated" not in groups:
            groups = groups + ["system:authenticated"]
        return user, groups, extra

    # ---- dispatch ------------------------------------------------------------------------

    def handle_any(self):
        self.started = False
        self.user = (None,)
        try:
            body = self.read_body()
            self.user = self.authenticate()
            self.route(body)
        except ApiError as e:
            self.fail(e.code, e.status())
        except (OSError, ssl.SSLError):
            self.close_connection = True   # the client went away mid-response
        except Exception:
            traceback.print_exc(file=sys.stderr)
            self.fail(500, status_failure(500, "InternalError", "Internal error occurred: "
                                          "the test API server failed on this request"))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = handle_any

    def fail(self, code, doc):
        if self.started:
            self.close_connection = True
            return
        try:
            self.send_json(code, doc)
        except OSError:
            self.close_connection = True

    def route(self, body):
        url = urlsplit(self.path)
        path, q = url.path, parse_qs(url.query, keep_blank_values=True)
        self.q = {k: v[-1] for k, v in q.items()}
        self.q_all = q
        accept = self.headers.get("Accept", "")
        if path in ("/healthz", "/livez", "/readyz"):
            return self.send_body(200, b"ok", "text/plain; charset=utf-8")
        if path == "/version":
            return self.send_json(200, catalog.SERVER_VERSION)
        if path in ("/api", "/apis"):
            version = negotiate(accept, "APIGroupDiscoveryList", "apidiscovery.k8s.io",
                                ("v2", "v2beta1"))
            if version:
                return self.send_json(200, catalog.aggregated_discovery(path == "/api", version),
                                      "application/json;g=apidiscovery.k8s.io;v=%s;"
                                      "as=APIGroupDiscoveryList" % version)
            if path == "/api":
                return self.send_json(200, catalog.api_versions(
                    "127.0.0.1:%d" % self.server.server_address[1]))
            return self.send_json(200, catalog.api_group_list())
        if path == "/openapi/v2":
            return self.send_body(200, kubepb.openapi_v2(catalog.KINDS),
                                  "application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
        if path == "/openapi/v3":
            return self.send_json(200, catalog.openapi_v3_index())
        if path.startswith("/openapi/v3/"):
            segs = path[len("/openapi/v3/"):].split("/")
            doc = None
            if segs[0] == "api" and len(segs) == 2:
                doc = catalog.openapi_v3_doc("", segs[1])
            elif segs[0] == "apis" and len(segs) == 3:
                doc = catalog.openapi_v3_doc(segs[1], segs[2])
            if doc is not None:
                return self.send_json(200, doc)
        segs = [s for s in path.split("/") if s]
        if len(segs) >= 2 and segs[0] == "api":
            group, version, rest = "", segs[1], segs[2:]
        elif len(segs) >= 3 and segs[0] == "apis":
            group, version, rest = segs[1], segs[2], segs[3:]
        elif len(segs) == 2 and segs[0] == "apis" and catalog.api_group(segs[1]):
            return self.send_json(200, catalog.api_group(segs[1]))
        else:
            raise self.no_route()
        if group == "authentication.k8s.io" and rest == ["selfsubjectreviews"] \
                and version in ("v1", "v1beta1", "v1alpha1"):
            return self.self_subject_review(version)
        if not rest:
            doc = catalog.api_resource_list(group, version)
            if doc is None:
                raise self.no_route()
            return self.send_json(200, doc)
        self.resource(group, version, rest, body)

    def no_route(self):
        return ApiError(404, "NotFound", "the server could not find the requested resource",
                        {"causes": [{"reason": "UnexpectedServerResponse",
                                     "message": "404 page not found"}]})

    def self_subject_review(self, version):
        if self.command != "POST":
            raise self.not_allowed()
        user, groups, extra = self.user
        info = {"username": user, "groups": groups}
        if extra:
            info["extra"] = extra
        self.send_json(201, {"kind": "SelfSubjectReview",
                             "apiVersion": "authentication.k8s.io/" + version,
                             "metadata": {"creationTimestamp": objects.now()},
                             "status": {"userInfo": info}})

    def not_allowed(self):
        return ApiError(405, "MethodNotAllowed",
                        "the server does not allow this method on the requested resource")

    # ---- resources -----------------------------------------------------------------------

    def resource(self, group, version, rest, body):
        watch = rest[0] == "watch"
        if watch:
            rest = rest[1:]
        ns = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            inner = catalog.find_kind(group, version, rest[2])
            if inner is not None and inner.namespaced:
                ns, rest = rest[1], rest[2:]
        kind = catalog.find_kind(group, version, rest[0]) if rest else None
        if kind is None or len(rest) > 3 or (ns is not None and not kind.namespaced) \
                or (kind.namespaced and len(rest) > 1 and ns is None):
            raise self.no_route()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and kind.subresource(sub) is None:
            raise self.no_route()
        watch = watch or self.q.get("watch") in ("true", "1")
        verb = {"GET": "watch" if watch else ("get" if name else "list"),
                "POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete" if name else "deletecollection"}.get(self.command)
        verbs = kind.subresource(sub)[4] if sub else kind.verbs
        if verb is None or verb not in verbs or (verb == "create" and name
                                                        and sub not in STREAMED) \
                or (watch and sub):
            raise self.not_allowed()
        dry = self.q.get("dryRun") == "All"
        if sub == "log":
            return self.pod_log(ns, name)
        if sub in ("exec", "attach"):
            return self.pod_exec(ns, name, attach=sub == "attach")
        if sub == "portforward":
            return self.pod_portforward(ns, name)
        if sub == "scale":
            ptype = {"GET": None, "PUT": "update"}.get(self.command)
            if self.command == "PATCH":
                ptype = self.patch_type()
            doc = store.scale(kind, ns, name, ptype, self.decode(body) if ptype else None, dry)
            return self.send_json(200, doc)
        if verb == "watch":
            return self.watch(kind, ns)
        if verb == "list":
            return self.list(kind, ns)
        if verb == "get":
            return self.send_object(200, kind, store.get(kind, ns, name))
        if verb == "create":
            return self.send_object(201, kind, store.create(kind, ns, self.decode(body), dry))
        if verb == "update":
            return self.send_object(200, kind, store.update(kind, ns, name, self.decode(body),
                                                            sub, dry))
        if verb == "patch":
            ptype = self.patch_type()
            if ptype == "apply" and not self.q.get("fieldManager"):
                raise bad_request("PATCH, application/apply-patch+yaml requires fieldManager "
                                  "to be set")
            existed = self.exists(kind, ns, name)
            obj = store.patch(kind, ns, name, ptype, self.decode(body, ptype == "apply"),
                              sub, dry)
            return self.send_object(200 if existed else 201, kind, obj)
        if verb == "delete":
            dry = self.delete_options(kind, ns, name, body) or dry
            return self.send_object(200, kind, store.delete(kind, ns, name, dry))
        items = store.delete_collection(kind, ns, self.q.get("labelSelector", ""),
                                        self.q.get("fieldSelector", ""))
        self.send_json(200, list_doc(kind, items, str(store.rv)))

    def exists(self, kind, ns, name):
        try:
            store.get(kind, ns, name)
            return True
        except ApiError:
            return False

    def patch_type(self):
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype not in PATCH_TYPES:
            raise ApiError(415, "UnsupportedMediaType",
                           "the body of the request was in an unknown format - accepted media "
                           "types include: " + ", ".join(PATCH_TYPES))
        return PATCH_TYPES[ctype]

    def decode(self, body, allow_yaml=False):
        ctype = self.headers.get("Content-Type", "application/json").split(";")[0].strip()
        if "protobuf" in ctype:
            try:
                return kubepb.decode(body)
            except kubepb.DecodeError as e:
                raise ApiError(415, "UnsupportedMediaType", "cannot decode this protobuf "
                               "body: %s; send application/json" % e)
        if "cbor" in ctype:
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an "
                           "unknown format - accepted media types include: application/json, "
                           "application/yaml")
        try:
            return json.loads(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            if (allow_yaml or ctype.endswith("yaml")) and yaml is not None:
                try:
                    return yaml.safe_load(body)
                except yaml.YAMLError:
                    pass
            raise bad_request("error decoding request body: %s" % e)

    def delete_options(self, kind, ns, name, body):
        """Honour the DeleteOptions body: preconditions and dryRun. A body that is not JSON
        (a typed client's protobuf) is ignored, as its options are the defaults."""
        try:
            opts = json.loads(body.decode("utf-8")) if body.strip() else {}
        except (ValueError, UnicodeDecodeError):
            opts = {}
        opts = opts if isinstance(opts, dict) else {}
        pre = opts.get("preconditions") or {}
        if pre:
            meta = store.get(kind, ns, name)["metadata"]
            for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
                if pre.get(field) and pre[field] != meta.get(field):
                    raise ApiError(409, "Conflict", "Precondition failed: %s in precondition: "
                                   "%s, %s in object meta: %s" % (label, pre[field], label,
                                                                  meta.get(field)))
        return opts.get("dryRun") == ["All"]

    def table_version(self):
        return negotiate(self.headers.get("Accept", ""), "Table", "meta.k8s.io",
                         ("v1", "v1beta1"))

    def send_object(self, code, kind, obj):
        tv = self.table_version()
        if tv:
            doc = objects.table(kind, [obj], obj["metadata"].get("resourceVersion", ""),
                                self.q.get("includeObject", "Metadata"))
            doc["apiVersion"] = "meta.k8s.io/" + tv
            return self.send_json(code, doc, "application/json;as=Table;v=%s;g=meta.k8s.io" % tv)
        self.send_json(code, obj)

    def list(self, kind, ns):
        items, rv = store.list(kind, ns, self.q.get("labelSelector", ""),
                               self.q.get("fieldSelector", ""))
        cont, remaining = None, None
        start = self.q.get("continue")
        if start:
            try:
                after = json.loads(base64.urlsafe_b64decode(start.encode()))["after"]
            except (ValueError, KeyError, TypeError):
                raise bad_request("continue key is not valid")
            items = [o for o in items if [o["metadata"].get("namespace") or "",
                                          o["metadata"]["name"]] > after]
        limit = self.q.get("limit", "")
        if limit.isdigit() and 0 < int(limit) < len(items):
            last = items[int(limit) - 1]["metadata"]
            cont = base64.urlsafe_b64encode(json.dumps(
                {"after": [last.get("namespace") or "", last["name"]], "rv": rv}).encode()).decode()
            remaining = len(items) - int(limit)
            items = items[:int(limit)]
        tv = self.table_version()
        if tv:
            doc = objects.table(kind, items, rv, self.q.get("includeObject", "Metadata"),
                                cont=cont)
            doc["apiVersion"] = "meta.k8s.io/" + tv
            return self.send_json(200, doc, "application/json;as=Table;v=%s;g=meta.k8s.io" % tv)
        self.send_json(200, list_doc(kind, items, rv, cont, remaining))

class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, ctx):
        super().__init__(address, Handler)
        self.ctx = ctx
        self.store = store

    def finish_request(self, request, client_address):
        # TLS handshake in the connection's own thread, so one slow client stalls no other.
        try:
            request.settimeout(10)
            tls = self.ctx.wrap_socket(request, server_side=True)
            tls.settimeout(None)
        except (OSError, ssl.SSLError):
            request.close()
            return
        try:
            Handler(tls, client_address, self)
        except (OSError, ssl.SSLError):
            pass
        finally:
            tls.close()

    def handle_error(self, request, client_address):
        print("apiserver: error serving %s: %s" % (client_address, sys.exc_info()[1]),
              file=sys.stderr)


def main():
    global args
    p = argparse.ArgumentParser(description="Kubernetes API server for tests")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--token", required=True, action="append")
    p.add_argument("--client-ca")
    args = p.parse_args()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    ctx.set_alpn_protocols(["http/1.1"])
    if args.client_ca:
        ctx.load_verify_locations(args.client_ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    store.seed()
    server = Server(("127.0.0.1", args.port), ctx)
    server.serve_forever()


if __name__ == "__main__":
    main()

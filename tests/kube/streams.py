"""The streaming answers of the test API server: watch, pod logs and pod exec.

A mixin for the request handler. Each stream writes HTTP/1.1 chunks and flushes every one
as it is produced; while nothing is due it polls the socket, and a client that has closed
its side ends the stream (and only that thread) quietly.
"""
import json
import select
import time
import uuid

import catalog
import exec_ws
import spdy
import objects
from store import ApiError, bad_request, fields_match, labels_match, parse_field_selector, \
    parse_label_selector

LOG_HISTORY, LOG_MAX = 10, 100
# A pod annotated so is exec'd and attached over SPDY only (a WebSocket upgrade gets 400).
SPDY_ONLY = "test.portcullis.dev/spdy-only"   # lines a pod "has written"; follow goes on up to LOG_MAX


class Streams:
    """Chunked and upgraded responses; mixed into apiserver.Handler."""

    def start_stream(self, ctype):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def client_gone(self):
        """True once the client closed its side; it sends nothing while a stream runs."""
        try:
            if self.connection.pending():
                return True
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable)
        except (OSError, ValueError):
            return True

    def watch(self, kind, ns):
        lreqs = parse_label_selector(self.q.get("labelSelector", ""))
        freqs = parse_field_selector(kind, self.q.get("fieldSelector", ""))
        try:
            timeout = int(self.q.get("timeoutSeconds") or 1800)
            since = self.q.get("resourceVersion", "")
            since = int(since) if since not in ("", "0") else None
        except ValueError:
            raise bad_request("invalid resourceVersion or timeoutSeconds")
        tv = self.table_version()

        def wanted(plural, obj):
            return plural == kind.plural and (ns is None or obj["metadata"].get("namespace")
                                               == ns) \
                and labels_match(lreqs, obj["metadata"].get("labels") or {}) \
                and fields_match(freqs, obj)

        store = self.server.store
        with store.cond:
            if since is None:
                # No resourceVersion: the current objects first, as synthetic ADDED events.
                initial = [("ADDED", o) for o in store.list(kind, ns)[0]
                           if wanted(kind.plural, o)]
                last = store.rv
            elif since < store.history_floor:
                initial, last = "expired", store.rv
            else:
                initial, last = [], since
        self.start_stream("application/json;as=Table;v=%s;g=meta.k8s.io" % tv if tv
                          else "application/json")
        first = [True]

        def send(etype, obj):
            if tv:
                obj = objects.table(kind, [obj], obj["metadata"]["resourceVersion"],
                                    self.q.get("includeObject", "Metadata"), columns=first[0])
                obj["apiVersion"] = "meta.k8s.io/" + tv
                first[0] = False
            self.chunk(json.dumps({"type": etype, "object": obj}).encode() + b"\n")

        if initial == "expired":
            expired = ApiError(410, "Expired", "too old resource version: %d (%d)" % (since, last))
            self.chunk(json.dumps({"type": "ERROR", "object": expired.status()}).encode() + b"\n")
            return self.chunk(b"")
        for etype, obj in initial:
            send(etype, obj)
        deadline = time.time() + timeout
        while time.time() < deadline:
            with store.cond:
                # One event per resourceVersion, so the newest rv - last entries are new.
                events = [e for e in store.history[-(store.rv - last):] if e[0] > last] \
                    if store.rv > last else []
                if not events:
                    store.cond.wait(min(1.0, max(0.0, deadline - time.time())))
            for rv, etype, plural, obj in events:
                last = rv
                if wanted(plural, obj):
                    send(etype, obj)
            if not events and self.client_gone():
                self.close_connection = True
                return
        self.chunk(b"")

    # ---- pods: logs and exec -------------------------------------------------------------

    def container_of(self, pod):
        names = [c.get("name") for c in pod.get("spec", {}).get("containers", [])]
        want = self.q.get("container")
        if not want:
            if len(names) != 1:
                raise bad_request("a container name must be specified for pod %s, choose one "
                                  "of: [%s]" % (pod["metadata"]["name"], " ".join(names)))
            return names[0]
        if want not in names:
            raise bad_request("container %s is not valid for pod %s"
                              % (want, pod["metadata"]["name"]))
        return want

    def pod_log(self, ns, name):
        kind = catalog.find_kind("", "v1", "pods")
        pod = self.server.store.get(kind, ns, name)
        container = self.container_of(pod)
        if self.q.get("previous") in ("true", "1"):
            raise bad_request('previous terminated container "%s" in pod "%s" not found'
                              % (container, name))
        stamps = self.q.get("timestamps") in ("true", "1")

        def line(i):
            prefix = objects.now().replace("Z", ".000000000Z ") if stamps else ""
            return ("%sline %d\n" % (prefix, i)).encode()

        lines = list(range(1, LOG_HISTORY + 1))
        tail = self.q.get("tailLines", "")
        if tail.lstrip("-").isdigit() and int(tail) >= 0:
            lines = lines[len(lines) - min(int(tail), len(lines)):]
        if self.q.get("follow") not in ("true", "1"):
            return self.send_body(200, b"".join(line(i) for i in lines),
                                  "text/plain")
        self.start_stream("text/plain")
        if lines:
            self.chunk(b"".join(line(i) for i in lines))
        for i in range(LOG_HISTORY + 1, LOG_MAX + 1):
            time.sleep(0.2)
            if self.client_gone():
                self.close_connection = True
                return
            self.chunk(line(i))
        self.chunk(b"")

    def pod_exec(self, ns, name, attach=False):
        """Exec (or attach: the stand-in attaches to a fresh `sh`, the pod's "main process")
        over a WebSocket or SPDY/3.1, whichever the client asks to upgrade to."""
        pod = self.server.store.get(catalog.find_kind("", "v1", "pods"), ns, name)
        upgrade = self.headers.get("Upgrade", "").lower()
        command = ["sh"] if attach else self.q_all.get("command") or []
        if not command:
            raise bad_request("you must specify at least 1 command")
        self.container_of(pod)
        flags = {k: self.q.get(k) in ("true", "1") for k in ("stdin", "stdout", "stderr", "tty")}
        if not (flags["stdin"] or flags["stdout"] or flags["stderr"]):
            raise bad_request("you must specify at least one of stdin, stdout, stderr")
        program = exec_ws.Program(command, name, flags["tty"])
        annotations = pod.get("metadata", {}).get("annotations") or {}
        if upgrade == "websocket" and annotations.get(SPDY_ONLY) == "true":
            # As an API server or kubelet from before WebSocket exec answers: the upgrade
            # fails, and kubectl 1.30+ fall back to SPDY.
            raise bad_request("Upgrade request required: this pod's node speaks SPDY/3.1 only")
        if upgrade.startswith("spdy/3.1"):
            protocol = self.switch_to_spdy(spdy.EXEC_PROTOCOLS)
            conn = spdy.Connection(self.rfile, self.wfile)
            return spdy.serve_exec(conn, program, flags, protocol, self.connection)
        if upgrade != "websocket" or self.command != "GET":
            raise bad_request("Upgrade request required")
        key = self.headers.get("Sec-WebSocket-Key", "")
        if self.headers.get("Sec-WebSocket-Version") != "13" or not key:
            raise bad_request("WebSocket version 13 and a Sec-WebSocket-Key are required")
        protocol = exec_ws.choose_protocol(self.header_list("Sec-WebSocket-Protocol"))
        if protocol is None:
            raise bad_request("none of the offered stream protocols is supported; this server "
                              "speaks " + ", ".join(exec_ws.PROTOCOLS))
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", exec_ws.accept_key(key))
        self.send_header("Sec-WebSocket-Protocol", protocol)
        self.end_headers()
        self.close_connection = True
        self.connection.settimeout(None)
        ws = exec_ws.WebSocket(self.rfile, self.wfile, self.connection)
        exec_ws.serve(ws, program, protocol)

    def pod_portforward(self, ns, name):
        """Port-forward over SPDY/3.1 to the pod's one open port, 80, where an "upper-case
        echo" answers every read with the same bytes upper-cased. SPDY tunnelled through a
        WebSocket (kubectl 1.31+ try it first) is refused, as by an API server without that
        feature, and kubectl falls back to SPDY."""
        self.server.store.get(catalog.find_kind("", "v1", "pods"), ns, name)
        if not self.headers.get("Upgrade", "").lower().startswith("spdy/3.1"):
            raise bad_request("Upgrade request required: port-forward speaks SPDY/3.1 here")
        self.switch_to_spdy([spdy.PORTFORWARD_PROTOCOL])
        conn = spdy.Connection(self.rfile, self.wfile)
        spdy.serve_portforward(conn, {80: bytes.upper}, self.connection)

    def switch_to_spdy(self, supported):
        """Answer 101 to an `Upgrade: SPDY/3.1` request; the stream protocol chosen."""
        protocol = spdy.choose_protocol(self.header_list("X-Stream-Protocol-Version"), supported)
        if protocol is None:
            raise bad_request("none of the offered stream protocols is supported; this server "
                              "speaks " + ", ".join(supported))
        self.send_response(101)
        self.send_header("Upgrade", "SPDY/3.1")
        self.send_header("Connection", "Upgrade")
        self.send_header("X-Stream-Protocol-Version", protocol)
        self.end_headers()
        self.close_connection = True
        self.connection.settimeout(None)
        return protocol

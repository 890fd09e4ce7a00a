#!/usr/bin/env python3
"""A small HTTP API standing in for Azure Resource Manager and Key Vault behind the gateway.

    backend.py PORT LOG

Serves ARM/Key Vault-shaped JSON on 127.0.0.1:PORT (HTTP/1.1, keep-alive, chunked request
bodies) and appends one JSON line per request to LOG: method, raw path, headers, body
length and SHA-256, so a test can prove what reached it (the held credential, never the
caller's token; the normalised path; the approved body).
"""
import gzip
import hashlib
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Brotli (for /br/) is installed beside this file by deploy/setup.sh.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "pylib"))
import brotli  # noqa: E402

PORT = int(sys.argv[1])
LOG = sys.argv[2]
lock = threading.Lock()

SUB = "/subscriptions/00000000-0000-0000-0000-000000000001"
RG = SUB + "/resourceGroups/rg-prod"


def resource(path):
    """The JSON document for a GET of `path`, or None."""
    if path.startswith(SUB + "/resourcegroups/") or path.startswith(SUB + "/resourceGroups/"):
        name = path.rstrip("/").split("/")[-1]
        if path.endswith("/listKeys"):
            return {"keys": [
                {"keyName": "key1", "value": "c3RvcmFnZS1rZXktb25lLXNlY3JldA==", "permissions": "FULL"},
                {"keyName": "key2", "value": "c3RvcmFnZS1rZXktdHdvLXNlY3JldA==", "permissions": "FULL"},
            ]}
        if "/Microsoft.Web/sites/" in path and path.endswith("/config/connectionstrings"):
            return {"id": path, "properties": {"db": {
                "value": "Server=tcp:orders.database.windows.net;User ID=app;Password=Hunter2-Prod!;",
                "type": "SQLAzure"}}}
        return {"id": path, "name": name, "location": "westeurope",
                "properties": {"provisioningState": "Succeeded",
                               "primaryKey": "pk-7f3a9c2e41b8",
                               "owner": "ada@example.com"}}
    if path.startswith("/secrets/"):
        name = path.split("/")[2]
        return {"value": "kv-" + name + "-s3cr3t-value",
                "id": "https://vault.example/secrets/" + name + "/1",
                "attributes": {"enabled": True}}
    if path == "/customers":
        return {"value": [
            {"name": "Ada Lovelace", "email": "ada@example.com", "card": "4111 1111 1111 1111"},
            {"name": "Alan Turing", "email": "alan@example.org", "card": "5500 0000 0000 0004"},
        ]}
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length", "0") or "0")
        return self.rfile.read(n) if n else b""

    def record(self, body):
        line = {"method": self.command, "path": self.path,
                "headers": [[k.lower(), v] for k, v in self.headers.items()],
                "body_len": len(body), "body_sha256": hashlib.sha256(body).hexdigest()}
        with lock:
            with open(LOG, "a") as f:
                f.write(json.dumps(line) + "\n")

    def send_json(self, status, doc):
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def handle_any(self):
        body = self.read_body()
        self.record(body)
        path = self.path.split("?")[0]
        if path == "/slow":
            # An answer that takes its time: a client may leave before it comes.
            time.sleep(3)
            return self.send_json(200, {"slow": True})
        if path == "/stream":
            # Chunks with pauses: a client that sees the first before the last proves the
            # response was streamed, not buffered.
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(5):
                chunk = ("chunk-%d %f\n" % (i, time.time())).encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
                time.sleep(0.3)
            self.wfile.write(b"0\r\n\r\n")
            return
        prefix = path.split("/")[1] if path.count("/") > 1 else ""
        if prefix in ("gzip", "br", "compress"):
            # Compressed whatever the client accepts, as some servers do; /compress/ claims a
            # coding the gateway does not decode (the bytes are gzip).
            doc = json.dumps(resource(path[len(prefix) + 1:])).encode()
            data = brotli.compress(doc) if prefix == "br" else gzip.compress(doc)
            coding = prefix
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Encoding", coding)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if self.command in ("GET", "HEAD"):
            doc = resource(path)
            if doc is None:
                self.send_json(404, {"error": {"code": "NotFound", "message": path}})
            else:
                self.send_json(200, doc)
            return
        if self.command == "DELETE":
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_json(200, {"method": self.command, "path": path, "body_len": len(body),
                             "body_sha256": hashlib.sha256(body).hexdigest()})

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = do_OPTIONS = handle_any


ThreadingHTTPServer.daemon_threads = True
server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
server.serve_forever()

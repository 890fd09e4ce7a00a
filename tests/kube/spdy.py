"""SPDY/3.1 for the test API server: the stream framing kubectl uses for exec and attach
before WebSocket (1.27 to 1.29, and later ones when WebSocket is refused) and for
port-forward (unless it tunnels SPDY through a WebSocket, which this server refuses, so
kubectl falls back to plain SPDY).

A connection carries numbered streams the client opens (SYN_STREAM with a compressed header
block naming the stream's type), answered by SYN_REPLY; DATA frames carry bytes, FLAG_FIN
ends one direction of a stream. Header blocks are zlib-compressed, one compression context
per direction for the whole connection, primed with the protocol's fixed dictionary.
"""
import json
import struct
import threading
import zlib

import exec_ws

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = \
    1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 1
MAX_FRAME = 1 << 20
EXEC_PROTOCOLS = ["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io",
                  "channel.k8s.io"]
PORTFORWARD_PROTOCOL = "portforward.k8s.io"

# The header-compression dictionary SPDY/3 fixes (1423 bytes).
DICTIONARY = (
    b"\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put"
    b"\x00\x00\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eacc"
    b"ept-charset\x00\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\x00\x00"
    b"\x00\x0daccept-ranges\x00\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthori"
    b"zation\x00\x00\x00\x0dcache-control\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent"
    b"-base\x00\x00\x00\x10content-encoding\x00\x00\x00\x10content-language\x00\x00\x00"
    b"\x0econtent-length\x00\x00\x00\x10content-location\x00\x00\x00\x0bcontent-md5\x00"
    b"\x00\x00\x0dcontent-range\x00\x00\x00\x0ccontent-type\x00\x00\x00\x04date\x00\x00"
    b"\x00\x04etag\x00\x00\x00\x06expect\x00\x00\x00\x07expires\x00\x00\x00\x04from\x00"
    b"\x00\x00\x04host\x00\x00\x00\x08if-match\x00\x00\x00\x11if-modified-since\x00\x00"
    b"\x00\x0dif-none-match\x00\x00\x00\x08if-range\x00\x00\x00\x13if-unmodified-since\x00"
    b"\x00\x00\x0dlast-modified\x00\x00\x00\x08location\x00\x00\x00\x0cmax-forwards\x00"
    b"\x00\x00\x06pragma\x00\x00\x00\x12proxy-authenticate\x00\x00\x00\x13proxy-authorizat"
    b"ion\x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\x00\x00\x0bretry-after\x00\x00"
    b"\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\x07trailer\x00\x00\x00\x11transfer-enco"
    b"ding\x00\x00\x00\x07upgrade\x00\x00\x00\x0auser-agent\x00\x00\x00\x04vary\x00\x00"
    b"\x00\x03via\x00\x00\x00\x07warning\x00\x00\x00\x10www-authenticate\x00\x00\x00\x06me"
    b"thod\x00\x00\x00\x03get\x00\x00\x00\x06status\x00\x00\x00\x06200 OK\x00\x00\x00\x07v"
    b"ersion\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\x06public\x00\x00\x00"
    b"\x0aset-cookie\x00\x00\x00\x0akeep-alive\x00\x00\x00\x06origin1001012012022052063003"
    b"02303304305306307402405406407408409410411412413414415416417502504505203 Non-Authorit"
    b"ative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized4"
    b"03 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Una"
    b"vailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu"
    b", Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,application/xml,"
    b"application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,deflate,s"
    b"dchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)


def choose_protocol(offered, supported):
    """The first of `supported` the client offered (X-Stream-Protocol-Version), or None."""
    names = [p.strip() for header in offered for p in header.split(",")]
    for p in supported:
        if p in names:
            return p
    return None


class Connection:
    """Server side of one SPDY/3.1 connection over a handler's rfile/wfile."""

    def __init__(self, rfile, wfile):
        self.rfile, self.wfile = rfile, wfile
        self.inflate = zlib.decompressobj(zdict=DICTIONARY)
        self.deflate = zlib.compressobj(zdict=DICTIONARY)
        self.lock = threading.Lock()

    def _read(self, n):
        data = self.rfile.read(n) if n else b""
        if len(data) != n:
            raise exec_ws.Closed("connection ended mid-frame")
        return data

    def _write(self, data):
        with self.lock:
            self.wfile.write(data)
            self.wfile.flush()

    def _control(self, ftype, flags, body):
        self._write(struct.pack("!HHI", 0x8000 | VERSION, ftype, flags << 24 | len(body)) + body)

    def _headers(self, block):
        raw = self.inflate.decompress(block)
        n, at = struct.unpack_from("!I", raw)[0], 4
        headers = {}
        for _ in range(n):
            ln = struct.unpack_from("!I", raw, at)[0]
            name = raw[at + 4:at + 4 + ln].decode()
            at += 4 + ln
            lv = struct.unpack_from("!I", raw, at)[0]
            value = raw[at + 4:at + 4 + lv].decode()
            at += 4 + lv
            headers[name.lower()] = value.split("\x00")[0]
        return headers

    def next(self):
        """The next frame that matters: ("syn", id, headers, fin), ("data", id, bytes, fin),
        ("rst", id, None, True) or ("goaway", 0, None, True). Pings are answered on the way;
        settings and window updates are read and dropped."""
        while True:
            head = self._read(8)
            word, flags_len = struct.unpack("!II", head)
            flags, n = flags_len >> 24, flags_len & 0xFFFFFF
            if n > MAX_FRAME:
                raise exec_ws.Closed("frame too large")
            body = self._read(n)
            if not word & 0x80000000:
                return ("data", word, body, bool(flags & FLAG_FIN))
            ftype = word & 0xFFFF
            if ftype == SYN_STREAM:
                sid = struct.unpack_from("!I", body)[0] & 0x7FFFFFFF
                return ("syn", sid, self._headers(body[10:]), bool(flags & FLAG_FIN))
            if ftype == HEADERS:
                self._headers(body[4:])   # keeps the compression context in step
            elif ftype == PING:
                self._control(PING, 0, body)
            elif ftype == RST_STREAM:
                return ("rst", struct.unpack_from("!I", body)[0] & 0x7FFFFFFF, None, True)
            elif ftype == GOAWAY:
                return ("goaway", 0, None, True)

    def reply(self, sid):
        """Accept stream `sid` (a SYN_REPLY with no headers)."""
        block = self.deflate.compress(struct.pack("!I", 0)) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        self._control(SYN_REPLY, 0, struct.pack("!I", sid) + block)

    def send(self, sid, data=b"", fin=False):
        for at in range(0, max(len(data), 1), 1 << 16):
            chunk = data[at:at + (1 << 16)]
            last = fin and at + (1 << 16) >= len(data)
            self._write(struct.pack("!II", sid, (FLAG_FIN if last else 0) << 24 | len(chunk))
                        + chunk)

    def goaway(self):
        try:
            self._control(GOAWAY, 0, struct.pack("!II", 0, 0))
        except OSError:
            pass

    def linger(self, sock):
        """Read until the client closes (briefly), so it reads everything before the end."""
        if sock is not None:
            sock.settimeout(2)
        try:
            while True:
                self.next()
        except (exec_ws.Closed, OSError, ValueError):
            pass


def serve_exec(conn, program, flags, protocol, sock=None, log=None):
    """Run `program` over SPDY streams as the kubelet does: wait for the streams the flags
    ask for, start the program, feed it stdin, then send the exit status on the error
    stream (a Status in v4, the message text before) and end every stream."""
    want = {"error"} if protocol != "channel.k8s.io" else set()
    want |= {k for k in ("stdin", "stdout") if flags[k]}
    if flags["stderr"] and not flags["tty"]:
        want.add("stderr")
    if flags["tty"] and protocol in ("v3.channel.k8s.io", "v4.channel.k8s.io"):
        want.add("resize")
    streams = {}
    try:
        while not want <= set(streams):
            kind, sid, headers, _ = conn.next()
            if kind == "syn":
                conn.reply(sid)
                streams[headers.get("streamtype", "")] = sid
            elif kind in ("rst", "goaway"):
                return

        def send(outputs):
            for channel, data in outputs:
                name = "stderr" if channel == exec_ws.STDERR else "stdout"
                if data and name in streams:
                    conn.send(streams[name], data)

        send(program.start())
        by_id = {sid: name for name, sid in streams.items()}
        while program.exit_code is None and program.failure is None:
            kind, sid, data, fin = conn.next()
            if kind in ("rst", "goaway"):
                return
            name = by_id.get(sid)
            if kind == "data" and name == "stdin":
                if data:
                    send(program.stdin(data))
                if fin:
                    send(program.stdin_closed())
            elif kind == "data" and name == "resize" and data and log:
                log("resize", data.decode("utf-8", "replace"))
        status = program.failure or exec_ws.exit_status(program.exit_code)
        for name in ("stdout", "stderr"):
            if name in streams:
                conn.send(streams[name], fin=True)
        if "error" in streams:
            if protocol == "v4.channel.k8s.io":
                message = json.dumps(status).encode()
            else:
                message = status.get("message", "").encode()
            conn.send(streams["error"], message, fin=True)
        conn.goaway()
        conn.linger(sock)
    except (exec_ws.Closed, OSError, ValueError):
        pass


def serve_portforward(conn, ports, sock=None):
    """Port-forward as the kubelet does: each forwarded connection is an error stream and a
    data stream sharing a request id; a port the pod has is served by `ports[port]` (a
    function from the bytes received to the bytes answered), another gets an error."""
    streams = {}   # sid -> (type, port, request id)
    pairs = {}     # request id -> {type: sid}
    try:
        while True:
            kind, sid, data, fin = conn.next()
            if kind == "goaway":
                return
            if kind == "syn":
                conn.reply(sid)
                key = (data.get("streamtype", ""), data.get("port", ""), data.get("requestid", ""))
                streams[sid] = key
                pair = pairs.setdefault(key[2], {})
                pair[key[0]] = sid
                closed = not key[1].isdigit() or int(key[1]) not in ports
                if key[0] == "data" and closed and "error" in pair:
                    conn.send(pair["error"], b"port %s is not open in the pod" % key[1].encode(),
                              fin=True)
                continue
            if kind != "data" or sid not in streams:
                continue
            stype, port, request = streams[sid]
            if stype == "data":
                if data and port.isdigit() and int(port) in ports:
                    conn.send(sid, ports[int(port)](data))
                if fin:
                    conn.send(sid, fin=True)
                    error = pairs.get(request, {}).get("error")
                    if error is not None:
                        conn.send(error, fin=True)
    except (exec_ws.Closed, OSError, ValueError):
        pass

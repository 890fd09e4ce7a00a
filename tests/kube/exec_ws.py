"""`kubectl exec` over WebSocket for the test API server: RFC 6455 framing, the
channel.k8s.io stream protocol (v4, v5) and a tiny fake shell to talk to.

Every binary message starts with a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 error (a
`Status` once the command ends), 4 resize (`{"Width":..,"Height":..}`); v5 adds 255, whose
next byte names a stream the peer has closed (kubectl sends [255, 0] at end of stdin).

The pod runs: `sh` (also /bin/sh, bash, ash) reading command lines from stdin, with a `$ `
prompt and terminal echo (Enter is \r, output lines end \r\n) when tty=true; `sh -c
SCRIPT`; and `echo ARGS`, `hostname` (the pod name), `whoami`, `pwd`, `true`, `false`,
`exit [N]` and `cat` (stdin to stdout until stdin closes). A command that ends sends its
exit status on channel 3 (Success, or Failure/NonZeroExitCode with the code), then a close
frame; a command that does not exist fails as a missing executable does.
"""
import base64
import hashlib
import json
import shlex
import struct

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PROTOCOLS = ["v5.channel.k8s.io", "v4.channel.k8s.io"]
MAX_MESSAGE = 16 << 20
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def accept_key(key):
    return base64.b64encode(hashlib.sha1(key.strip().encode() + GUID).digest()).decode()


def choose_protocol(offered):
    """The best stream protocol among those the client offered, or None."""
    names = [p.strip() for header in offered for p in header.split(",")]
    for p in PROTOCOLS:
        if p in names:
            return p
    return None


class Closed(Exception):
    """The peer closed the connection or broke the protocol."""


def _unmask(data, mask):
    n = len(data)
    pad = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(pad, "big")).to_bytes(n, "big")


class WebSocket:
    """Server side of one WebSocket connection over a handler's rfile/wfile."""

    def __init__(self, rfile, wfile, sock=None):
        self.rfile, self.wfile, self.sock = rfile, wfile, sock
        self.closed = False

    def _read(self, n):
        data = self.rfile.read(n) if n else b""
        if len(data) != n:
            raise Closed("connection ended mid-frame")
        return data

    def send(self, opcode, payload=b""):
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
        self.wfile.write(head + payload)
        self.wfile.flush()

    def close(self, code=1000, reason=""):
        if not self.closed:
            self.closed = True
            try:
                self.send(OP_CLOSE, struct.pack("!H", code) + reason.encode()[:120])
            except OSError:
                pass

    def _fail(self, code, reason):
        self.close(code, reason)
        raise Closed(reason)

    def recv(self):
        """The next whole data message (bytes); control frames are answered on the way."""
        message = None
        while True:
            b1, b2 = self._read(2)
            fin, opcode, n = b1 & 0x80, b1 & 0x0F, b2 & 0x7F
            if b1 & 0x70:
                self._fail(1002, "reserved bits set")
            if not b2 & 0x80:
                self._fail(1002, "client frames must be masked")
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            if opcode >= 8 and (n > 125 or not fin):
                self._fail(1002, "bad control frame")
            if n > MAX_MESSAGE or (message is not None and len(message) + n > MAX_MESSAGE):
                self._fail(1009, "message too big")
            mask = self._read(4)
            payload = _unmask(self._read(n), mask)
            if opcode == OP_PING:
                self.send(OP_PONG, payload)
                continue
            if opcode == OP_PONG:
                continue
            if opcode == OP_CLOSE:
                code = payload[:2] if len(payload) >= 2 else b""
                if not self.closed:
                    self.closed = True
                    self.send(OP_CLOSE, code)
                raise Closed("peer closed")
            elif opcode == OP_CONT:
                if message is None:
                    self._fail(1002, "continuation without a message")
                message += payload
            elif opcode in (OP_TEXT, OP_BINARY):
                if message is not None:
                    self._fail(1002, "new message inside a fragmented one")
                message = payload
            else:
                self._fail(1002, "unknown opcode %d" % opcode)
            if fin and message is not None:
                return message


# ---- the programs a pod can run --------------------------------------------------------

def exit_status(code):
    """The error-channel Status for an exit code, as the kubelet words it."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {"metadata": {}, "status": "Failure",
            "message": "command terminated with non-zero exit code: exit status %d" % code,
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


class Program:
    """One process in the pod: fed stdin, answers with (channel, bytes) output."""

    def __init__(self, argv, pod, tty):
        self.argv, self.pod, self.tty = argv, pod, tty
        self.exit_code = None
        self.failure = None   # a Status for a process that never started
        self.line = ""
        self.out = []

    def write(self, text, channel=STDOUT):
        if self.tty:
            text, channel = text.replace("\n", "\r\n"), STDOUT
        self.out.append((channel, text.encode()))

    def take(self):
        out, self.out = self.out, []
        return out

    @property
    def shell(self):
        return self.argv[0].rsplit("/", 1)[-1] in ("sh", "bash", "ash") and "-c" not in self.argv

    def start(self):
        name = self.argv[0].rsplit("/", 1)[-1]
        if name in ("sh", "bash", "ash") and len(self.argv) > 2 and self.argv[1] == "-c":
            for line in self.argv[2].replace(";", "\n").split("\n"):
                if self.exit_code is None:
                    self.run(line)
            if self.exit_code is None:
                self.exit_code = 0
        elif self.shell:
            if self.tty:
                self.write("$ ")
        elif name == "cat":
            pass
        elif not self.run(shlex.join(self.argv), standalone=True):
            self.failure = {
                "metadata": {}, "status": "Failure", "reason": "InternalError", "code": 500,
                "message": 'Internal error occurred: error executing command in container: '
                           'exec: "%s": executable file not found in $PATH' % self.argv[0]}
        return self.take()

    def run(self, line, standalone=False):
        """Run one command line; False if the command does not exist."""
        try:
            words = shlex.split(line)
        except ValueError:
            words = line.split()
        if not words:
            return True
        cmd, args = words[0].rsplit("/", 1)[-1], words[1:]
        status = 0
        if cmd == "echo":
            self.write(" ".join(args) + "\n")
        elif cmd == "hostname":
            self.write(self.pod + "\n")
        elif cmd == "whoami":
            self.write("root\n")
        elif cmd == "pwd":
            self.write("/\n")
        elif cmd in ("true", "false"):
            status = int(cmd == "false")
        elif cmd == "exit" and not standalone:
            self.exit_code = int(args[0]) & 255 if args and args[0].isdigit() else 0
            return True
        elif standalone:
            return False
        else:
            self.write("sh: 1: %s: not found\n" % cmd, STDERR)
        if standalone:
            self.exit_code = status
        return True

    def stdin(self, data):
        name = self.argv[0].rsplit("/", 1)[-1]
        if name == "cat":
            self.out.append((STDOUT, data))
            return self.take()
        if not self.shell:
            return []
        for ch in data.decode("utf-8", "replace"):
            if self.exit_code is not None:
                break
            if ch in "\r\n":
                if self.tty:
                    self.out.append((STDOUT, b"\r\n"))
                line, self.line = self.line, ""
                self.run(line)
                if self.tty and self.exit_code is None:
                    self.write("$ ")
            elif self.tty and ch in "\x7f\x08":
                if self.line:
                    self.line = self.line[:-1]
                    self.out.append((STDOUT, b"\b \b"))
            elif self.tty and ch == "\x03":
                self.line = ""
                self.write("^C\n$ ")
            elif ch == "\x04" and self.tty:
                if not self.line:
                    self.write("exit\n")
                    self.exit_code = 0
            else:
                self.line += ch
                if self.tty:
                    self.out.append((STDOUT, ch.encode()))
        return self.take()

    def stdin_closed(self):
        if self.exit_code is None:
            if self.line and self.shell:
                line, self.line = self.line, ""
                self.run(line)
            if self.exit_code is None:
                self.exit_code = 0
        return self.take()


def serve(ws, program, protocol, log=None):
    """Run `program` over `ws` until it exits or the client goes away."""
    def send(outputs):
        for channel, data in outputs:
            if data:
                ws.send(OP_BINARY, bytes([channel]) + data)

    try:
        send(program.start())
        while program.exit_code is None and program.failure is None:
            message = ws.recv()
            if not message:
                continue
            channel, data = message[0], message[1:]
            if channel == STDIN:
                send(program.stdin(data))
            elif channel == RESIZE and log:
                log("resize", data.decode("utf-8", "replace"))
            elif channel == CLOSE and protocol.startswith("v5") and data[:1] == bytes([STDIN]):
                send(program.stdin_closed())
        status = program.failure or exit_status(program.exit_code)
        ws.send(OP_BINARY, bytes([ERROR]) + json.dumps(status).encode())
        ws.close(1000)
        # Wait briefly for the client's close frame so it reads everything before the end.
        if ws.sock is not None:
            ws.sock.settimeout(2)
        while True:
            ws.recv()
    except (Closed, OSError, ValueError):
        pass

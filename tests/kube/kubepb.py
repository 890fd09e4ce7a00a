"""Decode the Kubernetes protobuf encoding of request bodies into the JSON form.

kubectl 1.32 and later send typed objects (`kubectl create configmap`, `create deployment`,
...) as `application/vnd.kubernetes.protobuf`: the bytes `k8s\\0` then a runtime.Unknown
message {1: typeMeta {1: apiVersion, 2: kind}, 2: raw object, 3: contentEncoding,
4: contentType}. The object schemas below name only the fields kubectl's generators fill;
unknown fields are skipped. Zero values are dropped as JSON `omitempty` would, except for
the fields listed in KEEP_ZERO (pointers on the Go side, where zero is a real value).
"""
import base64
import datetime

MAGIC = b"k8s\x00"


class DecodeError(ValueError):
    pass


def _varint(buf, i):
    shift = result = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise DecodeError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def fields(buf):
    """(field number, wire type, value) for each field of one message."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, i = _varint(buf, i)
        elif wire == 1:
            val, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise DecodeError("truncated field %d" % num)
            val, i = buf[i:i + n], i + n
        elif wire == 5:
            val, i = buf[i:i + 4], i + 4
        else:
            raise DecodeError("unsupported wire type %d" % wire)
        yield num, wire, val


S, B, I, BOOL = "string", "bytes", "int", "bool"
TIME, IOS, QTY = "time", "intorstring", "quantity"


def m(value):
    """A map<string, value> field."""
    return ("map", value)


def rep(t):
    return ("rep", t)


OBJECT_META = {1: ("name", S), 2: ("generateName", S), 3: ("namespace", S),
               5: ("uid", S), 6: ("resourceVersion", S), 7: ("generation", I),
               8: ("creationTimestamp", TIME), 11: ("labels", m(S)),
               12: ("annotations", m(S)), 14: ("finalizers", rep(S))}
LABEL_SELECTOR = {1: ("matchLabels", m(S)), 2: ("matchExpressions", rep({
    1: ("key", S), 2: ("operator", S), 3: ("values", rep(S))}))}
CONTAINER_PORT = {1: ("name", S), 2: ("hostPort", I), 3: ("containerPort", I),
                  4: ("protocol", S), 5: ("hostIP", S)}
ENV_VAR = {1: ("name", S), 2: ("value", S)}
RESOURCES = {1: ("limits", m(QTY)), 2: ("requests", m(QTY))}
CONTAINER = {1: ("name", S), 2: ("image", S), 3: ("command", rep(S)), 4: ("args", rep(S)),
             5: ("workingDir", S), 6: ("ports", rep(CONTAINER_PORT)), 7: ("env", rep(ENV_VAR)),
             8: ("resources", RESOURCES), 13: ("terminationMessagePath", S),
             14: ("imagePullPolicy", S), 16: ("stdin", BOOL), 17: ("stdinOnce", BOOL),
             18: ("tty", BOOL)}
POD_SPEC = {2: ("containers", rep(CONTAINER)), 3: ("restartPolicy", S),
            4: ("terminationGracePeriodSeconds", I), 6: ("dnsPolicy", S),
            7: ("nodeSelector", m(S)), 8: ("serviceAccountName", S), 10: ("nodeName", S),
            19: ("schedulerName", S), 20: ("initContainers", rep(CONTAINER))}
POD_TEMPLATE = {1: ("metadata", OBJECT_META), 2: ("spec", POD_SPEC)}
SERVICE_PORT = {1: ("name", S), 2: ("protocol", S), 3: ("port", I), 4: ("targetPort", IOS),
                5: ("nodePort", I)}
SCHEMAS = {
    "ConfigMap": {1: ("metadata", OBJECT_META), 2: ("data", m(S)), 3: ("binaryData", m(B)),
                  4: ("immutable", BOOL)},
    "Secret": {1: ("metadata", OBJECT_META), 2: ("data", m(B)), 3: ("type", S),
               4: ("stringData", m(S)), 5: ("immutable", BOOL)},
    "Namespace": {1: ("metadata", OBJECT_META), 2: ("spec", {1: ("finalizers", rep(S))})},
    "Pod": {1: ("metadata", OBJECT_META), 2: ("spec", POD_SPEC)},
    "Service": {1: ("metadata", OBJECT_META), 2: ("spec", {
        1: ("ports", rep(SERVICE_PORT)), 2: ("selector", m(S)), 3: ("clusterIP", S),
        4: ("type", S), 5: ("externalIPs", rep(S)), 10: ("externalName", S)})},
    "Deployment": {1: ("metadata", OBJECT_META), 2: ("spec", {
        1: ("replicas", I), 2: ("selector", LABEL_SELECTOR), 3: ("template", POD_TEMPLATE),
        4: ("strategy", {1: ("type", S)}), 5: ("minReadySeconds", I),
        6: ("revisionHistoryLimit", I), 7: ("paused", BOOL),
        9: ("progressDeadlineSeconds", I)})},
    "Scale": {1: ("metadata", OBJECT_META), 2: ("spec", {1: ("replicas", I)})},
    "SelfSubjectReview": {1: ("metadata", OBJECT_META)},
}
KEEP_ZERO = {"replicas", "port", "containerPort"}
KEEP_EMPTY = {"resources"}   # a struct, not a pointer: JSON always carries it


def _scalar(t, wire, val):
    if t == S:
        return val.decode("utf-8") if isinstance(val, bytes) else str(val)
    if t == B:
        return base64.b64encode(val).decode()
    if t in (I, BOOL):
        if wire != 0:
            raise DecodeError("expected a varint")
        if t == BOOL:
            return bool(val)
        return val - (1 << 64) if val >= 1 << 63 else val
    if t == TIME:
        secs = dict((n, v) for n, _, v in fields(val)).get(1, 0)
        if not secs:
            return None
        return datetime.datetime.fromtimestamp(secs, datetime.timezone.utc) \
            .strftime("%Y-%m-%dT%H:%M:%SZ")
    if t == IOS:
        f = {n: v for n, _, v in fields(val)}
        return f.get(2, 0) if not f.get(1) else f.get(3, b"").decode("utf-8")
    if t == QTY:
        return {n: v for n, _, v in fields(val)}.get(1, b"").decode("utf-8")
    return decode_message(val, t)


def _empty(v):
    return v is None or v == "" or v == 0 or v is False or v == {} or v == []


def decode_message(buf, schema):
    out = {}
    for num, wire, val in fields(buf):
        if num not in schema:
            continue
        name, t = schema[num]
        if isinstance(t, tuple) and t[0] == "map":
            entry = {n: v for n, _, v in fields(val)}
            key = entry.get(1, b"").decode("utf-8")
            out.setdefault(name, {})[key] = _scalar(t[1], 2, entry.get(2, b""))
        elif isinstance(t, tuple) and t[0] == "rep":
            if wire == 2 and t[1] in (I, BOOL):
                raise DecodeError("packed repeated fields are not used by these schemas")
            out.setdefault(name, []).append(_scalar(t[1], wire, val))
        else:
            out[name] = _scalar(t, wire, val)
    for num, (name, t) in schema.items():
        if name in KEEP_EMPTY and name not in out and isinstance(t, dict):
            out[name] = {}
    return {k: v for k, v in out.items()
            if not _empty(v) or (k in KEEP_ZERO and v == 0) or (k in KEEP_EMPTY and v == {})}


def decode(body):
    """The JSON-shaped object in a protobuf request body, or raise DecodeError."""
    if not body.startswith(MAGIC):
        raise DecodeError("missing the k8s protobuf prefix")
    envelope = {n: v for n, _, v in fields(body[len(MAGIC):])}
    type_meta = {n: v.decode("utf-8") for n, _, v in fields(envelope.get(1, b""))}
    api_version, kind = type_meta.get(1, ""), type_meta.get(2, "")
    if kind not in SCHEMAS:
        raise DecodeError("protobuf bodies of kind %r are not understood here" % kind)
    obj = {"apiVersion": api_version, "kind": kind}
    obj.update(decode_message(envelope.get(2, b""), SCHEMAS[kind]))
    obj.setdefault("metadata", {})
    return obj



# ---- encoding: the OpenAPI v2 document kubectl 1.27 to 1.29 insist on -------------------

def _key(num, wire):
    return _uvarint(num << 3 | wire)


def _uvarint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(num, value):
    """A length-delimited field: a string or an already encoded message."""
    data = value.encode() if isinstance(value, str) else value
    return _key(num, 2) + _uvarint(len(data)) + data


def openapi_v2(kinds):
    """A gnostic openapi_v2.Document, protobuf-encoded: every PATCH operation declares the
    fieldValidation query parameter, so kubectl lets the server validate instead of
    needing schemas; there are no definitions, so client-side lookups find nothing and
    kubectl falls back to its compiled-in types. Field numbers follow OpenAPIv2.proto."""
    paths = b""
    for k in kinds:
        if "patch" not in k.verbs:
            continue
        prefix = "/api/" + k.version if not k.group else "/apis/%s/%s" % (k.group, k.version)
        path = prefix + ("/namespaces/{namespace}/" if k.namespaced else "/") + k.plural + "/{name}"
        query = _field(2, "query") + _field(4, "fieldValidation") + _field(6, "string")
        param = _field(1, _field(2, _field(3, query)))      # ParametersItem.Parameter.NonBody
        gvk = 'group: "%s"\nkind: %s\nversion: %s\n' % (k.group, k.kind, k.version)
        ext = _field(1, "x-kubernetes-group-version-kind") + _field(2, _field(2, gvk))
        operation = _field(5, "patch" + k.kind) + _field(8, param) + _field(13, ext)
        paths += _field(2, _field(1, path) + _field(2, _field(8, operation)))
    info = _field(1, "Kubernetes") + _field(2, "v1.32.0")
    return _field(1, "2.0") + _field(2, info) + _field(8, paths)

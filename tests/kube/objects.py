"""Objects of the test API server: defaulting on write, table rows, and the seeded cluster.

What a control plane and kubelet would do later (schedule a pod, start its container, roll
out a deployment) happens at once on write, so every object reads as settled.
"""
import base64
import calendar
import itertools
import random
import string
import time

_ips = itertools.count(2)


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def parse_time(ts):
    try:
        return calendar.timegm(time.strptime(ts, "%Y-%m-%dT%H:%M:%SZ"))
    except (TypeError, ValueError):
        return time.time()


def human_age(ts):
    """The AGE column: the same short forms a real server prints (`45s`, `3m12s`, `2d4h`)."""
    s = int(time.time() - parse_time(ts))
    if s < 0:
        return "0s"
    if s < 120:
        return "%ds" % s
    m = s // 60
    if m < 10:
        return "%dm%ds" % (m, s % 60) if s % 60 else "%dm" % m
    if m < 180:
        return "%dm" % m
    h = m // 60
    if h < 8:
        return "%dh%dm" % (h, m % 60) if m % 60 else "%dh" % h
    if h < 48:
        return "%dh" % h
    if h < 24 * 8:
        return "%dd%dh" % (h // 24, h % 24) if h % 24 else "%dd" % (h // 24)
    if h < 24 * 365 * 2:
        return "%dd" % (h // 24)
    return "%dy" % (h // (24 * 365))


def random_suffix(n=5):
    return "".join(random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(n))


# ---- defaulting --------------------------------------------------------------------------

def _pod_running(pod):
    spec = pod.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("nodeName", "node-1")
    status = pod.setdefault("status", {})
    if "phase" in status:
        return
    started = now()
    status.update({
        "phase": "Running", "hostIP": "10.0.0.10", "podIP": "10.244.0.%d" % (next(_ips) % 250),
        "startTime": started, "qosClass": "BestEffort",
        "conditions": [{"type": t, "status": "True", "lastTransitionTime": started}
                       for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")],
        "containerStatuses": [{
            "name": c.get("name", ""), "image": c.get("image", ""), "ready": True,
            "started": True, "restartCount": 0,
            "imageID": "docker.io/library/" + c.get("image", "") + "@sha256:" + "0" * 64,
            "containerID": "containerd://" + "%064x" % random.getrandbits(256),
            "state": {"running": {"startedAt": started}}}
            for c in spec.get("containers", [])]})


def _deployment_status(dep):
    spec = dep.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    spec.setdefault("strategy", {"type": "RollingUpdate",
                                 "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    n = spec["replicas"]
    status = {"observedGeneration": dep["metadata"].get("generation", 1), "replicas": n,
              "updatedReplicas": n, "readyReplicas": n, "availableReplicas": n,
              "conditions": [{"type": "Available", "status": "True", "reason":
                              "MinimumReplicasAvailable", "lastUpdateTime": now(),
                              "lastTransitionTime": now()}]}
    if n == 0:
        for k in ("readyReplicas", "availableReplicas", "updatedReplicas"):
            del status[k]
    dep["status"] = status


def _service_defaults(svc):
    spec = svc.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if "clusterIP" not in spec:
        n = next(_ips)
        spec["clusterIP"] = "10.96.%d.%d" % (n // 250, n % 250 + 1)
    spec.setdefault("clusterIPs", [spec["clusterIP"]])
    for p in spec.get("ports", []):
        p.setdefault("protocol", "TCP")
        p.setdefault("targetPort", p.get("port"))
    svc.setdefault("status", {"loadBalancer": {}})


def _secret_defaults(secret):
    secret.setdefault("type", "Opaque")
    # stringData is write-only: folded into data as the real server does.
    for k, v in (secret.pop("stringData", None) or {}).items():
        secret.setdefault("data", {})[k] = base64.b64encode(str(v).encode()).decode()


def _namespace_defaults(ns):
    name = ns["metadata"]["name"]
    ns["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
    ns.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    ns["status"] = {"phase": "Active"}


DEFAULTS = {"Pod": _pod_running, "Deployment": _deployment_status, "Service": _service_defaults,
            "Secret": _secret_defaults, "Namespace": _namespace_defaults}


def apply_defaults(kind, obj):
    fn = DEFAULTS.get(kind.kind)
    if fn:
        fn(obj)


_NAME_CHARS = set(string.ascii_lowercase + string.digits + "-.")


def name_problem(name):
    """Why `name` is not a valid object name (RFC 1123 subdomain), or None."""
    if not name or len(name) > 253 or not set(name) <= _NAME_CHARS \
            or not name[0].isalnum() or not name[-1].isalnum():
        return ('a lowercase RFC 1123 subdomain must consist of lower case alphanumeric '
                "characters, '-' or '.', and must start and end with an alphanumeric character")
    return None


# ---- tables ------------------------------------------------------------------------------

def _col(name, typ="string", fmt="", priority=0, desc=""):
    return {"name": name, "type": typ, "format": fmt, "priority": priority,
            "description": desc or name}


NAME_COL = _col("Name", fmt="name", desc="Name must be unique within a namespace.")
AGE_COL = _col("Age", desc="CreationTimestamp is a timestamp representing the server time "
                           "when this object was created.")


def _pod_cells(p):
    spec, st = p.get("spec", {}), p.get("status", {})
    cs = st.get("containerStatuses", [])
    ready = sum(1 for c in cs if c.get("ready"))
    phase = st.get("phase", "Pending")
    if p["metadata"].get("deletionTimestamp"):
        phase = "Terminating"
    return [str(ready) + "/" + str(len(spec.get("containers", []))), phase,
            sum(c.get("restartCount", 0) for c in cs), None,
            st.get("podIP", "<none>"), spec.get("nodeName", "<none>"), "<none>", "<none>"]


def _deploy_cells(d):
    spec, st = d.get("spec", {}), d.get("status", {})
    cons = spec.get("template", {}).get("spec", {}).get("containers", [])
    sel = spec.get("selector", {}).get("matchLabels", {})
    return ["%d/%d" % (st.get("readyReplicas", 0), spec.get("replicas", 1)),
            st.get("updatedReplicas", 0), st.get("availableReplicas", 0), None,
            ",".join(c.get("name", "") for c in cons), ",".join(c.get("image", "") for c in cons),
            ",".join("%s=%s" % kv for kv in sorted(sel.items())) or "<none>"]


def _svc_cells(s):
    spec = s.get("spec", {})
    ports = ",".join("%s/%s" % (p.get("port"), p.get("protocol", "TCP"))
                     for p in spec.get("ports", [])) or "<none>"
    sel = ",".join("%s=%s" % kv for kv in sorted(spec.get("selector", {}).items()))
    return [spec.get("type", "ClusterIP"), spec.get("clusterIP", "<none>"), "<none>", ports,
            None, sel or "<none>"]


def _node_cells(n):
    return ["Ready", "control-plane", None, "v1.32.0", "10.0.0.10", "<none>",
            "Debian GNU/Linux 12 (bookworm)", "6.1.0", "containerd://1.7.24"]


# Columns after Name, with None marking where the age goes.
TABLES = {
    "Pod": ([_col("Ready", desc="The aggregate readiness state of this pod for accepting traffic."),
             _col("Status", desc="The aggregate status of the containers in this pod."),
             _col("Restarts", "integer", desc="The number of times the containers in this pod "
                                             "have been restarted."),
             AGE_COL, _col("IP", priority=1), _col("Node", priority=1),
             _col("Nominated Node", priority=1), _col("Readiness Gates", priority=1)],
            _pod_cells),
    "Deployment": ([_col("Ready"), _col("Up-to-date", "integer"), _col("Available", "integer"),
                    AGE_COL, _col("Containers", priority=1), _col("Images", priority=1),
                    _col("Selector", priority=1)], _deploy_cells),
    "Service": ([_col("Type"), _col("Cluster-IP"), _col("External-IP"), _col("Port(s)"),
                 AGE_COL, _col("Selector", priority=1)], _svc_cells),
    "Secret": ([_col("Type"), _col("Data", "integer"), AGE_COL],
               lambda s: [s.get("type", "Opaque"), len(s.get("data") or {}), None]),
    "ConfigMap": ([_col("Data", "integer"), AGE_COL],
                  lambda c: [len(c.get("data") or {}) + len(c.get("binaryData") or {}), None]),
    "Namespace": ([_col("Status"), AGE_COL],
                  lambda n: [n.get("status", {}).get("phase", "Active"), None]),
    "Node": ([_col("Status"), _col("Roles"), AGE_COL, _col("Version"),
              _col("Internal-IP", priority=1), _col("External-IP", priority=1),
              _col("OS-Image", priority=1), _col("Kernel-Version", priority=1),
              _col("Container-Runtime", priority=1)], _node_cells),
}


def scale_of(dep):
    """The autoscaling/v1 Scale view of a deployment."""
    meta = dep["metadata"]
    sel = dep.get("spec", {}).get("selector", {}).get("matchLabels", {})
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                              "creationTimestamp") if k in meta},
            "spec": {"replicas": dep.get("spec", {}).get("replicas", 1)},
            "status": {"replicas": dep.get("status", {}).get("replicas", 0),
                       "selector": ",".join("%s=%s" % kv for kv in sorted(sel.items()))}}


def partial_metadata(obj):
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata", {})}


def table(kind, objs, resource_version, include="Metadata", columns=True, cont=None):
    """A meta.k8s.io/v1 Table of `objs`; row objects as PartialObjectMetadata unless
    include is Object (includeObject=Object) or None."""
    extra, cells_of = TABLES.get(kind.kind, ([AGE_COL], lambda o: [None]))
    rows = []
    for o in objs:
        cells = [o["metadata"].get("name", "")] + [
            human_age(o["metadata"].get("creationTimestamp")) if c is None else c
            for c in cells_of(o)]
        row = {"cells": cells}
        if include == "Object":
            row["object"] = o
        elif include != "None":
            row["object"] = partial_metadata(o)
        rows.append(row)
    meta = {"resourceVersion": resource_version}
    if cont:
        meta["continue"] = cont
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
            "columnDefinitions": [NAME_COL] + extra if columns else [], "rows": rows}


# ---- the seeded cluster --------------------------------------------------------------------

def _b64(s):
    return base64.b64encode(s.encode()).decode()


def seed():
    """(plural, namespace, object) for the cluster as a test finds it."""
    out = [("namespaces", None, {"metadata": {"name": n}})
           for n in ("default", "kube-system", "prod")]
    out.append(("nodes", None, {
        "metadata": {"name": "node-1", "labels": {"kubernetes.io/hostname": "node-1",
                                                  "node-role.kubernetes.io/control-plane": ""}},
        "spec": {"podCIDR": "10.244.0.0/24"},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.10"}],
                   "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                   "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Debian GNU/Linux 12"}}}))
    out.append(("services", "default", {
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver"}},
        "spec": {"clusterIP": "10.96.0.1",
                 "ports": [{"name": "https", "port": 443, "targetPort": 6443}]}}))
    out.append(("pods", "default", {
        "metadata": {"name": "web-0", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27",
                                 "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}}))
    out.append(("secrets", "default", {
        "metadata": {"name": "db-creds"}, "type": "Opaque",
        "data": {"password": _b64("hunter2-s3cret"), "username": _b64("app")}}))
    out.append(("configmaps", "default", {
        "metadata": {"name": "app-config", "labels": {"app": "web"}},
        "data": {"database.url": "Server=tcp:db.example.net;Password=Sup3rSecret!;",
                 "owner": "ops-team@example.com", "log.level": "info"}}))
    return out

use super::*;

fn q(s: &str) -> Vec<(String, String)> {
    proxy_http::path::query_pairs(s).unwrap_or_else(|e| panic!("{e}"))
}

fn info(method: &str, path: &str, query: &str) -> KubeRequest {
    request_info(method, path, &q(query)).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// `verb group namespace resource name subresource`, `-` for what is not there.
fn parts(r: &KubeRequest) -> String {
    let s = |o: &Option<String>| o.as_deref().unwrap_or("-").to_string();
    format!(
        "{} {} {} {} {} {}",
        r.verb.cedar_id(),
        s(&r.group),
        s(&r.namespace),
        s(&r.resource),
        s(&r.name),
        s(&r.subresource)
    )
}

#[test]
fn resource_requests_read_as_the_api_server_reads_them() {
    let cases = [
        (
            "GET",
            "/api/v1/namespaces/default/pods",
            "",
            "kube.list  default pods - -",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods/web-0",
            "",
            "kube.get  default pods web-0 -",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods",
            "watch=true&resourceVersion=5",
            "kube.watch  default pods - -",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods",
            "watch=1",
            "kube.watch  default pods - -",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods",
            "watch=yes",
            "kube.watch  default pods - -",
        ),
        (
            "GET",
            "/api/v1/watch/namespaces/default/pods",
            "",
            "kube.watch  default pods - -",
        ),
        (
            "GET",
            "/api/v1/watch/namespaces/default/pods/web-0",
            "",
            "kube.watch  default pods web-0 -",
        ),
        ("GET", "/api/v1/pods", "", "kube.list  - pods - -"),
        ("GET", "/api/v1/nodes/n1", "", "kube.get  - nodes n1 -"),
        (
            "GET",
            "/api/v1/namespaces",
            "",
            "kube.list  - namespaces - -",
        ),
        (
            "GET",
            "/api/v1/namespaces/prod",
            "",
            "kube.get  prod namespaces prod -",
        ),
        (
            "PUT",
            "/api/v1/namespaces/prod/finalize",
            "",
            "kube.update  prod namespaces prod finalize",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "",
            "kube.create  default configmaps - -",
        ),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/prod/deployments/web",
            "",
            "kube.patch apps prod deployments web -",
        ),
        (
            "PUT",
            "/apis/apps/v1/namespaces/prod/deployments/web/scale",
            "",
            "kube.update apps prod deployments web scale",
        ),
        (
            "DELETE",
            "/api/v1/namespaces/default/pods/web-0",
            "",
            "kube.delete  default pods web-0 -",
        ),
        (
            "DELETE",
            "/api/v1/namespaces/default/configmaps",
            "",
            "kube.deletecollection  default configmaps - -",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods/web-0/log",
            "follow=true",
            "kube.get  default pods web-0 log",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods/web-0/exec",
            "command=sh",
            "kube.exec  default pods web-0 exec",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods/web-0/attach",
            "",
            "kube.attach  default pods web-0 attach",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods/web-0/portforward",
            "",
            "kube.portforward  default pods web-0 portforward",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/services/web:80/proxy/metrics",
            "",
            "kube.proxy  default services web:80 proxy",
        ),
        (
            "GET",
            "/api/v1/proxy/namespaces/default/pods/web-0/x/y",
            "",
            "kube.proxy  default pods web-0 -",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods/web-0/eviction",
            "",
            "kube.create  default pods web-0 eviction",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/secrets",
            "fieldSelector=metadata.name%3Ddb-creds",
            "kube.list  default secrets db-creds -",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/secrets",
            "fieldSelector=metadata.name!=x",
            "kube.list  default secrets - -",
        ),
        (
            "GET",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            "",
            "kube.list rbac.authorization.k8s.io - clusterrolebindings - -",
        ),
    ];
    for (method, path, query, want) in cases {
        assert_eq!(
            parts(&info(method, path, query)),
            want,
            "{method} {path}?{query}"
        );
    }
}

#[test]
fn other_paths_are_non_resource_requests_with_their_path() {
    for path in [
        "/api",
        "/apis",
        "/api/v1",
        "/apis/apps/v1",
        "/version",
        "/openapi/v3",
        "/",
    ] {
        let r = info("GET", path, "");
        assert_eq!(r.verb, KubeVerb::Get);
        assert_eq!(r.resource, None, "{path}");
        assert_eq!(r.path.as_deref(), Some(path));
    }
    assert_eq!(info("POST", "/version", "").verb, KubeVerb::Create);
}

#[test]
fn exec_names_its_command_and_odd_requests_are_refused() {
    let r = info(
        "GET",
        "/api/v1/namespaces/default/pods/web-0/exec",
        "command=sh&command=-c&command=rm+-rf+%2Ftmp&stdin=true",
    );
    assert_eq!(r.command.as_deref(), Some("sh -c 'rm -rf /tmp'"));
    let r = info(
        "GET",
        "/api/v1/namespaces/default/pods/web-0/exec",
        "command=echo&command=it%27s&command=&command=a=b",
    );
    assert_eq!(r.command.as_deref(), Some(r"echo 'it'\''s' '' a=b"));
    assert_eq!(
        request_info("GET", "/api/v1/watch", &[]),
        Err(InfoError::MissingResource("watch"))
    );
    assert!(matches!(
        request_info("TRACE", "/api/v1/pods", &[]),
        Err(InfoError::Method(_))
    ));
}

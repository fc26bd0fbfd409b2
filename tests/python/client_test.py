"""The official Python `kubernetes` client against a running Flotilla server.

Usage: python client_test.py KUBECONFIG
Loads the generated kubeconfig (HTTPS, the cluster CA, the admin token) and creates,
lists, watches, patches and deletes a Deployment and a ConfigMap. Exits non-zero with
a message on the first thing that does not behave as against kube-apiserver.
"""

import sys
import threading

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

NS = "default"


def main(kubeconfig):
    config.load_kube_config(config_file=kubeconfig)
    core = client.CoreV1Api()
    apps = client.AppsV1Api()

    # ConfigMap: create, read, list with a selector, merge-patch, replace, delete.
    cm = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="py-settings", labels={"owner": "python"}),
        data={"greeting": "hello"},
    )
    created = core.create_namespaced_config_map(NS, cm)
    assert created.metadata.uid, "uid is set"
    assert created.data == {"greeting": "hello"}
    listed = core.list_namespaced_config_map(NS, label_selector="owner=python")
    assert [i.metadata.name for i in listed.items] == ["py-settings"], listed.items
    patched = core.patch_namespaced_config_map(
        "py-settings", NS, {"data": {"extra": "1"}}, _content_type="application/merge-patch+json"
    )
    assert patched.data == {"greeting": "hello", "extra": "1"}, patched.data
    patched.data["greeting"] = "bonjour"
    replaced = core.replace_namespaced_config_map("py-settings", NS, patched)
    assert replaced.data["greeting"] == "bonjour"
    stale = replaced
    stale.metadata.resource_version = created.metadata.resource_version
    try:
        core.replace_namespaced_config_map("py-settings", NS, stale)
        raise AssertionError("a stale resourceVersion must conflict")
    except ApiException as e:
        assert e.status == 409, e
    try:
        core.read_namespaced_config_map("missing", NS)
        raise AssertionError("a missing object must be 404")
    except ApiException as e:
        assert e.status == 404, e

    # Deployment: a watch started now sees it created, scaled and deleted.
    events = []
    start = apps.list_namespaced_deployment(NS).metadata.resource_version
    done = threading.Event()

    def watch_deployments():
        w = watch.Watch()
        for event in w.stream(
            apps.list_namespaced_deployment, NS, resource_version=start, timeout_seconds=20
        ):
            events.append((event["type"], event["object"].metadata.name, event["object"].spec.replicas))
            if event["type"] == "DELETED":
                w.stop()
        done.set()

    watcher = threading.Thread(target=watch_deployments, daemon=True)
    watcher.start()

    labels = {"app": "py-web"}
    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="py-web"),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    containers=[client.V1Container(name="web", image="hello-http:1")]
                ),
            ),
        ),
    )
    made = apps.create_namespaced_deployment(NS, deployment)
    assert made.metadata.generation == 1
    scaled = apps.patch_namespaced_deployment(
        "py-web", NS, [{"op": "replace", "path": "/spec/replicas", "value": 4}]
    )
    assert scaled.spec.replicas == 4 and scaled.metadata.generation == 2
    strategic = apps.patch_namespaced_deployment(
        "py-web",
        NS,
        {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "hello-http:2"}]}}}},
        _content_type="application/strategic-merge-patch+json",
    )
    assert strategic.spec.template.spec.containers[0].image == "hello-http:2"
    scale = apps.read_namespaced_deployment_scale("py-web", NS)
    assert scale.spec.replicas == 4, scale
    names = [d.metadata.name for d in apps.list_deployment_for_all_namespaces().items]
    assert "py-web" in names, names
    # This client version returns deletes as plain dicts (its schema says `object`).
    status = apps.delete_namespaced_deployment("py-web", NS)
    assert status["status"] == "Success", status
    core.delete_namespaced_config_map("py-settings", NS)

    assert done.wait(20), f"the watch did not see the deletion: {events}"
    kinds = [e[0] for e in events]
    assert kinds == ["ADDED", "MODIFIED", "MODIFIED", "DELETED"], events
    assert events[1][2] == 4, events
    print("python client: ok")


if __name__ == "__main__":
    main(sys.argv[1])

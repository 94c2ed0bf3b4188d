"""The kind cluster's objects and pod network, rendered from the lab spec (no cluster needed)."""

import json

from dnscorrelate.cluster.kind.network import POD_SUBNET, flannel_objects, guard_rules, guard_script
from dnscorrelate.cluster.upstream import write_upstream_files
from dnscorrelate.cluster.workloads import cluster_corefile, manifest_objects
from dnscorrelate.cluster.spec import load_spec


def test_manifests_become_runnable_api_objects_in_creation_order():
    objects = manifest_objects(load_spec(), "dnscorrelate/client:x")
    kinds = [o["kind"] for o in objects]
    assert kinds == sorted(kinds, key=["Namespace", "Pod", "Service", "NetworkPolicy"].index)
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"] == ["demo"]  # built-ins already exist
    pods = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Pod"}
    assert pods["mypod"]["spec"]["containers"][0]["command"] == ["sleep", "infinity"]
    web = pods["web-0"]["spec"]
    assert web["containers"][0]["command"] == ["python3", "-m", "http.server", "8080"]
    assert (web["hostname"], web["subdomain"]) == ("web-0", "web-headless")
    assert all(c["image"] == "dnscorrelate/client:x" and c["imagePullPolicy"] == "Never"
               for p in pods.values() for c in p["spec"]["containers"])
    headless = next(o for o in objects if o["metadata"]["name"] == "web-headless")
    assert headless["apiVersion"] == "v1" and headless["spec"]["clusterIP"] == "None"


def test_corefile_forwards_to_the_upstream_not_the_nodes_resolver():
    corefile = load_spec().corefile
    rewritten = cluster_corefile(corefile, "172.30.0.9")
    assert "/etc/resolv.conf" in corefile and "/etc/resolv.conf" not in rewritten
    assert "forward . 172.30.0.9 {" in rewritten
    assert cluster_corefile("forward . 10.0.0.1\n", "172.30.0.9") == "forward . 10.0.0.1\n"  # explicit targets stay


def test_upstream_files_serve_every_zone_from_the_mounted_directory(tmp_path):
    spec = load_spec()
    write_upstream_files(spec, tmp_path, 7)
    corefile = (tmp_path / "Corefile").read_text()
    for zone in spec.upstreamZones:
        assert f"file {tmp_path / (zone + '.db')} {zone}" in corefile
        assert "SOA" in (tmp_path / f"{zone}.db").read_text()


def test_flannel_runs_as_its_manifest_runs_it_over_the_clusters_pod_network():
    objects = {o["kind"]: o for o in flannel_objects("dnscorrelate/flannel:x")}
    assert set(objects) == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet"}
    assert json.loads(objects["ConfigMap"]["data"]["net-conf.json"]) == {"Network": POD_SUBNET, "Backend": {"Type": "vxlan"}}
    cni = json.loads(objects["ConfigMap"]["data"]["cni-conf.json"])
    assert [p["type"] for p in cni["plugins"]] == ["flannel", "portmap"]
    pod = objects["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["hostNetwork"] and pod["tolerations"] == [{"operator": "Exists"}]
    copies = [c["command"] for c in pod["initContainers"]]
    assert copies == [["cp", "-f", "/opt/cni-plugin/flannel", "/opt/cni/bin/flannel"],
                      ["cp", "-f", "/etc/kube-flannel/cni-conf.json", "/etc/cni/net.d/10-flannel.conflist"]]
    flanneld = pod["containers"][0]
    assert flanneld["command"] == ["/opt/bin/flanneld", "--ip-masq", "--kube-subnet-mgr"]
    assert flanneld["securityContext"] == {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}}  # not privileged
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in [*pod["initContainers"], *pod["containers"]]:
        assert {m["name"] for m in container["volumeMounts"]} <= set(volumes)
        assert container["image"] == "dnscorrelate/flannel:x" and container["imagePullPolicy"] == "Never"
    granted = {(r, v) for rule in objects["ClusterRole"]["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert ("nodes/status", "patch") in granted and not any(v in {"create", "delete", "update"} for _, v in granted)


def test_guard_drops_what_pods_send_off_the_machine():
    rules = guard_rules("172.30.0.0/16")
    # nothing a pod sends leaves for an address outside the pods, the Services and the cluster's Docker network
    assert "ip saddr 10.244.0.0/16 ip daddr != { 10.244.0.0/16, 10.96.0.0/16, 172.30.0.0/16 } counter drop" in rules
    assert "hook forward" in rules and "masquerade" not in rules  # flanneld masquerades; the guard only drops
    assert guard_script("172.30.0.0/16").startswith("set -e\n")


CILIUM_AGENT_MANIFEST = """
apiVersion: v1
kind: ConfigMap
metadata: {name: cilium-config, namespace: kube-system}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: cilium, namespace: kube-system}
spec:
  template:
    spec:
      initContainers:
      - name: mount-cgroup
        securityContext: {privileged: true}
        volumeMounts: [{name: hostproc, mountPath: /hostproc}]
      containers:
      - name: cilium-agent
        volumeMounts:
        - {name: host-proc-sys-net, mountPath: /host/proc/sys/net}
        - {name: host-proc-sys-kernel, mountPath: /host/proc/sys/kernel}
      volumes:
      - {name: hostproc, hostPath: {path: /proc}}
      - {name: host-proc-sys-net, hostPath: {path: /proc/sys/net}}
      - {name: host-proc-sys-kernel, hostPath: {path: /proc/sys/kernel, type: Directory}}
"""


def test_cilium_agent_gets_the_nodes_kernel_sysctls_read_only(tmp_path):
    """The nodes share this machine's kernel: Cilium's agent must not set kernel.* sysctls on it."""
    from dnscorrelate.cluster.kind.network import cilium_objects

    path = tmp_path / "cilium.yaml"
    path.write_text(CILIUM_AGENT_MANIFEST)
    objects = cilium_objects(str(path))
    assert [o["kind"] for o in objects] == ["ConfigMap", "DaemonSet"]
    pod = objects[1]["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["host-proc-sys-kernel"]["readOnly"] is True
    assert "readOnly" not in mounts["host-proc-sys-net"]  # the node's own network namespace: the agent's to set
    assert "readOnly" not in pod["initContainers"][0]["volumeMounts"][0]  # privileged: a read-only mount would not hold it


def test_a_cilium_manifest_without_the_kernel_mount_is_refused(tmp_path):
    import pytest

    from dnscorrelate.cluster.kind.network import cilium_objects
    from dnscorrelate.errors import ClusterError

    path = tmp_path / "cilium.yaml"
    path.write_text(CILIUM_AGENT_MANIFEST.replace("/proc/sys/kernel", "/proc/sys/other").replace("path: /proc}", "path: /x}"))
    with pytest.raises(ClusterError, match="no mount of the node's /proc/sys/kernel"):
        cilium_objects(str(path))

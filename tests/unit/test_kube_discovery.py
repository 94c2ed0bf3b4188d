"""Finding pods' and nodes' network namespaces in /proc, as the Kubernetes backend does on kind's host."""

import os

from dnscorrelate.cluster.kube.discovery import PodRef, pod_targets, pod_uid_of

UID = "0a1b2c3d-4e5f-6789-abcd-ef0123456789"


def fake_proc(tmp_path, processes):
    """A /proc with, per pid, a cgroup file and ns/net pointing at a file standing for a namespace."""
    for pid, (cgroup, netns) in processes.items():
        (tmp_path / str(pid) / "ns").mkdir(parents=True)
        (tmp_path / str(pid) / "cgroup").write_text(cgroup)
        target = tmp_path / f"netns-{netns}"
        target.touch()
        os.symlink(target, tmp_path / str(pid) / "ns" / "net")
    return tmp_path


def test_pod_uid_from_cgroupfs_and_systemd_paths(tmp_path):
    proc = fake_proc(tmp_path, {
        10: (f"12:memory:/docker/abc/kubepods/besteffort/pod{UID}/ctr\n", "a"),
        11: (f"0::/docker/abc/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort-pod{UID.replace('-', '_')}.slice/cri-containerd-1.scope\n", "a"),
        12: ("0::/init.scope\n", "b"),
    })
    assert pod_uid_of(10, proc) == UID
    assert pod_uid_of(11, proc) == UID
    assert pod_uid_of(12, proc) is None
    assert pod_uid_of(99, proc) is None  # a process that is gone


def test_one_target_per_namespace_nodes_first_unknown_pods_skipped(tmp_path):
    other = "ffffffff-0000-1111-2222-333333333333"
    proc = fake_proc(tmp_path, {
        1: ("0::/docker/node\n", "node"),
        20: (f"0::/kubepods/pod{UID}/pause\n", "pod"),
        21: (f"0::/kubepods/pod{UID}/app\n", "pod"),        # same pod, same namespace: listed once
        30: (f"0::/kubepods/pod{other}/x\n", "unknown"),    # a pod the API did not list
        40: ("0::/kubepods/podhostnet/x\n", "node"),        # not a pod uid
    })
    pods = {UID: PodRef(UID, "demo/mypod", "pod")}
    targets = pod_targets(pods, {"kind-worker": 1}, proc)
    assert [(t.vantage, t.role) for t in targets] == [("kind-worker", "node"), ("demo/mypod", "pod")]
    assert targets[1].path == str(proc / "20" / "ns" / "net")

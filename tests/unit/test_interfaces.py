"""The declared interfaces of cluster/backend.py: every backend and capture offers all of its protocol, a
scenario's fault reaches the backend through `Faults` alone, and a backend refuses what it cannot make with
a typed error."""

from __future__ import annotations

import inspect

import pytest

from dnscorrelate.cluster.backend import Backend, Capture, Faults
from dnscorrelate.cluster.kube.agents import AgentCapture
from dnscorrelate.cluster.kube.backend import KubeBackend
from dnscorrelate.cluster.lab.backend import LabBackend
from dnscorrelate.errors import ClusterError, FaultNotSupported
from dnscorrelate.live.capture import Capture as LocalCapture
from dnscorrelate.live.session import NamespacesBackend
from dnscorrelate.runner import apply_fault
from dnscorrelate.scenarios import FAULT_KEYS, load_scenario


def members(protocol) -> set[str]:
    """What a protocol declares: its methods and properties, and its annotated attributes."""
    declared = {name for name, _ in inspect.getmembers(protocol) if not name.startswith("_")}
    return declared | set(protocol.__annotations__)


def offered(cls, instance=None) -> set[str]:
    """What a class offers: its methods and properties, and the attributes an instance sets."""
    return {name for name in dir(cls) if not name.startswith("_")} | set(vars(instance) if instance is not None else ())


@pytest.mark.parametrize("backend", [LabBackend, KubeBackend, NamespacesBackend])
def test_every_backend_offers_the_whole_backend_interface(backend):
    assert members(Backend) - offered(backend) - {"name"} == set()
    assert "name" in vars(backend)


@pytest.mark.parametrize("backend", [LabBackend, KubeBackend])
def test_every_cluster_backend_offers_every_fault(backend):
    missing = members(Faults) - offered(backend) - {"propagation"}
    assert missing == set()
    assert "self.propagation" in inspect.getsource(backend.__init__)


@pytest.mark.parametrize("capture", [LocalCapture([]), AgentCapture(api=None)])
def test_every_capture_offers_the_whole_capture_interface(capture):
    assert members(Capture) - offered(type(capture), capture) == set()


class Recorder:
    """A `Faults` that records the calls made to it."""

    def __init__(self) -> None:
        self.calls = []

    def __getattr__(self, method):
        if method not in members(Faults):
            raise AttributeError(method)
        return lambda *args: self.calls.append((method, args))


SCENARIO = """
name: every-fault
faults:
  - corefile: ".:53 {\\n    log\\n}\\n"
  - customServerBlock: "example.org:53 {\\n    log\\n}\\n"
  - apply: {kind: Service, metadata: {name: extra, namespace: demo}, spec: {selector: {app: web}, ports: [{port: 80}]}}
  - delete: {kind: Service, namespace: demo, name: extra}
  - upstreamCorefile: ".:53 {\\n    log\\n}\\n"
  - link: {from: node-0, to: demo/mypod, loss: 0.5}
  - stopReplica: 1
  - resolvConf: {pod: demo/mypod, text: "nameserver 192.0.2.1\\n"}
queries: [{from: demo/mypod, name: web.demo.svc.cluster.local}]
expect: {findings: [ok]}
"""


def test_each_fault_calls_its_one_method_of_the_backends_faults(tmp_path):
    path = tmp_path / "every-fault.yaml"
    path.write_text(SCENARIO)
    scenario = load_scenario(path)
    assert len(scenario.faults) == len(FAULT_KEYS)
    backend = Recorder()
    for fault in scenario.faults:
        apply_fault(backend, fault)
    assert [method for method, _ in backend.calls] == [
        "set_corefile", "set_custom_server_block", "apply", "delete", "set_upstream_corefile", "set_link", "stop_replica",
        "set_resolv_conf"]
    calls = dict(backend.calls)
    assert calls["set_custom_server_block"][0] == "example-org.server"  # the key from the block's zone
    assert calls["delete"] == ("Service", "demo", "extra")
    assert calls["set_link"] == ("node-0", "demo/mypod", 0.5, False)
    assert calls["stop_replica"] == (1,)
    assert calls["apply"][0][0].metadata.name == "extra"


@pytest.mark.parametrize("method, args, fault", [
    ("set_upstream_corefile", (".:53 {}\n",), "upstreamCorefile"),
    ("set_link", ("node-0", "demo/mypod", 0.0, True), "link"),
    ("set_resolv_conf", ("demo/mypod", "nameserver 192.0.2.1\n"), "resolvConf"),
])
def test_the_kube_backend_refuses_the_labs_own_faults_with_a_typed_error(method, args, fault):
    backend = KubeBackend.__new__(KubeBackend)  # no API server needed: it refuses before asking one
    with pytest.raises(FaultNotSupported) as raised:
        getattr(backend, method)(*args)
    assert (raised.value.fault, raised.value.backend) == (fault, "kube") and raised.value.reason
    assert isinstance(raised.value, ClusterError)  # a user error: the CLI prints it, `run` records it as the scenario's
    assert f"`{fault}`" in str(raised.value)

"""kind's cluster config as `cluster up` writes it: what the nodes mount for the agents."""

import yaml

from dnscorrelate.cluster.kind.build import Build
from dnscorrelate.cluster.kind.cluster import CHECKOUT, TRACER_IN_NODE, kind_config


def build(**changes):
    values = dict(kind="k", kubectl="c", node_image="n", client_image="cl", agent_image="a", upstream_image="u",
                  flannel_image="f", kube_version="v1.34.4", cap_shim=False, tracer_dir="/cache/kind/tracer")
    return Build(**{**values, **changes})


def test_nodes_mount_the_checkout_and_the_compiled_tracers_and_no_kernel_headers():
    config = yaml.safe_load(kind_config(build()))
    for node in config["nodes"]:
        mounts = {m["containerPath"]: (m["hostPath"], m["readOnly"]) for m in node["extraMounts"]}
        assert mounts == {"/opt/dnscorrelate/src": (str(CHECKOUT), True), TRACER_IN_NODE: ("/cache/kind/tracer", True)}


def test_an_older_build_without_compiled_tracers_mounts_the_checkout_only():
    config = yaml.safe_load(kind_config(build(tracer_dir="")))
    assert [m["containerPath"] for m in config["nodes"][0]["extraMounts"]] == ["/opt/dnscorrelate/src"]

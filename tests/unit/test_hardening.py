"""The smaller points of the cluster path's security review (issue 23 item 5): reports keep credentials out and
are private when they draw a cluster, and scenario faults refuse a cluster dnscorrelate did not make."""

import os
import stat
from types import SimpleNamespace

import pytest

from dnscorrelate.cluster.corefile import redacted_corefile
from dnscorrelate.cluster.facts import ClusterFacts
from dnscorrelate.errors import ClusterError
from dnscorrelate.outputs import written_whole
from dnscorrelate.report.html import cluster_view, holds_cluster_facts

CUSTOM = """\
secure.example:53 {
    tsig {
        secret transfer.key. hmac-sha256 c2VjcmV0LXRzaWc=
    }
    forward . tls://admin:s3cr3t@192.0.2.53 {
        tls /etc/coredns/client.crt /etc/coredns/client.key
        tls_servername dns.secure.example
    }
    route53 secure.example.:Z123 {
        aws_access_key AKIAEXAMPLE wJalrXUtnFEMI
    }
    keepalive 10s
    log # password: none here, a comment stays
}
"""


def test_credentials_in_corefile_blocks_are_redacted_and_the_rest_kept():
    text = redacted_corefile(CUSTOM)
    for secret in ("c2VjcmV0LXRzaWc=", "s3cr3t", "admin", "client.key", "AKIAEXAMPLE", "wJalrXUtnFEMI"):
        assert secret not in text, secret
    assert "secret [redacted]" in text and "tls://[redacted]@192.0.2.53" in text and "aws_access_key [redacted]" in text
    for kept in ("secure.example:53 {", "tls_servername dns.secure.example", "keepalive 10s", "route53 secure.example.:Z123 {",
                 "# password: none here"):
        assert kept in text, kept
    assert len(text.splitlines()) == len(CUSTOM.splitlines())
    assert redacted_corefile(".:53 {\n    forward . /etc/resolv.conf\n    cache 30\n}\n") == ".:53 {\n    forward . /etc/resolv.conf\n    cache 30\n}\n"


def test_a_reports_cluster_view_carries_no_credential():
    facts = ClusterFacts(corefile=".:53 {\n    import custom/*.server\n    forward . tls://u:p@192.0.2.1\n}\n",
                         custom_server_blocks={"secure.server": CUSTOM})
    view = cluster_view(facts)
    shown = str(view)
    assert "s3cr3t" not in shown and "c2VjcmV0LXRzaWc=" not in shown and "u:p@" not in shown
    assert view["custom"][0][0] == "secure.server" and "tsig {" in view["custom"][0][1]


def test_a_report_with_cluster_facts_is_written_for_its_owner_only(tmp_path):
    facts = ClusterFacts(corefile=".:53 {\n}\n")
    assert holds_cluster_facts(facts) and not holds_cluster_facts(ClusterFacts()) and not holds_cluster_facts(None)
    old = os.umask(0o022)
    try:
        for name, private, mode in (("cluster.html", True, 0o600), ("plain.html", False, 0o644)):
            with written_whole(tmp_path / name, "--report", private=private) as partial:
                partial.write_text("x")
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    finally:
        os.umask(old)


class FakeCore:
    maps: dict = {}

    def __init__(self, api):
        pass

    def read_namespaced_config_map(self, name, namespace):
        from kubernetes.client.rest import ApiException

        if (namespace, name) not in self.maps:
            raise ApiException(status=404, reason="Not Found")
        return self.maps[(namespace, name)]


def test_faults_refuse_a_cluster_dnscorrelate_did_not_make_unless_allowed(monkeypatch):
    from kubernetes import client

    from dnscorrelate.cluster.kube import faults
    from dnscorrelate.cluster.kubeapi import MADE_HERE, MADE_HERE_NAMESPACE

    monkeypatch.setattr(client, "CoreV1Api", FakeCore)
    api = SimpleNamespace(configuration=SimpleNamespace(host="https://prod.example:6443"))
    FakeCore.maps = {}
    with pytest.raises(ClusterError, match=r"https://prod.example:6443 was not made by `dnscorrelate cluster up`"):
        faults.KubeFaults(api)
    assert faults.KubeFaults(api, allow_cluster_changes=True).api is api  # the runner's explicit user-cluster path
    FakeCore.maps = {(MADE_HERE_NAMESPACE, MADE_HERE): object()}
    assert faults.KubeFaults(api).api is api

"""The lab spec: defaults, merging, and errors that name file, line, field and reason."""

import textwrap

import pytest

from dnscorrelate.cluster.model import NetworkPolicy, Pod
from dnscorrelate.cluster.spec import SpecError, load_manifests, load_spec


def write(tmp_path, text, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_default_spec_is_the_documented_lab():
    spec = load_spec()
    assert spec.corednsReplicas == 2
    assert {ns.metadata.name for ns in spec.namespaces} == {"default", "kube-system", "demo"}
    assert {f"{p.metadata.namespace}/{p.metadata.name}" for p in spec.pods} == {"demo/mypod", "demo/web-0", "demo/web-1"}
    assert "example.com" in spec.upstreamZones
    assert "kubernetes cluster.local in-addr.arpa ip6.arpa" in spec.corefile and "\n    log\n" in spec.corefile


def test_a_spec_merges_over_the_default(tmp_path):
    spec = load_spec(write(tmp_path, """
        corednsReplicas: 3
        upstreamZones: {corp.internal: "@ A 192.0.2.99"}
        manifests:
          - kind: Pod
            metadata: {name: extra, namespace: demo}
    """))
    assert spec.corednsReplicas == 3
    assert set(spec.upstreamZones) >= {"example.com", "corp.internal"}
    assert [p.metadata.name for p in spec.pods][-1] == "extra"
    assert len(spec.pods) == 4


def test_extends_none_starts_empty(tmp_path):
    spec = load_spec(write(tmp_path, "extends: none\ncorednsReplicas: 1\n"))
    assert spec.manifests == [] and spec.upstreamZones == {} and spec.corefile == ""


def test_error_names_file_line_field_and_reason(tmp_path):
    path = write(tmp_path, """
        manifests:
          - kind: Service
            metadata: {name: web2, namespace: demo}
            spec:
              ports:
                - port: eighty
    """)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    message = str(err.value)
    assert f"{path}:7: manifests[0].spec.ports[0].port:" in message
    assert "integer" in message


def test_unknown_top_level_field_is_refused(tmp_path):
    path = write(tmp_path, "corednsReplica: 3\n")
    with pytest.raises(SpecError, match=r"spec.yaml:1: corednsReplica: Extra inputs are not permitted"):
        load_spec(path)


def test_unknown_kind_is_refused(tmp_path):
    path = write(tmp_path, "manifests:\n  - kind: Deployment\n    metadata: {name: x}\n")
    with pytest.raises(SpecError, match=r"spec.yaml:2: manifests\[0\]: .*'Namespace', 'Pod', 'Service', 'NetworkPolicy'"):
        load_spec(path)


def test_invalid_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "nodes: 1\nmanifests: [\n  - kind: Pod\n")
    with pytest.raises(SpecError, match=r"spec.yaml:\d+: invalid YAML"):
        load_spec(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "nope.yaml")


def test_manifests_file_with_several_documents_and_a_list(tmp_path):
    path = write(tmp_path, """
        kind: NetworkPolicy
        metadata: {name: a, namespace: demo}
        spec: {podSelector: {}, policyTypes: [Egress]}
        ---
        kind: List
        items:
          - kind: Pod
            metadata: {name: p, namespace: demo}
    """, "m.yaml")
    objects = load_manifests(path)
    assert [type(o) for o in objects] == [NetworkPolicy, Pod]


def test_manifest_errors_point_into_the_right_document(tmp_path):
    path = write(tmp_path, """
        kind: Pod
        metadata: {name: ok, namespace: demo}
        ---
        kind: NetworkPolicy
        metadata: {name: Bad_Name, namespace: demo}
    """, "m.yaml")
    with pytest.raises(SpecError, match=r"m.yaml:6: metadata.name: String should match pattern"):
        load_manifests(path)


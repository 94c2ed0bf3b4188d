"""The lab's dnstap option: the spec field, and the directive every replica server block gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnscorrelate.cluster.corefile import parse_server_blocks
from dnscorrelate.cluster.lab import files
from dnscorrelate.cluster.spec import SpecError, load_spec, parse_yaml, spec_from_data
from dnscorrelate.cluster.lab.topology import build_topology

CUSTOM = {"stub.server": "corp.example:53 {\n    forward . 10.0.0.53 {\n        max_fails 2\n    }\n}"}


def test_every_server_block_sends_dnstap_named_by_the_replica():
    spec = load_spec().model_copy(update={"dnstap": True, "customServerBlocks": CUSTOM})
    corefile = files.replica_corefile(build_topology(spec, "x"), Path("/z"), Path("/run/x/dnstap"))
    blocks = parse_server_blocks(corefile, "Corefile")
    assert [b.zones for b in blocks] == [(".",), ("corp.example",)]
    assert all(b.plugins[0] == "dnstap" and b.plugins.count("dnstap") == 1 for b in blocks)
    assert corefile.count("dnstap unix:///run/x/dnstap/{$DNSCORRELATE_REPLICA}.sock full {") == 2
    assert corefile.count("identity {$DNSCORRELATE_REPLICA}") == 2


def test_without_the_option_the_corefile_has_no_dnstap():
    spec = load_spec().model_copy(update={"customServerBlocks": CUSTOM})
    assert "dnstap" not in files.replica_corefile(build_topology(spec, "x"), Path("/z"))
    assert load_spec().dnstap is False


def test_the_spec_field_is_validated_with_its_line():
    with pytest.raises(SpecError, match=r"lab.yaml:2: dnstap: Input should be a valid boolean"):
        spec_from_data(*parse_yaml("nodes: 1\ndnstap: [on]\n", "lab.yaml"))
    assert spec_from_data(*parse_yaml("dnstap: true\n", "lab.yaml")).dnstap is True

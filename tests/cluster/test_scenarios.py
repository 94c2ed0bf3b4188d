"""Shipped scenarios on a real kind cluster (`run --backend kind`): the same YAML as on the lab, and the
same finding codes and hops. The fault-free ones share the session's dns_cluster; each with faults
gets a fresh cluster (~2 min), so CI runs the mission's three faults and healthy only."""

from pathlib import Path

import pytest

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


# fault scenarios first: each makes and removes its own cluster before the session's dns_cluster exists,
# so no two clusters run at once
@pytest.mark.parametrize("name", ["bad-forward-server", "deny-dns-egress", "healthy", "missing-service"])
def test_shipped_scenario_passes_on_kind_as_on_the_lab(kind_build, run_scenario, name):
    result = run_scenario(SCENARIOS / f"{name}.yaml", backend="kind")
    assert result.backend == "kind"
    assert result.passed, result.explain()
    assert result.clients and all(c.client for c in result.clients)
    if result.scenario.faults:  # each fault waited for its propagation and says how long it took
        assert len(result.propagation) == len(result.scenario.faults) and all(s > 0 for _, s in result.propagation)


def test_the_session_cluster_answers_exec_queries_as_the_lab_clients_do(kind_build, dns_cluster):
    backend = dns_cluster.backend
    results = backend.run_queries("demo/mypod", "dnspython", "web", "A", "udp", 2, 2, 2.0)
    assert [r.rcode for r in results] == ["NOERROR", "NOERROR"] and all(r.answers for r in results)
    [nx] = backend.run_queries("demo/mypod", "dnspython", "nothing-here.demo.svc.cluster.local.", "A", "udp", 1, 1, 2.0)
    assert (nx.answered, nx.rcode) == (True, "NXDOMAIN")
    [getent] = backend.run_queries("demo/mypod", "glibc", "web", "A", "udp", 1, 1, 2.0)
    [dig] = backend.run_queries("demo/mypod", "dig", "example.com.", "A", "tcp", 1, 1, 2.0)
    assert getent.answered and getent.answers and (dig.rcode, dig.answers) == ("NOERROR", ("192.0.2.10",))

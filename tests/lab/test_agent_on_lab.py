"""The node agent over a real capture of the lab, as `trace --agent` runs it on a node (kind's tests run it in its
image): at each take it reads the ring buffer's records where they lie, filters them for one pod or sends them all,
and its stream decodes to the lookups that pod made, hop by hop."""

import io
import threading
import time
import uuid

import pytest

from dnscorrelate.cluster.kube.agent import Agent
from dnscorrelate.cluster.lab.capture import lab_targets
from dnscorrelate.live.agent_stream import NodeStream

from .conftest import dig


class LabNode:
    """The agent's discovery over the lab's namespaces: every pod, node and the upstream, from the start."""

    errors = 0

    def __init__(self, lab) -> None:
        self.lab = lab

    def targets(self):
        return lab_targets(self.lab)

    def watcher(self):
        return lambda: []


def agent_stream(lab, clients: tuple[str, ...], action) -> NodeStream:
    out = io.BytesIO()
    agent = Agent(out, "node-0", discovery=LabNode(lab), clients=clients)
    thread = threading.Thread(target=agent.run)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while (agent.capture is None or not agent.writer.bytes_sent) and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.05)
        action()
        time.sleep(0.5)
    finally:
        agent.stop()
        thread.join()
    stream = NodeStream("node-0")
    stream.feed(out.getvalue())
    stream.close()
    return stream


@pytest.mark.parametrize("filtered", [True, False], ids=["filtered", "full"])
def test_the_agents_stream_holds_the_pods_lookups_hop_by_hop_and_filtered_nothing_else(default_lab, filtered):
    lab = default_lab
    mine, others = f"agent-{uuid.uuid4().hex[:8]}.example.org.", f"other-{uuid.uuid4().hex[:8]}.example.org."
    mypod = lab.pod("mypod", "demo")

    def lookups():
        dig(lab, "mypod", mine)
        dig(lab, "web-0", others)

    stream = agent_stream(lab, (mypod.ip,) if filtered else (), lookups)
    assert stream.error is None and stream.ended, stream.error
    events = stream.events()
    names = events["qname"].astype(str)
    hops = set(events.loc[names == mine, "vantage"].astype(str))
    assert {"demo/mypod", "upstream"} <= hops and any(lab.pod(h.split("/")[1], "kube-system").coredns_replica is not None
                                                       for h in hops if h.startswith("kube-system/"))
    assert (names == others).any() != filtered  # another pod's lookup: sent in full, counted when filtered
    assert not events.duplicated(["vantage", "ts_ns", "dns_id", "qr"]).any()  # each record read once
    stats = stream.stats()
    assert stats["lost_samples"] == 0 and stats["records_received"] == len(events)
    if filtered:
        assert stats["filtered_queries"] > 0 and stats["records_kept"] == len(events)

"""Correlate: one Trace per client request, from packet events and CoreDNS's own log lines.

How (all vectorized with pandas/numpy; no Python loop per event):

1. **Legs.** A leg is one lookup: a client's query and its answer, or its
   timeout. Its packets share the client key (client ip, client port, DNS id,
   protocol; the client is the source of a query and the destination of a
   response) at every vantage point (DNAT rewrites only the server side).
   Clients, NodeLocal DNS's TCP connections and CoreDNS's pooled upstream
   sockets reuse keys, so, taking one key's packets in time order, a **new
   lookup starts** at a query that follows a response (the previous lookup
   was answered), at a query asking another question (qname, qtype), and at
   any packet more than LEG_GAP_NS after the key's previous one (the previous
   lookup timed out). A query repeated with the same question and no response
   in between (a retransmission) stays in its lookup. The rule is the same at
   every vantage and for upstream legs, which are legs like any other.
2. **Each leg's server** is the vantage that emitted its first response; for an
   unanswered leg, the deepest vantage its query reached.
3. **Upstream legs.** A leg whose originator is another leg's server, asking the
   same question inside that leg's window at the server, is that leg's upstream
   exchange (CoreDNS uses a new id and port upstream). Found with merge_asof; when
   the windows of several candidate parents overlap, the match is marked
   `ambiguous`, not guessed silently. Links are followed to the root, so NodeLocal
   DNS → CoreDNS → upstream chains end up in one trace.
4. **Logs.** A CoreDNS `log` record joins the leg with its client key at that
   replica, nearest in time; `errors` records join by replica and question,
   nearest the response (the log line) or else after the query. With logs
   only, each log record is a trace of its own, and so is each errors line
   that no log record explains. CoreDNS's own queries (its loop probe, forward
   health checks) are traces too, marked by `purpose`.

The package follows those steps: `legs.py` (1, 2), `upstream.py` (3), `logs.py` (4), `traces.py` (a trace per
root leg), `network.py` (ICMP errors, TCP connection attempts), `columns.py` (array helpers), and
`pipeline.py`, which runs them in order.
"""

from dnscorrelate.correlate.pipeline import Correlation, correlate

__all__ = ["Correlation", "correlate"]

"""Diagnose: Findings from the evidence of a Correlation, and cluster facts to name causes.

Each rule is a small function over the traces table (vectorized masks, then
one Finding per subject: a client pod, a replica, an upstream server, a
name). The diagnoser never sees what a scenario injected; facts only help to
name the cause (the policy, the forward block, the Services in a namespace).

Codes and hops are declared once, in dnscorrelate/findings.py (the registry): their order is the
findings' order, each code's usual hop and severity are its findings'. The package:

- `rules/`: the rules, one module per hop (see its docstring for when each kind runs);
- `evidence.py`: what the rules read (`Evidence`), and what several share, computed once;
- `finding.py`: `Finding`, its evidence, the registry's order;
- `names.py`, `policies.py`, `forwarding.py`, `words.py`: search lists, NetworkPolicy causes, where CoreDNS
  forwards, and how findings say things;
- `pipeline.py`: `diagnose` and the `Analysis`.
"""

from dnscorrelate.diagnose.finding import EVIDENCE_LIMIT, Finding, findings_about
from dnscorrelate.diagnose.pipeline import Analysis, diagnose

__all__ = ["EVIDENCE_LIMIT", "Analysis", "Finding", "diagnose", "findings_about"]

"""What a CiliumNetworkPolicy (or clusterwide one) means for a pod's DNS, as Cilium v1.20 reads it: whom it selects
(`endpointSelector`, within its namespace unless clusterwide), which names its DNS rules let the DNS proxy pass
(`toPorts[].rules.dns`: the proxy refuses the others) and which names its `toFQDNs` open connections to (the
addresses of every other name stay closed once a policy selects the pod for egress).

Name matching follows `pkg/fqdn/matchpattern`: names compare lowercase and fully qualified; in a matchPattern
`*` stands for any DNS characters (`[-a-zA-Z0-9_]`) within one label, `*` alone for every name, and a leading
`**.` for one or more labels.
"""

from __future__ import annotations

import re
from functools import lru_cache

from dnscorrelate.cluster.model import CiliumNetworkPolicy, FQDNSelector, LabelSelector, Pod

DNS_CHARS = "[-a-zA-Z0-9_]"
NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
LABEL_SOURCES = ("k8s:", "any:")  # Cilium's label sources a selector may name; a pod's labels are k8s:


def fqdn(name: str) -> str:
    name = name.strip().lower()
    return name if name.endswith(".") else name + "."


@lru_cache(maxsize=256)
def pattern_regex(pattern: str) -> re.Pattern:
    """Cilium's anchored regex of a matchPattern (matchpattern.ToAnchoredRegexp)."""
    pattern = fqdn(pattern)
    if re.fullmatch(r"\*+\.?", pattern):
        return re.compile(rf"^({DNS_CHARS}+\.)+$|^\.$")
    subdomains = re.match(r"^\*{2,}\.", pattern)
    rest = pattern[subdomains.end():] if subdomains else pattern
    body = re.sub(r"\*+", DNS_CHARS + "*", rest.replace(".", r"\."))
    prefix = rf"({DNS_CHARS}+(\.{DNS_CHARS}+)*)\." if subdomains else ""
    return re.compile(f"^{prefix}{body}$")


def selector_matches(selector: FQDNSelector, name: str) -> bool:
    """Whether a matchName or matchPattern covers `name`."""
    if selector.matchName:
        return fqdn(selector.matchName) == fqdn(name)
    if selector.matchPattern:
        return bool(pattern_regex(selector.matchPattern).match(fqdn(name)))
    return False


def label_key(key: str) -> str:
    for source in LABEL_SOURCES:
        if key.startswith(source):
            return key[len(source):]
    return key


def selects(policy: CiliumNetworkPolicy, pod: Pod) -> bool:
    """Whether the policy selects the pod: its endpointSelector over the pod's labels (and its namespace, as Cilium
    labels every endpoint), within the policy's namespace unless it is clusterwide."""
    if policy.kind == "CiliumNetworkPolicy" and pod.metadata.namespace != policy.metadata.namespace:
        return False
    labels = {**pod.metadata.labels, NAMESPACE_LABEL: pod.metadata.namespace}
    selector = policy.spec.endpointSelector
    plain = LabelSelector(matchLabels={label_key(k): v for k, v in selector.matchLabels.items()},
                          matchExpressions=[e.model_copy(update={"key": label_key(e.key)}) for e in selector.matchExpressions])
    return plain.matches(labels)


def selecting(policies: list[CiliumNetworkPolicy], pod: Pod | None) -> list[CiliumNetworkPolicy]:
    return [p for p in policies if pod is not None and selects(p, pod)]


def fqdn_selectors(policy: CiliumNetworkPolicy) -> list[FQDNSelector]:
    """The policy's toFQDNs selectors, over all its egress rules."""
    return [s for rule in policy.spec.egress for s in rule.toFQDNs]


def dns_selectors(policy: CiliumNetworkPolicy) -> list[FQDNSelector]:
    """The policy's DNS rules (what its DNS proxy lets through), over all its egress rules' ports."""
    return [s for rule in policy.spec.egress for port in rule.toPorts if port.rules and port.rules.dns for s in port.rules.dns]


def verdict_on_name(policies: list[CiliumNetworkPolicy], pod: Pod | None, name: str, rules) -> tuple[list, list]:
    """(policies whose `rules` (fqdn_selectors or dns_selectors) cover `name`, policies that have such rules for
    the pod and cover it not), among those selecting the pod."""
    with_rules = [p for p in selecting(policies, pod) if rules(p)]
    covering = [p for p in with_rules if any(selector_matches(s, name) for s in rules(p))]
    return covering, [p for p in with_rules if p not in covering]


def rules_text(policy: CiliumNetworkPolicy, rules) -> str:
    """`matchName a.example., matchPattern '*.example.org'`: what the policy's rules of that sort say."""
    return ", ".join(s.text for s in rules(policy))

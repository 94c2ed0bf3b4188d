"""How findings say things: counts, durations, lists of names, addresses."""

from __future__ import annotations

import re

import pandas as pd


def in_ms(value_ns) -> str:
    return f"{value_ns / 1e6:.1f} ms"


def plural(n: int, word: str) -> str:
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word[:-1]}ies" if word.endswith("y") and word[-2:-1] not in "aeiou" else f"{n} {word}s"


def names(series: pd.Series, limit: int = 3) -> str:
    values = list(dict.fromkeys(v for v in series.astype(str) if v))
    shown = ", ".join(values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def questions(qnames: pd.Series, limit: int = 3) -> str:
    """The names asked, or what stands for a name that did not decode."""
    return names(qnames, limit) or "a question that did not decode"


def host_of(address: str) -> str:
    """`10.0.0.1` of `10.0.0.1:53`, `2001:db8::1` of `[2001:db8::1]:53`; the address itself without a port."""
    if address.startswith("["):
        return address[1:].split("]")[0]
    return address.rsplit(":", 1)[0] if address.count(":") == 1 else address


def duration_of(text: str) -> float:
    """Seconds of a Go duration's text (`1.23888291s`, `950ms`); 0 when unreadable."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(h|ms|µs|us|ns|m|s)", text))

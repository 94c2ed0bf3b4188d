"""A shared cluster is put back even when the object changed between the restore's read and its replace."""

import pytest
from kubernetes.client.rest import ApiException

from dnscorrelate.cluster.kube.restore import on_conflict_again


def test_a_replace_that_meets_a_conflict_is_read_and_done_again_and_other_refusals_are_raised():
    calls = []

    def replace_conflicting_once():
        calls.append("replace")
        if len(calls) == 1:
            raise ApiException(status=409, reason="Conflict")

    on_conflict_again(replace_conflicting_once)
    assert calls == ["replace", "replace"]

    def forbidden():
        calls.append("forbidden")
        raise ApiException(status=403, reason="Forbidden")

    with pytest.raises(ApiException):
        on_conflict_again(forbidden)
    assert calls.count("forbidden") == 1

    def always_conflicting():
        calls.append("conflict")
        raise ApiException(status=409, reason="Conflict")

    with pytest.raises(ApiException):
        on_conflict_again(always_conflicting, attempts=3)
    assert calls.count("conflict") == 3

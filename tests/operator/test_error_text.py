"""The one line a failed reconcile puts in its condition and event."""

from __future__ import annotations

import json

from kubernetes.client.rest import ApiException

from interp_operator.handlers import _error_text


def api_error(status: int, reason: str, body: str | None) -> ApiException:
    err = ApiException(status=status, reason=reason)
    err.body = body
    return err


def test_an_api_error_carries_the_api_message_that_names_what_is_wrong():
    body = json.dumps({"kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403,
                       "message": 'pods "job-0-w0" is forbidden: no PriorityClass with name\n  gpu-high was found'})
    assert _error_text(api_error(403, "Forbidden", body)) == (
        'API error 403 Forbidden: pods "job-0-w0" is forbidden: no PriorityClass with name gpu-high was found')


def test_a_body_that_is_not_a_status_leaves_the_status_line_alone():
    assert _error_text(api_error(502, "Bad Gateway", "<html>proxy error</html>")) == "API error 502 Bad Gateway"
    assert _error_text(api_error(500, "Internal Server Error", None)) == "API error 500 Internal Server Error"


def test_other_errors_name_their_type():
    assert _error_text(ValueError("bad")) == "ValueError: bad"
    assert _error_text(TimeoutError()) == "TimeoutError"

"""serving.http.framing: the one place that decides request framing and hop-by-hop rules."""

from __future__ import annotations

import pytest

from serving.http import (
    CONSUMED,
    LAST_CHUNK,
    FramingError,
    RequestFraming,
    check_lookalike,
    chunk,
    connection_tokens,
    drop_named,
    last_coding_is_chunked,
    named_fields,
    reason,
    status_line,
)


def read(headers: list[tuple[bytes, bytes]], version: str = "1.1") -> tuple[RequestFraming, list[bytes]]:
    framing = RequestFraming()
    forwarded = [name for name, value in headers if not framing.field(name.lower(), value)]
    framing.check(version)
    return framing, forwarded


def test_framing_fields_are_consumed_and_the_rest_forwarded() -> None:
    framing, forwarded = read([(b"Host", b"a"), (b"Content-Length", b"12"), (b"Connection", b"close, X-Drop"),
                               (b"TE", b"trailers"), (b"X-Keep", b"1"), (b"Upgrade", b"h2c")])
    assert forwarded == [b"X-Keep"]
    assert (framing.host, framing.content_length, framing.sized, framing.chunked) == (b"a", 12, True, False)
    assert framing.tokens == (b"close", b"x-drop") and framing.has_body


def test_chunked_is_the_only_coding() -> None:
    framing, _ = read([(b"transfer-encoding", b" Chunked ")])
    assert framing.chunked and framing.has_body
    for coding in (b"gzip, chunked", b"chunked, identity", b"identity"):
        with pytest.raises(FramingError) as refused:
            read([(b"transfer-encoding", coding)])
        assert refused.value.status == 400 and "send chunked or a Content-Length" in refused.value.message


@pytest.mark.parametrize(("headers", "version", "says"), [
    ([(b"host", b"a"), (b"host", b"b")], "1.1", "more than one Host"),
    ([(b"transfer-encoding", b"chunked")], "1.0", "not allowed in HTTP/1.0"),
    ([], "2.0", "HTTP/2.0 is not supported"),
    ([], "0.9", "send HTTP/1.1"),
])
def test_ambiguous_framing_is_refused_with_the_fix(headers: list[tuple[bytes, bytes]], version: str, says: str) -> None:
    with pytest.raises(FramingError, match=says):
        read(headers, version)


def test_http10_without_a_coding_is_fine() -> None:
    framing, _ = read([(b"content-length", b"3")], "1.0")
    assert framing.content_length == 3


def test_an_upgrade_with_a_body_is_refused_and_without_one_passes() -> None:
    framing, _ = read([(b"connection", b"upgrade"), (b"content-length", b"2")])
    with pytest.raises(FramingError, match="protocol upgrade"):
        framing.check_upgrade(False)
    bodiless, _ = read([(b"connection", b"Upgrade")])
    bodiless.check_upgrade(True)
    with pytest.raises(FramingError):
        read([(b"content-length", b"1")])[0].check_upgrade(True)


def test_lookalike_framing_names_are_refused() -> None:
    for name in (b"Content_Length", b"transfer_encoding"):
        assert name.lower().replace(b"_", b"-") in CONSUMED
        with pytest.raises(FramingError, match="send the real header"):
            check_lookalike(name, name.lower())
    check_lookalike(b"X_Custom", b"x_custom")  # not a framing name: forwarded


def test_connection_tokens_name_fields_but_options_are_not_names() -> None:
    tokens = connection_tokens(b" Close ,Keep-Alive, upgrade ,X-A")
    assert tokens == (b"close", b"keep-alive", b"upgrade", b"x-a")
    assert named_fields(tokens) == (b"x-a",)
    parts = [b"X-A", b": ", b"1", b"\r\n", b"X-B", b": ", b"2", b"\r\n"]
    assert drop_named(parts, (b"x-a",)) == parts[4:]


def test_response_coding_is_read_as_llhttp_does() -> None:
    assert last_coding_is_chunked(b"gzip, Chunked")
    assert not last_coding_is_chunked(b"chunked, gzip")


def test_chunk_framing_and_status_lines() -> None:
    assert chunk(b"hello") == b"5\r\nhello\r\n" and chunk(b"x" * 26)[:4] == b"1a\r\n"
    assert LAST_CHUNK == b"0\r\n\r\n"
    assert status_line(413) == b"HTTP/1.1 413 Content Too Large\r\n" and status_line(413) is status_line(413)
    assert reason(299) == b"Unknown"

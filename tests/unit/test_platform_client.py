"""The control client against a daemon that closes a kept-alive connection as a request goes out (a restart)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from serving.platform.local import LocalPlatform

ANSWER = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n[]'


def test_a_call_cut_by_a_restarting_daemon_is_sent_again_on_a_new_connection(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    seen: list[bytes] = []

    def serve() -> None:
        for answer in (None, ANSWER):  # the first connection is closed unanswered, the second answered
            conn, _ = listener.accept()
            with conn:
                seen.append(conn.recv(65536))
                if answer is not None:
                    conn.sendall(answer)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        with LocalPlatform(tmp_path) as platform:
            assert platform.pods() == []
    finally:
        server.join(timeout=10)
        listener.close()
    assert len(seen) == 2 and all(request.startswith(b"GET /pods ") for request in seen)

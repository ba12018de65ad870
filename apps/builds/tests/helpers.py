"""Test helpers shared by the build tests."""

from __future__ import annotations

import contextlib
import socket
import threading


class Gate:
    """A TCP server on 127.0.0.1 for postBuild scripts to connect to.

    Its accepting a connection tells the test that postBuild is running; the script then
    waits until the test calls ``open()``; the connection reaching end-of-file tells the
    test the script's process is gone.
    """

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.released = threading.Event()
        self.arrived = threading.Event()
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections.append(conn)
            self.arrived.set()
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        self.released.wait()
        with contextlib.suppress(OSError):
            conn.sendall(b"go\n")

    @property
    def script(self) -> str:
        return (
            "python -c \"import socket, sys; s = socket.create_connection(('127.0.0.1', "
            f"{self.port})); sys.stdout.write('gate ' + s.recv(16).decode())\"\n"
        )

    def wait_arrival(self) -> socket.socket:
        assert self.arrived.wait(120), "postBuild never reached the gate"
        return self.connections[-1]

    def open(self) -> None:
        self.released.set()

    @staticmethod
    def closed_by_peer(conn: socket.socket) -> bool:
        conn.settimeout(60)
        try:
            while data := conn.recv(64):
                if not data:
                    break
            return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.open()
        self.server.close()
        for conn in self.connections:
            conn.close()

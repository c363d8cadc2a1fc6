"""Fixtures: a real sluice gateway (the binary named by SLUICE_BIN) on a
free loopback port, and a TCP proxy whose connections a test can cut."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Iterator, List, Optional

import pytest


def sluice_bin() -> str:
    path = os.environ.get("SLUICE_BIN")
    if not path or not Path(path).is_file():
        raise RuntimeError(
            "SLUICE_BIN must name the sluice binary (build it with `cargo build`, "
            "then SLUICE_BIN=target/debug/sluice); it is "
            f"{path!r}"
        )
    return path


class Gateway:
    """`sluice serve` in a data dir of its own: on its defaults, or with
    ``config`` (YAML) as its configuration file."""

    def __init__(self, data_dir: Path, port: int = 0, config: str = "") -> None:
        self.data_dir = data_dir
        self.files = data_dir / "files"
        self._port = port
        self._config = config
        self.proc: Optional[subprocess.Popen] = None
        self.address = ""
        self.start()

    def start(self) -> None:
        args = [
            sluice_bin(),
            "serve",
            "--listen",
            f"127.0.0.1:{self._port}",
            "--data-dir",
            str(self.data_dir),
            "--admin-listen",
            "off",
        ]
        if self._config:
            config = self.data_dir / "sluice.yaml"
            self.data_dir.mkdir(parents=True, exist_ok=True)
            config.write_text(self._config)
            args += ["--config", str(config)]
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        found = threading.Event()

        def drain() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            for line in self.proc.stderr:
                match = re.search(r"address=(\S+)", line)
                if match and not found.is_set():
                    self.address = match.group(1)
                    found.set()

        threading.Thread(target=drain, daemon=True).start()
        if not found.wait(30):
            self.kill()
            raise RuntimeError("sluice did not log its address within 30 s")
        self._port = int(self.address.rsplit(":", 1)[1])

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def uri(self, name: str) -> str:
        return f"file://{self.files.resolve()}/{name}"


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    with tempfile.TemporaryDirectory() as tmp:
        gw = Gateway(Path(tmp))
        try:
            yield gw
        finally:
            gw.kill()


class CutProxy:
    """Forwards a loopback port to the gateway; cut() drops every open
    connection at once."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        self.sockets: List[socket.socket] = []
        # Bytes each accepted connection carried towards the gateway.
        self.upstream_bytes: List[int] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                inbound, _ = self.listener.accept()
            except OSError:
                return
            try:
                outbound = socket.create_connection(self.upstream)
            except OSError:
                inbound.close()
                continue
            with self.lock:
                self.sockets += [inbound, outbound]
                self.upstream_bytes.append(0)
                index = len(self.upstream_bytes) - 1
            for a, b, counted in ((inbound, outbound, index), (outbound, inbound, None)):
                threading.Thread(target=self._pump, args=(a, b, counted), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counted: Optional[int]) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                if counted is not None:
                    with self.lock:
                        self.upstream_bytes[counted] += len(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> int:
        with self.lock:
            cut, self.sockets = self.sockets, []
        for s in cut:
            # shutdown() wakes the pump blocked in recv(); close() alone
            # would not, and nothing would reach either end.
            for step in (lambda: s.shutdown(socket.SHUT_RDWR), s.close):
                try:
                    step()
                except OSError:
                    pass
        return len(cut) // 2

    def close(self) -> None:
        self.listener.close()
        self.cut()


@pytest.fixture
def proxy(gateway: Gateway) -> Iterator[CutProxy]:
    p = CutProxy(gateway.address)
    try:
        yield p
    finally:
        p.close()


class CorruptProxy:
    """Forwards a loopback port to the gateway, following the HTTP/2 frames
    towards it and flipping one byte in the middle of every ``every``-th
    DATA frame of 1 KiB or more (message data, not a field's tag)."""

    def __init__(self, upstream: str, every: int = 100) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.every = every
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        self.seen = 0
        #: Bytes flipped so far.
        self.flipped = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                inbound, _ = self.listener.accept()
                outbound = socket.create_connection(self.upstream)
            except OSError:
                return
            threading.Thread(target=self._frames, args=(inbound, outbound), daemon=True).start()
            threading.Thread(target=self._pump, args=(outbound, inbound), daemon=True).start()

    @staticmethod
    def _exactly(src: socket.socket, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            got = src.recv(n - len(out))
            if not got:
                raise OSError("closed")
            out += got
        return bytes(out)

    def _frames(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            dst.sendall(self._exactly(src, 24))  # the client preface
            while True:
                header = self._exactly(src, 9)
                length = int.from_bytes(header[:3], "big")
                payload = bytearray(self._exactly(src, length))
                if header[3] == 0 and length >= 1024:
                    with self.lock:
                        self.seen += 1
                        if self.seen % self.every == 0:
                            payload[length // 2] ^= 0x40
                            self.flipped += 1
                dst.sendall(header + bytes(payload))
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def corrupting_proxy(gateway: Gateway) -> Iterator[CorruptProxy]:
    p = CorruptProxy(gateway.address)
    try:
        yield p
    finally:
        p.close()

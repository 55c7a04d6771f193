"""The control link between the hosts of a run: JSON lines over one TCP connection per host.

Host 0 listens; every other host connects and says who it is (rank, infercost version, a digest
of its case list). Host 0 admits the run only when every rank has joined once with the same
version and cases, and tells each host so; from then on host 0 says what to run and the others
report what happened. Nothing measured travels here, only decisions and outcomes.
"""

from __future__ import annotations

import hashlib
import json
import queue
import socket
import threading
import time

from infercost.errors import InputError, RunError

from .hosts import Hosts


def _send(sock: socket.socket, message: dict) -> None:
    sock.sendall((json.dumps(message) + "\n").encode())


def _readline(sock: socket.socket) -> bytes:
    """One line, read a byte at a time: the handshake must not buffer what follows it."""
    out = bytearray()
    while not out.endswith(b"\n"):
        byte = sock.recv(1)
        if not byte:
            break
        out += byte
    return bytes(out)


def _reader(sock: socket.socket, rank: int, inbox: queue.Queue) -> None:
    """Every line from one host into the inbox as (rank, message); (rank, None) when it is gone."""
    buf = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                inbox.put((rank, json.loads(line)))
    except (OSError, ValueError):
        pass
    inbox.put((rank, None))


class Link:
    """Either side of the link; `inbox` yields (rank, message), message None when a host left."""

    def __init__(self, hosts: Hosts):
        self.hosts = hosts
        self.inbox: queue.Queue = queue.Queue()
        self.peers: dict[int, socket.socket] = {}
        self.closed = False

    def send(self, message: dict, rank: int = 0) -> None:
        sock = self.peers.get(rank)
        if sock is not None:
            try:
                _send(sock, message)
            except OSError:
                pass  # a host that left shows up in the inbox

    def broadcast(self, message: dict) -> None:
        for rank in list(self.peers):
            self.send(message, rank)

    def receive(self, timeout: float):
        """The next (rank, message), or None when nothing came within `timeout` seconds."""
        try:
            return self.inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.closed = True
        for sock in self.peers.values():
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def hello(hosts: Hosts, case_keys: list[str], version: str) -> dict:
    """What a host says when it joins: its rank, the host count, its infercost version and a digest
    of the cases it planned, checked by host 0 against its own."""
    digest = hashlib.sha256("\n".join(case_keys).encode()).hexdigest()[:16]
    return {"rank": hosts.rank, "count": hosts.count, "version": version, "cases": digest}


def lead(hosts: Hosts, hello: dict, timeout: float) -> Link:
    """Host 0: wait up to `timeout` seconds for every other host, check they run the same thing."""
    link = Link(hosts)
    try:
        server = socket.create_server((hosts.address, hosts.port), reuse_port=False)
    except OSError as e:
        raise RunError(f"host 0 cannot listen on {hosts.coordinator}: {e.strerror or e}") from None
    server.settimeout(0.2)
    waiting: dict[int, socket.socket] = {}
    deadline = time.monotonic() + timeout
    problem = None
    try:
        while len(waiting) < hosts.count - 1 and time.monotonic() < deadline and problem is None:
            try:
                sock, _ = server.accept()
            except socket.timeout:
                continue
            sock.settimeout(10)
            try:
                line = _readline(sock)
                theirs = json.loads(line)
                rank = int(theirs["rank"])
            except (OSError, ValueError, KeyError, TypeError):
                sock.close()
                continue
            sock.settimeout(None)
            problem = admit(hello, theirs, rank, hosts, waiting)
            waiting.setdefault(rank, sock) if problem is None else _refuse(sock, problem)
        if problem is None and len(waiting) < hosts.count - 1:
            missing = sorted(set(range(1, hosts.count)) - set(waiting))
            problem = (f"host{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} of {hosts.count} did "
                       f"not join at {hosts.coordinator} within {timeout:.0f} s")
        if problem is not None:
            for sock in waiting.values():
                _refuse(sock, problem)
            raise InputError(problem)
    finally:
        server.close()
    link.peers = waiting
    for rank, sock in waiting.items():
        threading.Thread(target=_reader, args=(sock, rank, link.inbox), daemon=True).start()
    link.broadcast({"op": "welcome"})
    return link


def admit(ours: dict, theirs: dict, rank: int, hosts: Hosts, joined: dict) -> str | None:
    """Why a host's hello is refused (for the whole run), or None."""
    if rank in joined or rank == 0:
        return f"two hosts claim host rank {rank}"
    if not 0 < rank < hosts.count:
        return f"a host joined with rank {rank}, out of range for {hosts.count} hosts"
    for field, what in (("count", "host count"), ("version", "infercost version"), ("cases", "case list")):
        if theirs.get(field) != ours.get(field):
            return (f"host {rank} runs a different {what} ({theirs.get(field)!r}) from host 0's "
                    f"({ours.get(field)!r}): every host must run the same command")
    return None


def _refuse(sock: socket.socket, why: str) -> None:
    try:
        _send(sock, {"op": "refused", "reason": why})
    except OSError:
        pass
    sock.close()


def join(hosts: Hosts, hello: dict, timeout: float) -> Link:
    """Host 1..n-1: reach host 0 (retrying until `timeout`), say who we are, wait to be admitted."""
    link = Link(hosts)
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            sock = socket.create_connection((hosts.address, hosts.port), timeout=max(0.1, deadline - time.monotonic()))
            break
        except OSError as e:
            last = e.strerror or str(e)
            if time.monotonic() >= deadline:
                raise InputError(f"could not reach host 0 at {hosts.coordinator} within {timeout:.0f} s ({last})") from None
            time.sleep(0.2)
    _send(sock, hello)
    sock.settimeout(max(1.0, deadline - time.monotonic()) + 5)  # host 0 answers once every host is in
    try:
        answer = json.loads(_readline(sock) or b"null")
    except (OSError, ValueError):
        answer = None
    if not answer or answer.get("op") != "welcome":
        sock.close()
        why = answer.get("reason") if answer else f"host 0 at {hosts.coordinator} did not admit this host within {timeout:.0f} s"
        raise InputError(why)
    sock.settimeout(None)
    link.peers = {0: sock}
    threading.Thread(target=_reader, args=(sock, 0, link.inbox), daemon=True).start()
    return link

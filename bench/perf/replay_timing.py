"""Trace replay keeps time: requests reach a loopback server within 2 ms (p99) of the times the
trace gives them, at 200 requests a second on a 2-core machine.

A server in its own process (a thread a connection, 127.0.0.1) has the kernel stamp each request's
arrival at its socket (SO_TIMESTAMPNS, wall clock, mapped onto the client's monotonic clock by
their offset read in the client) and streams a few tokens back; infercost's replay
(bench/serving/trace.py, as `serve --trace` runs it) sends a Poisson trace of --rate requests a
second for --seconds. Each request's output length is its number in the trace, so the server's
stamp is matched to the request's scheduled time exactly (by its prompt, unique to it). Printed:
the lateness of arrivals (server stamp - scheduled time) at p50, p99 and max, and the client's
own lateness at the write. Then bookkeeping: 64-token requests replayed at half the rate, and 32
sessions of 5 turns without think time, each counted in streamed tokens per CPU second of the
client process (target >= 2000 on one core).

    python bench/perf/replay_timing.py [--rate 200] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from targets import report  # bench/perf/targets.py, beside this script

SERVER = r"""
import json, socket, struct, sys, threading, time
# Arrivals are stamped by the kernel (SO_TIMESTAMPNS: when the request's bytes reached this socket,
# CLOCK_REALTIME), so the server's own scheduling never counts as the client's lateness.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
stamps, lock = {}, threading.Lock()
def recv(conn, buf):
    data, anc, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(16))
    if not data:
        raise ConnectionError("closed")
    t = None
    for level, kind, raw in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, ns = struct.unpack("qq", raw[:16])
            t = sec + ns * 1e-9
    return buf + data, t
def serve(conn):
    conn.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    try:
        while True:
            first = None
            while b"\r\n\r\n" not in buf:
                buf, t = recv(conn, buf)
                first = first if first is not None else t
            read = time.time()
            head, buf = buf.split(b"\r\n\r\n", 1)
            length = int(next((l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")), b"0"))
            while len(buf) < length:
                buf, _ = recv(conn, buf)
            body, buf = json.loads(buf[:length]), buf[length:]
            n = int(body.get("max_tokens", 4))
            with lock:
                stamps[body.get("prompt", "")] = (first, read)
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            for i in range(n):
                time.sleep(0.001 if n > 3 else 0.005)
                data = ("data: " + json.dumps({"choices": [{"index": 0, "text": " t"}]}) + "\n\n").encode()
                conn.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            tail = ("data: " + json.dumps({"choices": [], "usage": {"completion_tokens": n, "prompt_tokens": 8}})
                    + "\n\ndata: [DONE]\n\n").encode()
            conn.sendall(f"{len(tail):x}\r\n".encode() + tail + b"\r\n0\r\n\r\n")
    except (ConnectionError, OSError):
        pass
    finally:
        conn.close()
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1])))
srv.listen(1024)
def accept():
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
threading.Thread(target=accept, daemon=True).start()
print("ready", flush=True)
sys.stdin.readline()
with lock:
    print(json.dumps(stamps), flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def poisson_trace(rate: float, seconds: float, output: int) -> list:
    from infercost.bench import serving
    rng, t, rows = random.Random(0), 0.0, []
    while t < seconds:
        rows.append({"timestamp": round(t * 1000, 3), "input_length": 8, "output_length": output, "hash_ids": [len(rows)]})
        t += rng.expovariate(rate)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return serving.read_trace(path, 8)


def wall_minus_monotonic() -> float:
    """time.time() - time.perf_counter(), read where the two reads are closest together."""
    import time
    best = None
    for _ in range(200):
        a = time.perf_counter()
        w = time.time()
        b = time.perf_counter()
        if best is None or b - a < best[0]:
            best = (b - a, w - (a + b) / 2)
    return best[1]


def cpu_s() -> float:
    import resource
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=int, default=4, help="warm-up requests sent together before the trace")
    args = parser.parse_args()
    from infercost.bench import serving
    from infercost.bench.serving.sessions import Sessions, run_sessions
    from infercost.bench.serving.trace import replay

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    ep = serving.Endpoint(f"http://127.0.0.1:{port}", "m", timeout_s=30)
    # 1. timing: short requests at --rate
    trace = poisson_trace(args.rate, args.seconds, 3)
    prompts = serving.TracePrompts(trace, 8, None, salt=1)
    done, start, end = asyncio.run(replay(ep, prompts, serving.Counter(None), 1.0, args.warmup, serving.MAX_CONCURRENCY))
    # 2. bookkeeping: replayed requests of 64 tokens, then 32 sessions of 5 turns with no think time
    c0 = cpu_s()
    long = serving.TracePrompts(poisson_trace(args.rate / 2, args.seconds / 2, 64), 8, None, salt=2)
    replayed, _, _ = asyncio.run(replay(ep, long, serving.Counter(None), 1.0, 0, serving.MAX_CONCURRENCY))
    c1 = cpu_s()
    spec = Sessions(32, (5, 5), 0.0, "chat", 16, (8, 8), (64, 64), salt=3)
    sessions, _, _ = asyncio.run(run_sessions(ep, spec, serving.Counter(None), 0))
    c2 = cpu_s()
    proc.stdin.write("stop\n")
    proc.stdin.flush()
    stamps = json.loads(proc.stdout.readline())
    proc.wait(timeout=10)
    done = [r for r in done if not r.warmup]
    failed = [r for r in done + replayed + sessions if not r.ok]
    offset = wall_minus_monotonic()
    arrival = [stamps[r.prompt][0] - offset - r.scheduled for r in done if stamps.get(r.prompt, [None])[0] is not None]
    read = [stamps[r.prompt][1] - offset - r.scheduled for r in done if r.prompt in stamps]
    written = [r.start - r.scheduled for r in done]
    tokens = lambda rs: sum(r.output_tokens or 0 for r in rs if not r.warmup)
    replay_rate, session_rate = tokens(replayed) / (c1 - c0), tokens(sessions) / (c2 - c1)
    print(f"{len(trace)} requests at {args.rate:g}/s for {args.seconds:g} s; {len(failed)} failed in all; "
          f"{len(arrival)} stamped by the server")
    print(f"arrival lateness (kernel's stamp at the server's socket - scheduled): p1 {percentile(arrival, 0.01) * 1e3:.3f} ms, p50 "
          f"{percentile(arrival, 0.5) * 1e3:.3f} ms, p99 {percentile(arrival, 0.99) * 1e3:.3f} ms, max {max(arrival) * 1e3:.3f} ms")
    print(f"  (the server's own read of it, a thread's wake-up later: p50 {percentile(read, 0.5) * 1e3:.3f} ms, "
          f"p99 {percentile(read, 0.99) * 1e3:.3f} ms: what an application's stamp would add)")
    print(f"client lateness (first byte written - scheduled): p50 {percentile(written, 0.5) * 1e3:.3f} ms, "
          f"p99 {percentile(written, 0.99) * 1e3:.3f} ms")
    print(f"bookkeeping: replay {tokens(replayed)} tokens in {c1 - c0:.2f} CPU s of this process, sessions "
          f"{tokens(sessions)} tokens in {c2 - c1:.2f} CPU s")
    # within 2 ms either side: the replay sends a request up to LEAD_S early so that it is not late
    ok = report([("|arrival - scheduled| p99, ms", percentile([abs(a) for a in arrival], 0.99) * 1e3, 2.0, "<="),
                 ("requests stamped / sent", len(arrival) / len(trace), 0.0, "within"),
                 ("streamed tokens per client CPU second, replay", replay_rate, 2000.0, ">="),
                 ("streamed tokens per client CPU second, sessions", session_rate, 2000.0, ">=")])
    return 0 if ok and not failed else 1


if __name__ == "__main__":
    sys.exit(main())

"""The load generator is not the bottleneck: its bookkeeping rate and overhead per token, and its
TTFT, TPOT and throughput beside a plain client loop on the same server and settings.

A trivial streaming server (its own process, on 127.0.0.1) sends each request's tokens as SSE
chunks after a fixed first-token delay and a fixed gap between tokens, plus usage. Against it:
1. bookkeeping: infercost's load generator at high concurrency with no gaps, tokens per second
   handled by one client process and its CPU time per token (target >= 2000 tokens/s);
2. fidelity: infercost's figures and a separately written plain loop (one httpx stream per
   request, perf_counter around it), alternating, at the same concurrency (target within 5%);
3. with --real MODEL_DIR, the same against `transformers serve` of that folder, and with --aiperf
   also NVIDIA AIPerf (an independent load generator: its own processes, aiohttp, its own
   prompts) at the same concurrency, request count and token lengths, in the same alternating
   rounds (target: throughput, TTFT and inter-token latency within 10% of AIPerf's).
   The server runs on half of the CPUs and every client on the other half: AIPerf's processes
   take about a core of their own, and a server sharing cores with them was slowed 27x.

    python bench/perf/serve_client.py [--rounds 3] [--real MODEL_DIR [--aiperf PATH/TO/aiperf]]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from targets import report  # bench/perf/targets.py, beside this script


async def stub_server(port: int, first_s: float, gap_s: float) -> None:
    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next((l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")), b"0"))
                body = json.loads(await reader.readexactly(length)) if length else {}
                n = int(body.get("max_tokens", 16))
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
                await asyncio.sleep(first_s)
                for i in range(n):
                    if i and gap_s:
                        await asyncio.sleep(gap_s)
                    data = f"data: {json.dumps({'choices': [{'index': 0, 'text': ' t'}]})}\n\n".encode()
                    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    await writer.drain()
                tail = f"data: {json.dumps({'choices': [], 'usage': {'completion_tokens': n}})}\n\ndata: [DONE]\n\n".encode()
                writer.write(f"{len(tail):x}\r\n".encode() + tail + b"\r\n0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def start_stub(first_s: float, gap_s: float) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, __file__, "--stub", str(port), str(first_s), str(gap_s)])
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the stub server did not start")


async def plain_loop(url: str, concurrency: int, requests: int, tokens: int, model: str = "stub",
                     prompt: str = "x") -> dict:
    """A separately written client: one httpx stream per request, perf_counter around it."""
    import httpx
    ttft, tpot, e2e, count = [], [], [], [0]
    async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=concurrency)) as client:
        async def one():
            t0 = time.perf_counter()
            clock = [t0]

            async def written(event, info):  # the clock starts when the request is written, as infercost's
                if event == "http11.send_request_headers.started":
                    clock[0] = time.perf_counter()
            first, chunks, used = None, 0, None
            async with client.stream("POST", "/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": tokens,
                                                                      "stream": True, "stream_options": {"include_usage": True}},
                                     extensions={"trace": written}) as r:
                t0 = clock[0]
                async for line in r.aiter_lines():
                    if not line.startswith("data:") or line.strip() == "data: [DONE]":
                        continue
                    # A token is a chunk with text: servers end with an empty chunk carrying
                    # finish_reason and usage (transformers serve does), which is not one.
                    chunk = json.loads(line[5:])
                    if any(c.get("text") for c in chunk.get("choices", [])):
                        chunks += 1
                        first = first or time.perf_counter() - t0
                    used = (chunk.get("usage") or {}).get("completion_tokens") or used
            # tokens as the server counted them (a chunk can carry several: transformers serve
            # holds back a token it cannot decode alone), else one a chunk
            n = used or chunks
            total = time.perf_counter() - t0
            ttft.append(first)
            tpot.append((total - first) / (n - 1))  # (end to end - TTFT) / (tokens - 1), as vLLM's benchmark and AIPerf
            e2e.append(total)
            count[0] += n

        async def worker(k):
            for _ in range(k):
                await one()
        start = time.perf_counter()
        await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {"ttft": statistics.median(ttft), "tpot": statistics.median(tpot), "tokens_per_s": count[0] / wall}


def infercost_level(url: str, concurrency: int, requests: int, tokens: int, model: str = "stub",
                    prompt_words: int = 1) -> tuple[dict, float, int]:
    from infercost.bench import serving as serve
    ep = serve.Endpoint(url, model, ignore_eos=False, timeout_s=60)
    level = serve.Level("concurrency", concurrency, min_duration_s=0.0, min_requests=requests, warmup_requests=0)
    cpu0 = time.process_time()
    work = serve.Prompts((prompt_words, prompt_words), (tokens, tokens))
    reqs, start, end = asyncio.run(serve.run_level(ep, level, work, serve.Counter(None)))
    cpu = time.process_time() - cpu0
    metrics, _, _ = serve.summarize_level(reqs, start, end, {})
    return metrics, cpu, metrics["output_tokens"]


def aiperf_level(aiperf: str, url: str, model: str, concurrency: int, requests: int, tokens: int) -> dict:
    """One AIPerf run at these settings: its p50 TTFT and inter-token latency, and its output tokens/s."""
    import tempfile
    with tempfile.TemporaryDirectory(prefix="aiperf-") as out:
        # transformers serve refuses `ignore_eos` (the test model has no EOS: every request runs to max_tokens)
        cmd = [aiperf, "profile", "--model", model, "--tokenizer", model, "--url", url, "--endpoint-type", "completions",
               "--streaming", "--concurrency", str(concurrency), "--request-count", str(requests),
               "--prompt-input-tokens-mean", "4", "--prompt-input-tokens-stddev", "0",
               "--prompt-output-tokens-mean", str(tokens), "--prompt-output-tokens-stddev", "0",
               "--use-legacy-max-tokens", "--use-server-token-count", "--warmup-request-count", str(concurrency),
               "--ui-type", "none", "--output-artifact-dir", out]
        env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)  # (offline mode: AIPerf
        path = Path(out) / "profile_export_aiperf.json"  # looks for a local folder in the hub's cache)
        if proc.returncode != 0 or not path.exists():
            raise SystemExit(f"aiperf failed ({proc.returncode}): {(proc.stdout + proc.stderr).strip()[-600:]}")
        d = json.loads(path.read_text())
    return {"ttft": d["time_to_first_token"]["p50"] / 1e3, "tpot": d["inter_token_latency"]["p50"] / 1e3,
            "tokens_per_s": d["output_token_throughput"]["avg"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--real", metavar="MODEL_DIR", default=None,
                        help="also compare against `transformers serve` of this model folder (a tiny model is enough)")
    parser.add_argument("--aiperf", metavar="PATH", default=None,
                        help="with --real: also NVIDIA AIPerf (the `aiperf` command, e.g. from a venv of its own)")
    parser.add_argument("--stub", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stub:
        asyncio.run(stub_server(int(args.stub[0]), float(args.stub[1]), float(args.stub[2])))
        return 0
    from infercost.hardware.host import cpu_model

    # 1. Bookkeeping: tokens as fast as the stub sends them, 32 streams at once.
    proc, url = start_stub(0.0, 0.0)
    try:
        rates, per_token = [], []
        for _ in range(args.rounds):
            metrics, cpu, tokens = infercost_level(url, 32, 256, 64)
            rates.append(metrics["output_tokens_per_s"])
            per_token.append(cpu / tokens)
    finally:
        proc.kill()
    # 2. Fidelity: 20 ms to the first token, 5 ms between tokens, 8 streams; alternating rounds.
    proc, url = start_stub(0.02, 0.005)
    ours, plain = [], []
    try:
        for _ in range(args.rounds):
            m, _, _ = infercost_level(url, 8, 48, 32)
            ours.append({"ttft": m["ttft_s"], "tpot": m["tpot_s"], "tokens_per_s": m["output_tokens_per_s"]})
            plain.append(asyncio.run(plain_loop(url, 8, 48, 32)))
    finally:
        proc.kill()
    real_ours, real_plain, real_aiperf = [], [], []
    if args.real:  # 3. the same comparison against a real server (its own speed, whatever it is)
        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
        from test_serve import start_server, stop
        # The server on its own core and the client on the other, so the two do not take turns on
        # the same cores (the server is CPU-bound): what differs between the clients is their own cost.
        cores = sorted(os.sched_getaffinity(0))
        split = len(cores) >= 2
        proc, url = start_server(Path(args.real), set(cores[len(cores) // 2:]) if split else None)
        if split:
            os.sched_setaffinity(0, cores[:len(cores) // 2])
        try:
            for _ in range(args.rounds):
                m, _, _ = infercost_level(url, 4, 48, 16, model=args.real, prompt_words=4)
                real_ours.append({"ttft": m["ttft_s"], "tpot": m["tpot_s"], "tokens_per_s": m["output_tokens_per_s"]})
                real_plain.append(asyncio.run(plain_loop(url, 4, 48, 16, model=args.real, prompt="w1 w2 w3 w4")))
                if args.aiperf:
                    real_aiperf.append(aiperf_level(args.aiperf, url, args.real, 4, 48, 16))
        finally:
            stop(proc)
            os.sched_setaffinity(0, cores)
    med = lambda rows, k: statistics.median(r[k] for r in rows)
    print(f"\nclient on {cpu_model()} ({os.cpu_count()} CPUs), stub server in its own process on 127.0.0.1; medians of {args.rounds} rounds")
    print(f"bookkeeping: {statistics.median(rates):,.0f} streamed tokens/s through one process (32 streams, 64 tokens each); "
          f"client CPU {statistics.median(per_token) * 1e6:.1f} us per token")
    print(f"{'':<16}{'TTFT ms':>9}{'TPOT ms':>9}{'tok/s':>9}")
    for name, rows in (("infercost", ours), ("plain loop", plain)) + (
            (("real: infercost", real_ours), ("real: plain", real_plain)) if real_ours else ()) + (
            (("real: AIPerf", real_aiperf),) if real_aiperf else ()):
        print(f"{name:<16}{med(rows, 'ttft') * 1e3:>9.2f}{med(rows, 'tpot') * 1e3:>9.3f}{med(rows, 'tokens_per_s'):>9.0f}")
    checks = [("bookkeeping tokens/s", statistics.median(rates), 2000, ">=")]
    for k in ("ttft", "tpot", "tokens_per_s"):
        checks.append((f"{k} infercost / plain", med(ours, k) / med(plain, k), 0.05, "within"))
    for k in ("ttft", "tpot", "tokens_per_s") if real_ours else ():
        checks.append((f"real server: {k} infercost / plain", med(real_ours, k) / med(real_plain, k), 0.05, "within"))
    for k in ("ttft", "tpot", "tokens_per_s") if real_aiperf else ():
        checks.append((f"real server: {k} infercost / AIPerf", med(real_ours, k) / med(real_aiperf, k), 0.10, "within"))
    return 0 if report(checks) else 1


if __name__ == "__main__":
    sys.exit(main())

"""A serving engine as one more thing to measure: an asynchronous load generator for an
OpenAI-compatible endpoint (/v1/completions or /v1/chat/completions, streamed), with the same
records, gates and prices as the kernels.

Each level (a fixed concurrency, or a Poisson arrival rate) runs for a minimum time and number
of requests after its warm-up requests. Per request: time to first token, the gaps between
streamed chunks, time per output token, end-to-end latency, and the tokens the server says it
returned (its `usage`) or that a tokenizer the user names counts in the returned text; never an
assumed count. A failed or timed-out request is recorded as failed, never as fast.

Only the URL given is contacted. An API key is read from the named environment variable and
sent as a bearer token; it, and any credentials in the URL, are masked (infercost/redact.py) in
everything written or printed: the record keeps the URL without its user part.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
import time
from dataclasses import dataclass, field

import numpy as np

from infercost.redact import clip, redact

from . import gates
from .records import record

MAX_ERROR_RATE = 0.05   # a level with more failed requests than this is invalid
MAX_CONCURRENCY = 4096  # streams one client process keeps open at most
MAX_RATE = 10_000.0     # requests/s one client process can send on time
CLIMB_INVALID = 0.25    # token rate of the level's second half over its first half (with 16+ requests)
CLIMB_WARN = 0.10


@dataclass
class Endpoint:
    url: str                      # base URL, e.g. http://127.0.0.1:8000
    model: str
    api: str = "completions"      # or "chat"
    api_key_env: str | None = None
    timeout_s: float = 60.0       # per request, start to last byte
    ignore_eos: bool = True       # asked for; dropped if the server refuses the field
    tokenizer: str | None = None  # a tokenizer.json or folder, to count tokens when there is no usage

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.api == "chat" else "/v1/completions"

    @property
    def shown_url(self) -> str:
        """The URL as it may be written or printed: credentials masked."""
        return redact(self.url)

    def headers(self) -> dict:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return {"Authorization": f"Bearer {key}"} if key else {}


def api_key(env: str | None) -> str | None:
    """The API key in the named variable, registered as a secret; a name with no value is an error
    (a run without the key the user meant to send would measure refusals)."""
    from infercost.errors import InputError
    from infercost.redact import control_escaped, register
    if env is None:
        return None
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env):
        raise InputError(f"--api-key-env {control_escaped(env)!r}: not an environment variable name")
    key = os.environ.get(env)
    if not key:
        raise InputError(f"--api-key-env {env}: the variable is not set (or empty); export it, or leave the flag out")
    register(key)
    return key


@dataclass
class Request:
    prompt: str
    max_tokens: int
    warmup: bool = False
    start: float = 0.0
    ttft: float | None = None
    e2e: float | None = None
    chunks: list = field(default_factory=list)   # arrival time of each chunk that carried text
    text: list = field(default_factory=list)
    output_tokens: int | None = None
    prompt_tokens: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def tpot(self) -> float | None:
        if self.ttft is None or self.e2e is None or not self.output_tokens or self.output_tokens < 2:
            return None
        return (self.e2e - self.ttft) / (self.output_tokens - 1)


class Counter:
    """Tokens of returned text, with a tokenizer the user named (tokenizers' JSON, or a folder)."""

    def __init__(self, path: str | None):
        from infercost.errors import InputError
        from infercost.redact import control_escaped
        self.tok = None
        if path:
            from pathlib import Path
            try:
                from tokenizers import Tokenizer
            except ImportError:
                raise InputError("--tokenizer needs the tokenizers package: pip install tokenizers") from None
            p = Path(path)
            p = p / "tokenizer.json" if p.is_dir() else p
            if not p.is_file():
                raise InputError(f"--tokenizer {control_escaped(p)}: no such file")
            try:
                self.tok = Tokenizer.from_file(str(p))
            except Exception as e:  # the tokenizers library's own parse errors
                raise InputError(f"--tokenizer {control_escaped(p)}: not a tokenizer.json "
                                 f"({control_escaped(str(e).splitlines()[0][:120] if str(e) else type(e).__name__)})") from None

    def count(self, text: str) -> int | None:
        return len(self.tok.encode(text, add_special_tokens=False).ids) if self.tok else None


def body(ep: Endpoint, req: Request) -> dict:
    out = {"model": ep.model, "max_tokens": req.max_tokens, "stream": True, "stream_options": {"include_usage": True}}
    if ep.api == "chat":
        out["messages"] = [{"role": "user", "content": req.prompt}]
    else:
        out["prompt"] = req.prompt
    if ep.ignore_eos:
        out["ignore_eos"] = True
    return out


def chunk_text(chunk: dict) -> str:
    choices = chunk.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return ""
    c = choices[0]
    return (c.get("text") or (c.get("delta") or {}).get("content") or "") if isinstance(c, dict) else ""


async def send(client, ep: Endpoint, req: Request, counter: Counter) -> Request:
    """One streamed request; every failure ends as req.error, never as an exception."""
    req.start = time.perf_counter()
    try:
        if hasattr(asyncio, "timeout"):  # 3.11+: no extra task, so no scheduling delay inside TTFT
            async with asyncio.timeout(ep.timeout_s):
                await _stream(client, ep, req)
        else:
            await asyncio.wait_for(_stream(client, ep, req), timeout=ep.timeout_s)
    except asyncio.TimeoutError:
        req.error = f"timeout after {ep.timeout_s:g} s"
    except Exception as e:  # connection refused or reset, protocol errors: a failed request
        import httpx
        if isinstance(e, httpx.TimeoutException):  # httpx's own limit, the same one
            req.error = f"timeout after {ep.timeout_s:g} s ({type(e).__name__})"
        else:
            req.error = f"{type(e).__name__}: {clip(e, 160)}"
    if req.ok:
        req.e2e = time.perf_counter() - req.start
        if req.output_tokens is None:
            req.output_tokens = counter.count("".join(req.text))
        if not req.chunks and not req.output_tokens:
            req.error = "no tokens returned"
    return req


async def _stream(client, ep: Endpoint, req: Request) -> None:
    async with client.stream("POST", ep.path, json=body(ep, req), headers=ep.headers()) as resp:
        if resp.status_code != 200:
            detail = clip((await resp.aread()).decode("utf-8", "replace"), 200)
            raise RuntimeError(f"HTTP {resp.status_code}: {detail}")
        async for line in resp.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                continue  # read on to the end of the response, so its connection is kept for the next request
            chunk = json.loads(data)  # a malformed chunk fails the request
            if not isinstance(chunk, dict):
                raise ValueError(f"a stream chunk that is not an object: {clip(data, 80)}")
            if chunk.get("error"):
                raise RuntimeError(f"error in the stream: {clip(chunk['error'], 160)}")
            text = chunk_text(chunk)
            if text:
                now = time.perf_counter()
                if req.ttft is None:
                    req.ttft = now - req.start
                req.chunks.append(now)
                req.text.append(text)
            usage = chunk.get("usage")
            if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
                req.output_tokens = usage["completion_tokens"]
                req.prompt_tokens = usage.get("prompt_tokens")


def client_for(ep: Endpoint, connections: int):
    import httpx
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=ep.url, limits=limits, timeout=httpx.Timeout(ep.timeout_s),
                             follow_redirects=False, trust_env=False)  # only the URL given, no proxies


async def probe(ep: Endpoint, counter: Counter) -> dict:
    """Engine identity (/v1/models, the Server header) and whether ignore_eos is accepted."""
    info: dict = {}
    async with client_for(ep, 1) as client:
        try:
            r = await client.get("/v1/models", headers=ep.headers())
            info["server"] = clip(r.headers.get("server") or "", 120) or None
            models = r.json().get("data") if r.status_code == 200 else None
            if isinstance(models, list):
                match = next((m for m in models if isinstance(m, dict) and m.get("id") == ep.model), None)
                info["models"] = [m.get("id") for m in models if isinstance(m, dict)][:20]
                info["owned_by"] = (match or {}).get("owned_by")
        except Exception as e:
            info["models_error"] = f"{type(e).__name__}: {clip(e, 120)}"
        req = await send(client, ep, Request("hello", 2), counter)
        if not req.ok and ep.ignore_eos and "ignore_eos" in (req.error or ""):
            ep.ignore_eos = False  # the server refuses the field: ask without it, and say so
            info["ignore_eos"] = "refused by the server (outputs may end early at EOS; tokens are counted, not assumed)"
            req = await send(client, ep, Request("hello", 2), counter)
        info["probe_error"] = req.error
    return info


@dataclass
class Workload:
    """What each request asks: prompts and output lengths (fixed, a range, or from a file)."""
    input_tokens: tuple[int, int] = (128, 128)
    output_tokens: tuple[int, int] = (128, 128)
    prompts: list | None = None
    seed: int = 0

    def __post_init__(self):
        self.rng = random.Random(self.seed)

    def next(self, warmup: bool = False) -> Request:
        n = self.rng.randint(*self.output_tokens)
        if self.prompts:
            return Request(self.rng.choice(self.prompts), n, warmup)
        words = self.rng.randint(*self.input_tokens)  # words of a synthetic prompt, about a token each
        return Request(" ".join(f"w{self.rng.randint(3, 200)}" for _ in range(words)), n, warmup)

    def describe(self) -> str:
        span = lambda a: f"{a[0]}" if a[0] == a[1] else f"{a[0]}-{a[1]}"
        source = f"{len(self.prompts)} prompts from a file" if self.prompts else f"{span(self.input_tokens)} words"
        return f"{source}, {span(self.output_tokens)} output tokens"


@dataclass
class Level:
    mode: str                 # "concurrency" or "rate"
    value: float              # requests in flight, or requests per second
    min_duration_s: float = 10.0
    min_requests: int = 20
    warmup_requests: int = 2
    max_duration_s: float = 120.0


async def run_level(ep: Endpoint, level: Level, work: Workload, counter: Counter) -> tuple[list[Request], float, float]:
    """Every request of one level (warm-up ones marked) and the measured window's start and end."""
    done: list[Request] = []
    cap = int(level.value) if level.mode == "concurrency" else min(MAX_CONCURRENCY, max(4, int(level.value * 8)))
    async with client_for(ep, cap) as client:
        for _ in range(level.warmup_requests):
            done.append(await send(client, ep, work.next(warmup=True), counter))
        start = time.perf_counter()

        def more() -> bool:
            elapsed = time.perf_counter() - start
            measured = sum(1 for r in done if not r.warmup)
            return elapsed < level.max_duration_s and (elapsed < level.min_duration_s or measured < level.min_requests)

        if level.mode == "concurrency":
            async def worker():
                while more():
                    done.append(await send(client, ep, work.next(), counter))
            await asyncio.gather(*(worker() for _ in range(cap)))
        else:
            rng = random.Random(work.seed + 1)
            tasks, issued = set(), 0
            next_at = start
            while more() or issued < level.min_requests:
                if time.perf_counter() - start > level.max_duration_s:
                    break
                next_at += rng.expovariate(level.value)
                if next_at - start > level.max_duration_s:  # the next arrival falls after the level's end
                    await asyncio.sleep(max(0.0, start + level.max_duration_s - time.perf_counter()))
                    break
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                task = asyncio.create_task(send(client, ep, work.next(), counter))
                task.add_done_callback(lambda t: done.append(t.result()))
                tasks.add(task)
                issued += 1
            await asyncio.gather(*tasks)
        end = time.perf_counter()
    return done, start, end


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "mean": None}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(np.mean(values))}


def slo_ok(r: Request, slo: dict) -> bool:
    if not r.ok:
        return False
    if "ttft" in slo and (r.ttft is None or r.ttft > slo["ttft"]):
        return False
    tpot = r.tpot()
    return not ("tpot" in slo and tpot is not None and tpot > slo["tpot"])


def summarize_level(requests: list[Request], start: float, end: float, slo: dict, seed: int = 0) -> tuple[dict, dict, list]:
    """The level's metrics, its latency statistics, and the gates' findings."""
    measured = [r for r in requests if not r.warmup]
    ok = [r for r in measured if r.ok]
    failed = [r for r in measured if not r.ok]
    window = max(end - start, 1e-9)
    findings = []
    if not measured:
        findings.append((gates.INVALID, "no request was measured"))
    elif len(failed) / len(measured) > MAX_ERROR_RATE:
        findings.append((gates.INVALID, f"errors: {len(failed)} of {len(measured)} requests failed "
                                        f"(limit {MAX_ERROR_RATE:.0%}); first: {failed[0].error}"))
    counted = [r for r in ok if r.output_tokens is not None]
    if ok and len(counted) < len(ok):
        findings.append((gates.INVALID, "token counts unknown: the server sent no usage; name a tokenizer with --tokenizer"))
    tokens = sum(r.output_tokens for r in counted)
    tpots = [t for r in counted if (t := r.tpot()) is not None]
    itls = [b - a for r in ok for a, b in zip(r.chunks, r.chunks[1:])]
    # Still climbing: the second half of the window delivers clearly more tokens than the first.
    # Tokens are placed when they arrive (a request's count spread over its chunks), not when
    # their request ends: a batching server ends requests in waves, and counted by end a steady
    # level read +33% to +100%.
    mid = start + window / 2
    first = second = 0.0
    for r in counted:
        times = r.chunks or [r.start + r.e2e]
        for t in times:
            if start <= t < mid:
                first += r.output_tokens / len(times)
            elif mid <= t <= end:
                second += r.output_tokens / len(times)
    if len(counted) >= 16 and first > 0:
        climb = second / first - 1
        if climb > CLIMB_INVALID:
            findings.append((gates.INVALID, f"throughput still climbing: second half {climb:+.0%} over the first"))
        elif climb > CLIMB_WARN:
            findings.append((gates.WARN, f"throughput climbing: second half {climb:+.0%} over the first"))
    rng = np.random.default_rng(seed)
    if counted:
        per = np.array([r.output_tokens for r in counted], dtype=float)
        boot = [per[rng.integers(0, len(per), len(per))].sum() / window for _ in range(1000)]
        lo, hi = np.percentile(boot, [2.5, 97.5])
    else:
        lo = hi = None
    good = [r for r in counted if slo_ok(r, slo)]
    in_flight = sum(r.e2e for r in ok) / window if ok else None  # Little's law: L = throughput x latency
    metrics = {
        "output_tokens_per_s": tokens / window if counted else None,
        "output_tokens_per_s_ci95_low": float(lo) if lo is not None else None,
        "output_tokens_per_s_ci95_high": float(hi) if hi is not None else None,
        "requests_per_s": len(ok) / window,
        "tpot_s": float(np.median(tpots)) if tpots else None,
        "ttft_s": float(np.median(ttfts)) if (ttfts := [r.ttft for r in ok if r.ttft is not None]) else None,
        "per_user_tokens_per_s": float(np.median([1 / t for t in tpots])) if tpots else None,
        "goodput_requests_per_s": len(good) / window,
        "goodput_tokens_per_s": sum(r.output_tokens for r in good) / window,
        "mean_in_flight": in_flight,
        "output_tokens": tokens, "requests_ok": len(ok), "requests_failed": len(failed),
        "timeouts": sum(1 for r in failed if (r.error or "").startswith("timeout")),
        "warmup_requests": len(requests) - len(measured), "window_s": window,
    }
    stats = {"ttft_s": percentiles([r.ttft for r in ok if r.ttft is not None]), "tpot_s": percentiles(tpots),
             "itl_s": percentiles(itls), "e2e_s": percentiles([r.e2e for r in ok])}
    return metrics, stats, findings


def level_record(ep: Endpoint, level: Level, work: Workload, requests: list[Request], start: float, end: float,
                 slo: dict, engine: dict, device: str, device_kind: str, kernel_model: str | None = None) -> dict:
    metrics, latency, findings = summarize_level(requests, start, end, slo, work.seed)
    verdict = gates.verdict(findings + gates.figures_gate(metrics))
    if not verdict["valid"]:
        for k in list(metrics):
            if k.startswith(("output_tokens_per_s", "goodput", "per_user", "requests_per_s")):
                metrics[k] = None
    value = int(level.value) if level.mode == "concurrency" else level.value
    case = {"backend": "endpoint", "workload": "serve", "dtype": "engine", "tf32": False, "threads": None,
            "params": {"endpoint": ep.shown_url, "model": ep.model, "api": ep.api, "mode": level.mode, "level": value,
                       "batch": max(1, int(math.ceil(level.value))) if level.mode == "concurrency" else None,
                       "tokens": work.output_tokens[1], "input": work.describe(),
                       **({"kernel_model": kernel_model} if kernel_model else {})},
            "device": device, "device_kind": device_kind, "framework": "http",
            "shape": f"{ep.model} {level.mode} {value:g}", "engine": engine,
            "api_key_env": ep.api_key_env}
    if case["params"]["batch"] is None:  # a rate level: the mean requests in flight stands for the batch
        case["params"]["batch"] = max(1, round(metrics["mean_in_flight"] or 1))
    failures = sorted({r.error for r in requests if r.error})[:5]
    settings = {"min_duration_s": level.min_duration_s, "min_requests": level.min_requests,
                "warmup_requests": level.warmup_requests, "timeout_s": ep.timeout_s, "slo": slo,
                "ignore_eos": ep.ignore_eos}
    tpots = [t for r in requests if not r.warmup and r.ok and (t := r.tpot()) is not None]
    status = "ok" if verdict["valid"] else "invalid"
    return record(case, status, verdict["reasons"], verdict["warnings"], metrics=metrics, stats=latency,
                  raw_times_s=tpots or None, settings=settings, failures=failures)


def parse_slo(text: str | None) -> dict:
    """"ttft=500ms,tpot=50ms" -> {"ttft": 0.5, "tpot": 0.05} (s or ms units)."""
    from infercost.errors import InputError
    from infercost.numbers import number
    out = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, _, value = part.partition("=")
        key, value = key.strip(), value.strip().lower()
        if key not in ("ttft", "tpot"):
            raise InputError(f"--slo {text!r}: {key!r} is not ttft or tpot")
        scale = 1e-3 if value.endswith("ms") else 1.0
        out[key] = number(value.removesuffix("ms").removesuffix("s"), f"--slo {key}") * scale
    return out


def run(ep: Endpoint, levels: list[Level], work: Workload, slo: dict, writer, provenance: dict, device: str,
        device_kind: str, on_level, kernel_model: str | None = None) -> list[dict]:
    """Every level in turn; each record is written as soon as its level ends."""
    counter = Counter(ep.tokenizer)
    engine = asyncio.run(probe(ep, counter))
    records = []
    for level in levels:
        requests, start, end = asyncio.run(run_level(ep, level, work, counter))
        rec = level_record(ep, level, work, requests, start, end, slo, engine, device, device_kind, kernel_model)
        rec["provenance"] = provenance
        writer.write(rec)
        records.append(rec)
        on_level(rec)
    return records


def span(text: str, flag: str) -> tuple[int, int]:
    """"128" -> (128, 128); "64-256" -> (64, 256)."""
    from infercost.errors import InputError
    from infercost.numbers import number
    lo, _, hi = str(text).partition("-")
    a = number(lo, flag, integer=True)
    b = number(hi, flag, integer=True) if hi else a
    if b < a:
        raise InputError(f"{flag} {text!r}: the range runs backwards")
    return a, b


def read_prompts(path) -> list[str]:
    """Prompts from a JSONL file of {"prompt": "..."} lines (one-line errors naming file:line)."""
    from pathlib import Path

    from infercost.errors import InputError
    try:
        lines = Path(path).read_bytes().decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"--prompts {path}: cannot read it as text ({type(e).__name__})") from None
    prompts = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            raise InputError(f"{path}:{i}: not JSON") from None
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str) or not item["prompt"]:
            raise InputError(f"{path}:{i}: needs a non-empty \"prompt\" string")
        prompts.append(item["prompt"])
    if not prompts:
        raise InputError(f"--prompts {path}: no prompts")
    return prompts


def plan_levels(concurrency, rates, max_concurrency: int, **limits) -> list[Level]:
    """Concurrency levels (given, or 1, 2, 4, ... up to the maximum), or Poisson rates; each checked
    against what one client process can do and what a level's limits allow."""
    from infercost.errors import InputError
    from infercost.numbers import number
    if concurrency and rates:
        raise InputError("give --concurrency or --rate, not both")
    lo, hi = limits.get("min_duration_s", 10.0), limits.get("max_duration_s", 120.0)
    if hi < lo:
        raise InputError(f"--max-duration {hi:g} is shorter than --min-duration {lo:g}")
    if rates:
        levels = [Level("rate", number(r, "--rate", high=MAX_RATE), **limits) for r in rates]
        for level in levels:
            if level.value * level.max_duration_s < level.min_requests:
                raise InputError(f"--rate {level.value:g}: a level sends about {level.value * level.max_duration_s:.3g} "
                                 f"requests in --max-duration {level.max_duration_s:g} s, fewer than --min-requests "
                                 f"{level.min_requests}")
        return levels
    if concurrency:
        return [Level("concurrency", number(c, "--concurrency", integer=True, high=MAX_CONCURRENCY), **limits)
                for c in concurrency]
    if max_concurrency > MAX_CONCURRENCY:
        raise InputError(f"--max-concurrency {max_concurrency}: at most {MAX_CONCURRENCY} streams")
    levels, c = [], 1
    while c <= max_concurrency:
        levels.append(Level("concurrency", c, **limits))
        c *= 2
    return levels


def check_url(url: str) -> str:
    """The endpoint's base URL, checked whole before anything is sent: http(s), a host, a port in
    range, no query or fragment; /v1 and a trailing slash dropped."""
    from urllib.parse import urlparse

    from infercost.errors import InputError
    from infercost.redact import control_escaped
    shown = control_escaped(redact(url))
    if not url or any(not ch.isprintable() or ch.isspace() for ch in url):
        raise InputError(f"{shown!r} is not a URL: it holds spaces or control characters")
    try:
        u = urlparse(url)
        host, port = u.hostname, u.port  # .port raises for a port that is not a number in 0-65535
    except ValueError as e:
        raise InputError(f"{shown!r} is not a valid URL ({control_escaped(redact(str(e)))})") from None
    if u.scheme not in ("http", "https") or not host:
        raise InputError(f"{shown!r} is not an http(s) URL, e.g. http://127.0.0.1:8000")
    if port == 0:
        raise InputError(f"{shown!r}: port 0 is not a port a server listens on (1-65535)")
    if u.query or u.fragment or u.params:
        raise InputError(f"{shown!r}: give the server's base URL, without a query or fragment")
    if u.username or u.password:  # sent as basic auth: mask them, and the header's form, everywhere
        import base64
        from urllib.parse import unquote

        from infercost.redact import register
        user, password = unquote(u.username or ""), unquote(u.password or "")
        for secret in (u.username, u.password, user, password,
                       base64.b64encode(f"{user}:{password}".encode()).decode()):
            register(secret)
    return url.rstrip("/").removesuffix("/v1")

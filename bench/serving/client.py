"""The client side of a serving measurement: one endpoint, its requests (streamed, per API), the
token counts, and the checks of the URL and key before anything is sent.

Only the URL given is contacted. An API key is read from the named environment variable and
sent as a bearer token; it, and any credentials in the URL, are masked (infercost/redact.py) in
everything written or printed: the record keeps the URL without its user part.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from dataclasses import dataclass, field

from infercost.redact import clip, redact


@dataclass
class Endpoint:
    url: str                      # base URL, e.g. http://127.0.0.1:8000
    model: str
    api: str = "completions"      # or "chat"
    api_key_env: str | None = None
    timeout_s: float = 60.0       # per request, start to last byte
    ignore_eos: bool = True       # asked for; dropped if the server refuses the field
    tokenizer: str | None = None  # a tokenizer.json or folder, to count tokens when there is no usage
    devices: int = 1              # the accelerators behind the endpoint (what a price share counts)

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
    clock: str = "built"  # where start stands: "written" (the request's first byte sent) or "built"
    scheduled: float | None = None  # trace replay: when the trace said it was due (perf_counter)
    built: object = None  # the httpx request, where it was built ahead of its time (client.build)
    turn: int | None = None  # a session's request: its turn, its session, and the tokens of its prompt
    session: int | None = None  # an earlier request already sent in front of it (sessions.py)
    prefix_tokens: int | None = None
    prompt_tokens_sent: int | None = None

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


WRITE_STARTS = ("http11.send_request_headers.started", "http2.send_request_headers.started")


def build(client, ep: Endpoint, req: Request):
    """The request as httpx will send it, built ahead of its time where a replay can (building
    takes ~0.5 ms, and a request due behind another's building would leave late)."""
    async def trace(event: str, info: dict) -> None:
        # The clock starts when the request is written to the connection (httpcore's trace), not
        # while the client still builds it: building took ~1 ms, 13-23% of a fast server's TTFT.
        if event in WRITE_STARTS:
            req.start, req.clock = time.perf_counter(), "written"

    return client.build_request("POST", ep.path, json=body(ep, req), headers=ep.headers(), extensions={"trace": trace})


async def _stream(client, ep: Endpoint, req: Request) -> None:
    resp = await client.send(req.built or build(client, ep, req), stream=True)
    req.built = None
    try:
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
    finally:
        await resp.aclose()


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

"""Trace replay: requests sent at the times a trace gives, with prompts that share exactly the
prefix blocks the trace says they share.

The trace format is Mooncake's JSON Lines (also read by AIPerf, GuideLLM and SGLang's bench):
one request a line, {"timestamp": ms from the trace's start, "input_length": tokens,
"output_length": tokens, "hash_ids": [block ids]}. A prompt is its blocks in order, each block
`block_tokens` tokens long (Mooncake: 512) and the last one cut to what input_length leaves; two
requests with the same block id at the same place share that block's tokens exactly, so an
engine's prefix cache can hit what the trace intends it to, and nothing else: block contents
are drawn from the run's salt, so a second run does not find the first's blocks cached.

Tokens are exact with --tokenizer (each block is built of words the tokenizer reads as one
token each, and the whole prompt is counted again); without one a word stands for a token.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

from infercost.errors import InputError
from infercost.redact import control_escaped

from ..records import collector_paused
from .client import Counter, Endpoint, Request, build, client_for, send

MAX_REQUESTS = 1_000_000
MAX_INPUT = 2_000_000   # tokens a request may ask to read (longer is a broken trace, not a workload)
MAX_OUTPUT = 1_000_000


@dataclass(frozen=True)
class TraceRequest:
    at_s: float          # seconds from the trace's start
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]


def read_trace(path, block_tokens: int = 512) -> list[TraceRequest]:
    """A Mooncake trace, every line checked: one-line errors naming file:line."""
    name = control_escaped(path)
    try:
        lines = Path(path).read_bytes().decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"--trace {name}: cannot read it as text ({type(e).__name__})") from None
    out: list[TraceRequest] = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{name}:{i}"
        try:
            item = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            raise InputError(f"{where}: not JSON") from None
        if not isinstance(item, dict):
            raise InputError(f"{where}: not an object")
        missing = [k for k in ("timestamp", "input_length", "output_length", "hash_ids") if k not in item]
        if missing:
            raise InputError(f"{where}: missing {', '.join(missing)}")
        ts, n_in, n_out, ids = item["timestamp"], item["input_length"], item["output_length"], item["hash_ids"]
        if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts) or ts < 0:
            raise InputError(f"{where}: timestamp {ts!r} is not a time in ms from the trace's start (>= 0)")
        for key, v, top in (("input_length", n_in, MAX_INPUT), ("output_length", n_out, MAX_OUTPUT)):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= top:
                raise InputError(f"{where}: {key} {v!r} is not a whole number of tokens in 1..{top:,}")
        if not isinstance(ids, list) or not all(isinstance(h, int) and not isinstance(h, bool) for h in ids):
            raise InputError(f"{where}: hash_ids must be a list of whole numbers")
        need = -(-n_in // block_tokens)
        if len(ids) != need:
            raise InputError(f"{where}: {len(ids)} hash_ids for {n_in} input tokens; blocks of {block_tokens} "
                             f"tokens need {need} (--trace-block-tokens sets the block size)")
        if out and ts / 1000 < out[-1].at_s:
            raise InputError(f"{where}: timestamp {ts} comes before the line above's; a trace is in time order")
        out.append(TraceRequest(ts / 1000, n_in, n_out, tuple(ids)))
        if len(out) > MAX_REQUESTS:
            raise InputError(f"--trace {name}: more than {MAX_REQUESTS:,} requests")
    if not out:
        raise InputError(f"--trace {name}: no requests")
    return out


def intended_prefix_share(trace: list[TraceRequest], block_tokens: int) -> float:
    """The share of all input tokens in full blocks an earlier request already sent in full at the
    same place, behind the same blocks (what a prefix cache of whole blocks, as vLLM's and SGLang's
    are, would skip): the reuse the trace intends."""
    seen: set[tuple[int, ...]] = set()
    reused = total = 0
    for r in trace:
        full = r.input_length // block_tokens
        total += r.input_length
        for k in range(full):
            prefix = r.hash_ids[:k + 1]  # a block is only reusable behind the same blocks
            if prefix in seen:
                reused += block_tokens
            seen.add(prefix)
    return reused / total if total else 0.0


class TracePrompts:
    """The prompt of each trace request: its blocks, each a fixed draw of words for (salt, id)."""

    def __init__(self, trace: list[TraceRequest], block_tokens: int, counter: Counter | None, salt: int,
                 name: str = "trace"):
        self.trace, self.block_tokens, self.counter, self.salt, self.name = trace, block_tokens, counter, salt, name
        self.words = one_token_words(counter) if counter and counter.tok else None
        self._blocks: dict[int, list[str]] = {}
        self.exact = self.words is not None
        self.seed = salt
        self.output_tokens = (min(r.output_length for r in trace), max(r.output_length for r in trace))
        self.rng = random.Random(f"{salt}:warmup")

    @property
    def intended_hit_rate(self) -> float:
        """What a prefix cache should serve of this trace: the share its blocks repeat."""
        return intended_prefix_share(self.trace, self.block_tokens)

    def block(self, h: int) -> list[str]:
        if h not in self._blocks:
            rng = random.Random(f"{self.salt}:{h}")
            pick = (lambda: rng.choice(self.words)) if self.words else (lambda: f"w{rng.randint(3, 200)}")
            self._blocks[h] = [pick() for _ in range(self.block_tokens)]
        return self._blocks[h]

    def request(self, tr: TraceRequest) -> Request:
        words: list[str] = []
        for k, h in enumerate(tr.hash_ids):
            words += self.block(h)[:tr.input_length - k * self.block_tokens]
        text = "".join(" " + w for w in words) if self.words else " ".join(words)
        return Request(text, tr.output_length)

    def warmup(self, n: int = 16) -> Request:
        """A request that shares no block with the trace (a block id of its own, below any a trace uses)."""
        return Request(" ".join(self.block(-1 - self.rng.randrange(1 << 30))[:n]), 8, warmup=True)

    def describe(self) -> str:
        trace = self.trace
        unit = "tokens, exact" if self.exact else "words standing for tokens (no --tokenizer)"
        return (f"trace of {len(trace)} requests, prefix blocks of {self.block_tokens} {unit}, "
                f"input {min(r.input_length for r in trace)}-{max(r.input_length for r in trace)}, "
                f"output {min(r.output_length for r in trace)}-{max(r.output_length for r in trace)}")


def one_token_words(counter: Counter) -> list[str]:
    """Words the tokenizer reads as exactly one token each, also after a space, so a prompt of n
    of them, space-separated, is n tokens (pre-tokenizers split at spaces, so words never merge)."""
    tok = counter.tok
    special = {t.content for t in tok.get_added_tokens_decoder().values()} if hasattr(tok, "get_added_tokens_decoder") else set()
    words = []
    for piece, i in sorted(tok.get_vocab(with_added_tokens=False).items(), key=lambda kv: kv[1]):
        text = tok.decode([i]).strip()
        if not text or not text.isalnum() or piece in special or text in special:
            continue
        if tok.encode(" " + text, add_special_tokens=False).ids == [i]:
            words.append(text)
        if len(words) >= 4096:
            break
    if len(words) < 16:
        raise InputError("--tokenizer: fewer than 16 words it reads as one token each; trace prompts cannot be "
                         "built to exact token counts with it")
    return words


async def replay(ep: Endpoint, prompts: TracePrompts, counter: Counter, time_scale: float,
                 warmup_requests: int, max_concurrency: int) -> tuple[list[Request], float, float]:
    """Every request sent at its trace time x time_scale (open loop: a slow server does not slow
    the arrivals), warm-up requests first; returns them and the replay's start and end."""
    trace = prompts.trace
    requests = [prompts.request(tr) for tr in trace]  # built before the clock starts
    done: list[Request] = []
    async with client_for(ep, min(max_concurrency, len(trace))) as client:
        # at least one warm-up, all at once: the client's first request (its lazy set-up) and the
        # first connections are not paid by the trace's first requests (~20 ms late otherwise)
        done += await asyncio.gather(*(send(client, ep, prompts.warmup(), counter)
                                       for _ in range(max(1, warmup_requests))))
        start = time.perf_counter() + 0.02
        tasks = []
        with collector_paused():  # a collection of the growing requests stalled the loop for ms at a time
            for i, (tr, req) in enumerate(zip(trace, requests)):
                req.scheduled = start + tr.at_s * time_scale
                if req.built is None:
                    req.built = build(client, ep, req)
                if i + 1 < len(requests):  # the next one built while this one waits, off its critical path
                    requests[i + 1].built = build(client, ep, requests[i + 1])
                # woken LEAD_S early: the loop's timer wakes up to 1 ms late, and building the
                # request takes about as long again before its first byte is written
                delay = req.scheduled - LEAD_S - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(send(client, ep, req, counter)))
            done += await asyncio.gather(*tasks)
        end = time.perf_counter()
    return done, start, end


LEAD_S = 0.001


def lateness(requests: list[Request]) -> list[float]:
    """How long after its scheduled time each request's first byte left (trace replay)."""
    return [r.start - r.scheduled for r in requests if r.scheduled is not None and not r.warmup]


def trace_name(path) -> str:
    """The trace file's name and the first 12 hex digits of its SHA-256 (which trace, exactly)."""
    import hashlib
    return f"{Path(path).name} sha256:{hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]}"

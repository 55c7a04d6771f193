"""The load: what each request asks (Prompts), the levels (fixed concurrency or Poisson rates),
running them one after another against an endpoint, and each level's record."""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from dataclasses import dataclass

from .client import Counter, Endpoint, Request, client_for, probe, send
from ..measure import conclude
from ..records import finished
from .metrics import RATES, summarize_level
from .cache import level_cache, read_counters
from .sessions import run_sessions, session_figures
from .trace import TraceRequest, lateness, replay

MAX_CONCURRENCY = 4096  # streams one client process keeps open at most
MAX_RATE = 10_000.0     # requests/s one client process can send on time


@dataclass
class Prompts:
    """What each request asks: prompts and output lengths (fixed, a range, or from a file)."""
    input_tokens: tuple[int, int] = (128, 128)
    output_tokens: tuple[int, int] = (128, 128)
    prompts: list | None = None
    seed: int = 0
    counter: Counter | None = None  # with a tokenizer: synthetic prompts cut to input_tokens tokens
    salt: int | None = None  # drawn for each run: no run's prompts are another's (prefix caches)

    def __post_init__(self):
        self.rng = random.Random(self.seed if self.salt is None else f"{self.seed}:{self.salt}")
        self.sent = 0

    @property
    def by_tokens(self) -> bool:
        return bool(self.counter and self.counter.tok)

    def next(self, warmup: bool = False) -> Request:
        n = self.rng.randint(*self.output_tokens)
        self.sent += 1
        if self.prompts:  # a file's prompts, each request's led by a word of its own where salted
            lead = f"s{self.salt:x}r{self.sent} " if self.salt is not None else ""
            return Request(lead + self.rng.choice(self.prompts), n, warmup)
        length = self.rng.randint(*self.input_tokens)
        text = " ".join(f"w{self.rng.randint(3, 200)}" for _ in range(length))  # a word is a token or more
        if self.by_tokens:  # exactly `length` of the tokenizer's tokens (the server's chat template adds its own)
            tok = self.counter.tok
            text = tok.decode(tok.encode(text, add_special_tokens=False).ids[:length])
        return Request(text, n, warmup)

    def describe(self) -> str:
        span = lambda a: f"{a[0]}" if a[0] == a[1] else f"{a[0]}-{a[1]}"
        unit = "tokens" if self.by_tokens else "words (no --tokenizer: a word is one token or more)"
        source = f"{len(self.prompts)} prompts from a file" if self.prompts else f"{span(self.input_tokens)} {unit}"
        salted = f", salted ({self.salt})" if self.salt is not None else ", not salted"
        return f"{source}, {span(self.output_tokens)} output tokens{salted}"

    @property
    def intended_hit_rate(self) -> float | None:
        """The prefix-cache hit rate this workload intends: none shared where salted; unknown (not
        judged) where not."""
        return 0.0 if self.salt is not None else None


@dataclass
class Level:
    mode: str                 # "concurrency", "rate" or "trace"
    value: float              # requests in flight, or requests per second (a trace's: over its span)
    min_duration_s: float = 10.0
    min_requests: int = 20
    warmup_requests: int = 2
    max_duration_s: float = 120.0
    time_scale: float = 1.0   # a trace: its times are replayed multiplied by this
    repeat: int = 1           # which run of the level this is, of repeats
    repeats: int = 1


async def run_level(ep: Endpoint, level: Level, work: Prompts, counter: Counter) -> tuple[list[Request], float, float]:
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


def run(ep: Endpoint, levels: list[Level], work: Prompts, slo: dict, writer, provenance: dict, device: str,
        device_kind: str, on_level, kernel_model: str | None = None, launched: dict | None = None) -> list[dict]:
    """Every level in turn; each record is written as soon as its level ends. launched: what
    `--launch` started (launch.Engine.identity), kept in each record's settings."""
    counter = Counter(ep.tokenizer)
    work.counter = work.counter or counter
    engine = asyncio.run(probe(ep, counter))
    records = []
    for level in levels:
        before = read_counters(ep)  # the engine's prefix-cache counters, where it exposes them
        if level.mode == "trace":
            requests, start, end = asyncio.run(replay(ep, work, counter, level.time_scale, level.warmup_requests,
                                                      MAX_CONCURRENCY))
        elif level.mode == "sessions":
            requests, start, end = asyncio.run(run_sessions(ep, work, counter, level.warmup_requests))
        else:
            requests, start, end = asyncio.run(run_level(ep, level, work, counter))
        cache = (before, read_counters(ep))
        rec = level_record(ep, level, work, requests, start, end, slo, engine, device, device_kind, kernel_model, cache)
        if launched:
            rec["settings"]["launched"] = launched
        rec = finished(rec, provenance)
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


def level_record(ep: Endpoint, level: Level, work: Prompts, requests: list[Request], start: float, end: float,
                 slo: dict, engine: dict, device: str, device_kind: str, kernel_model: str | None = None,
                 cache: tuple[dict, dict] | None = None) -> dict:
    """cache: the engine's prefix-cache counters before and after the level (cache.read_counters)."""
    trace, sessions = level.mode == "trace", level.mode == "sessions"
    metrics, latency, findings = summarize_level(requests, start, end, slo, work.seed, steady=not (trace or sessions))
    intended = work.intended_hit_rate  # salted prompts: 0; a trace: its reuse; sessions: from their requests below
    if sessions:  # the prefix each request repeats, and TTFT by turn
        figures, by_turn = session_figures(requests)
        metrics.update(figures)
        latency.update(by_turn)
        intended = figures["intended_prefix_share"]
    if cache and intended is not None:
        figures, found = level_cache(*cache, intended)
        metrics.update(figures)
        findings += found
    elif cache:
        why = "prompts not salted (--no-salt)" if getattr(work, "salt", 0) is None else "no request measured"
        metrics["prefix_cache"] = f"{why}: the cache's hits are not judged"
    if trace:  # how closely the replay kept the trace's times, and the prefix reuse the trace intends
        late = sorted(lateness(requests))
        metrics.update(schedule_lateness_p50_s=late[len(late) // 2] if late else None,
                       schedule_lateness_p99_s=late[min(len(late) - 1, int(len(late) * 0.99))] if late else None,
                       intended_prefix_share=intended)
    value = int(level.value) if level.mode == "concurrency" else level.value
    case = {"backend": "endpoint", "workload": "serve", "dtype": "engine", "tf32": False, "threads": None,
            "params": {"endpoint": ep.shown_url, "model": ep.model, "api": ep.api, "mode": level.mode, "level": value,
                       "batch": max(1, int(math.ceil(level.value))) if level.mode in ("concurrency", "sessions") else None,
                       "tokens": work.output_tokens[1], "input": work.describe(),
                       **({"kernel_model": kernel_model} if kernel_model else {}),
                       **({"repeat": level.repeat, "repeats": level.repeats} if level.repeats > 1 else {}),
                       **({"trace": work.name, "time_scale": level.time_scale, "block_tokens": work.block_tokens,
                           "salt": work.salt} if trace else {})},
            "device": device, "device_kind": device_kind, "framework": "http", "devices": ep.devices,
            "shape": f"{ep.model} {level.mode} {value:g}", "engine": engine,
            "api_key_env": ep.api_key_env}
    if case["params"]["batch"] is None:  # a rate level: the mean requests in flight stands for the batch
        case["params"]["batch"] = max(1, round(metrics["mean_in_flight"] or 1))
    failures = sorted({r.error for r in requests if r.error})[:5]
    settings = {"min_duration_s": level.min_duration_s, "min_requests": level.min_requests,
                "warmup_requests": level.warmup_requests, "timeout_s": ep.timeout_s, "slo": slo,
                "ignore_eos": ep.ignore_eos,
                # closed: each finished request lets the next go (concurrency); open: arrivals keep their times
                "loop": {"concurrency": "closed", "sessions": "closed within each session"}.get(level.mode, "open"),
                # what a latency covers: from where each request's clock started to its first text chunk / its end
                "latency_clock": ("from the request's first byte written to the connection"
                                  if all(r.clock == "written" for r in requests if r.ok) else
                                  "from before the request was built (the connection gave no write event)")}
    tpots = [t for r in requests if not r.warmup and r.ok and (t := r.tpot()) is not None]
    measured = [r for r in requests if not r.warmup]
    # Each measured request's figures, so goodput under any limit can be recomputed from the file.
    per_request = {"ok": [r.ok for r in measured], "ttft_s": [r.ttft for r in measured], "tpot_s": [r.tpot() for r in measured],
                   "e2e_s": [r.e2e for r in measured], "prompt_tokens": [r.prompt_tokens for r in measured],
                   "output_tokens": [r.output_tokens for r in measured],
                   **({"lateness_s": lateness(measured)} if trace else {}),
                   **({"turn": [r.turn for r in measured], "session": [r.session for r in measured],
                       "prefix_tokens": [r.prefix_tokens for r in measured]} if sessions else {})}
    return conclude(case, findings, metrics, RATES, stats=latency, raw_times_s=tpots or None, settings=settings,
                    failures=failures, requests=per_request)


def repeated(levels: list[Level], repeats: int) -> list[Level]:
    """Each level run `repeats` times in turn (1, 1, 1, 2, 2, 2 ...), each run its own record."""
    from dataclasses import replace
    return [replace(level, repeat=i + 1, repeats=repeats) for level in levels for i in range(repeats)]


def trace_level(trace: list[TraceRequest], time_scale: float, warmup_requests: int):
    """The one level a trace is: its mean rate over its span (as replayed) stands for the level."""
    span_s = max(trace[-1].at_s * time_scale, 1e-3)
    return Level("trace", len(trace) / span_s if len(trace) > 1 else 1.0, min_duration_s=0.0, min_requests=1,
                 warmup_requests=warmup_requests, max_duration_s=float("inf"), time_scale=time_scale)

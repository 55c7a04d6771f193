"""Multi-turn sessions: each turn's prompt is the conversation so far (earlier prompts and the
server's own replies) plus a new part, closed loop per session, with think time between turns.

Two shapes: "chat" (a user part a turn) and "agentic" (a long system prompt and tool
descriptions shared by every session, then many short turns, each a tool's output). Each
request records its turn and how many of its prompt's tokens an earlier request already sent in
front of it (its session's last prompt and reply; the shared system prompt): the prefix share a
cache could serve, and the TTFT of each turn shows how a growing context costs.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

from .client import Counter, Endpoint, Request, client_for, send

SHAPES = ("chat", "agentic")


@dataclass
class Sessions:
    sessions: int
    turns: tuple[int, int] = (3, 8)
    think_s: float = 2.0               # mean of an exponential think time between turns
    shape: str = "chat"
    system_tokens: int = 0             # the shared system prompt (agentic: default 2000)
    input_tokens: tuple[int, int] = (64, 256)    # a turn's new part
    output_tokens: tuple[int, int] = (64, 256)
    salt: int = 0
    counter: Counter | None = None
    seed: int = 0

    def __post_init__(self):
        self.rng = random.Random(f"{self.seed}:{self.salt}:sessions")
        self.system = self.words(self.system_tokens)

    def words(self, n: int) -> str:
        return " ".join(f"w{self.rng.randint(3, 200)}" for _ in range(n))

    def count(self, text: str) -> int:
        """Tokens of a text: the tokenizer's, or words where there is none."""
        n = self.counter.count(text) if self.counter and self.counter.tok else None
        return n if n is not None else len(text.split())

    def describe(self) -> str:
        unit = "tokens" if self.counter and self.counter.tok else "words"
        return (f"{self.sessions} {self.shape} sessions of {self.turns[0]}-{self.turns[1]} turns, think time "
                f"{self.think_s:g} s (mean), system prompt {self.system_tokens} {unit}, new part "
                f"{self.input_tokens[0]}-{self.input_tokens[1]}, replies {self.output_tokens[0]}-{self.output_tokens[1]}, "
                f"salted ({self.salt})")

    @property
    def intended_hit_rate(self) -> float | None:
        return None  # judged from the requests sent (session_share), not known before the level runs


async def session(client, ep: Endpoint, spec: Sessions, counter: Counter, number: int, rng: random.Random,
                  done: list[Request]) -> None:
    context = spec.system
    for turn in range(1, rng.randint(*spec.turns) + 1):
        part = " ".join(f"w{rng.randint(3, 200)}" for _ in range(rng.randint(*spec.input_tokens)))
        prompt = f"{context} {part}".strip()
        req = Request(prompt, rng.randint(*spec.output_tokens))
        req.turn, req.session = turn, number
        # what an earlier request already sent in front of this prompt: the session's context, or
        # on the first turn the system prompt every session shares
        req.prefix_tokens = spec.count(context) if context and (turn > 1 or number > 0) else 0
        req.prompt_tokens_sent = spec.count(prompt)
        await send(client, ep, req, counter)
        done.append(req)
        if not req.ok:
            return  # a broken session ends: its next turn would be built on a reply it never got
        context = f"{prompt} {''.join(req.text)}".strip()
        await asyncio.sleep(rng.expovariate(1 / spec.think_s) if spec.think_s > 0 else 0)


async def run_sessions(ep: Endpoint, spec: Sessions, counter: Counter, warmup_requests: int) -> tuple[list[Request], float, float]:
    """Every session at once (closed loop within each); warm-up requests first, sharing nothing."""
    done: list[Request] = []
    async with client_for(ep, spec.sessions) as client:
        for _ in range(warmup_requests):
            done.append(await send(client, ep, Request(spec.words(16), 8, warmup=True), counter))
        start = time.perf_counter()
        rngs = [random.Random(f"{spec.seed}:{spec.salt}:{i}") for i in range(spec.sessions)]
        await asyncio.gather(*(session(client, ep, spec, counter, i, rngs[i], done) for i in range(spec.sessions)))
        end = time.perf_counter()
    return done, start, end


def session_figures(requests: list[Request]) -> tuple[dict, dict]:
    """(metrics: the share of prompt tokens an earlier request sent in front, TTFT of the last turn
    over the first; stats: median TTFT by turn)."""
    import numpy as np
    measured = [r for r in requests if not r.warmup and r.turn is not None]
    sent = sum(r.prompt_tokens_sent or 0 for r in measured)
    by_turn: dict[int, list[float]] = {}
    for r in measured:
        if r.ok and r.ttft is not None:
            by_turn.setdefault(r.turn, []).append(r.ttft)
    medians = {f"turn_{t}": float(np.median(v)) for t, v in sorted(by_turn.items())}
    first, last = (medians[f"turn_{min(by_turn)}"], medians[f"turn_{max(by_turn)}"]) if by_turn else (None, None)
    return ({"intended_prefix_share": sum(r.prefix_tokens or 0 for r in measured) / sent if sent else None,
             "ttft_growth": last / first if first and len(by_turn) > 1 else None},
            {"ttft_by_turn_s": medians})

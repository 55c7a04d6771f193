"""Synthetic traces in the Mooncake format, made here (no downloaded data): one chat-like, one agentic.

    python scripts/make_traces.py [--out examples/traces] [--block-tokens 512] [--seed 0]
                                  [--sessions 40] [--requests 200] [--rate 4]

chat.jsonl: independent conversations' single requests, Poisson arrivals at --rate a second;
every prompt starts with the same one-block system prompt (id 0), then blocks of its own; input
lengths log-normal around 1,200 tokens (300-6,000), outputs 50-600 tokens.

agentic.jsonl: --sessions agent sessions starting at Poisson times; every session begins with a
long system prompt and tool descriptions shared by all (4 blocks, ids 0-3) and runs 5-15 short
turns, each turn's prompt the previous one plus a tool output or user part (1-3 new blocks of its
own, and a partial last block with an id of its own, as Mooncake hashes one); think time between
turns 0.5-4 s, outputs 20-200 tokens. Most of each prompt repeats an earlier one's prefix: what a
prefix cache is bought for.

Each line: {"timestamp": ms, "input_length": tokens, "output_length": tokens, "hash_ids": [...]},
hash_ids covering input_length in blocks of --block-tokens (the last one partial).
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path


class Ids:
    """Fresh block ids (a block's id stands for its contents and everything before it)."""

    def __init__(self, first: int):
        self.next = first

    def take(self, n: int) -> list[int]:
        self.next += n
        return list(range(self.next - n, self.next))


def chat(rng: random.Random, n: int, rate: float, block: int) -> list[dict]:
    out, t, ids = [], 0.0, Ids(1_000_000)
    for _ in range(n):
        t += rng.expovariate(rate)
        length = int(min(6000, max(300, rng.lognormvariate(math.log(1200), 0.6))))
        out.append({"timestamp": round(t * 1000), "input_length": length,
                    "output_length": rng.randint(50, 600), "hash_ids": [0] + ids.take(-(-length // block) - 1)})
    return out


def agentic(rng: random.Random, sessions: int, rate: float, block: int) -> list[dict]:
    out, start, ids = [], 0.0, Ids(2_000_000)
    for _ in range(sessions):
        start += rng.expovariate(rate / 8)  # sessions, not requests, arrive at this rate
        full, t = [0, 1, 2, 3], start
        for _ in range(rng.randint(5, 15)):
            full = full + ids.take(rng.randint(1, 3))  # the turn's new full blocks: tool output, user part
            tail = rng.randint(1, block - 1)  # and a partial last block, an id of its own (never a later full one)
            out.append({"timestamp": round(t * 1000), "input_length": block * len(full) + tail,
                        "output_length": rng.randint(20, 200), "hash_ids": full + ids.take(1)})
            t += rng.uniform(0.5, 4.0) + 0.05 * len(full)  # think time, and the reply's own time
    return sorted(out, key=lambda r: r["timestamp"])


def write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("examples/traces"))
    parser.add_argument("--block-tokens", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--requests", type=int, default=200, help="chat-like requests")
    parser.add_argument("--sessions", type=int, default=40, help="agentic sessions")
    parser.add_argument("--rate", type=float, default=4.0, help="requests (chat) or 1/8 sessions (agentic) a second")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    write(args.out / "chat.jsonl", chat(rng, args.requests, args.rate, args.block_tokens))
    write(args.out / "agentic.jsonl", agentic(rng, args.sessions, args.rate, args.block_tokens))
    print(f"wrote {args.out}/chat.jsonl and {args.out}/agentic.jsonl")


if __name__ == "__main__":
    main()

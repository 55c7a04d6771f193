"""A serving engine as one more thing to measure: an asynchronous load generator for an
OpenAI-compatible endpoint (/v1/completions or /v1/chat/completions, streamed), with the same
records, gates and prices as the kernels.

Each level (a fixed concurrency, or a Poisson arrival rate) runs for a minimum time and number
of requests after its warm-up requests. Per request: time to first token, the gaps between
streamed chunks, time per output token, end-to-end latency, and the tokens the server says it
returned (its `usage`) or that a tokenizer the user names counts in the returned text; never an
assumed count. A failed or timed-out request is recorded as failed, never as fast.

Four rooms: client.py (the endpoint and its requests), load.py (prompts, levels, running them, a level's record),
metrics.py (a level's figures and gates), trace.py (Mooncake traces replayed with their shared prefix blocks),
launch.py (an engine started for the run and always stopped), sessions.py (multi-turn sessions). The names callers use are re-exported here.
"""

from .client import Counter, Endpoint, Request, api_key, check_url, probe, send
from .load import (MAX_CONCURRENCY, MAX_RATE, Level, Prompts, level_record, plan_levels, read_prompts, repeated, run,
                   run_level, span, trace_level)
from .metrics import CLIMB_INVALID, CLIMB_WARN, MAX_ERROR_RATE, parse_slo, summarize_level
from .launch import Engine
from .sessions import SHAPES, Sessions
from .trace import TracePrompts, read_trace, trace_name

__all__ = ["CLIMB_INVALID", "CLIMB_WARN", "Counter", "Endpoint", "Engine", "SHAPES", "Sessions", "Level", "MAX_CONCURRENCY", "MAX_ERROR_RATE",
           "MAX_RATE", "Prompts", "Request", "api_key", "check_url", "level_record", "parse_slo", "plan_levels",
           "probe", "read_prompts", "read_trace", "repeated", "run", "run_level", "send", "span", "summarize_level", "trace_level",
           "trace_name", "TracePrompts"]

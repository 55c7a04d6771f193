"""Prefix-cache honesty: what an engine's prefix cache served during a level, against what the
workload intends it to.

A warm cache makes TTFT many times lower and throughput higher than the workload asks for (a
second run over the same prompts, a benchmark whose requests share more than it says). Each run
salts its prompts (load.Prompts, trace.TracePrompts), and around each level the engine's
Prometheus counters are read where it exposes them (GET /metrics):
  vLLM (V1): vllm:prefix_cache_hits_total / vllm:prefix_cache_queries_total (older releases:
             vllm:gpu_prefix_cache_*), tokens;
  SGLang:    sglang:cached_tokens_total / sglang:prompt_tokens_total, tokens.
The level's hit rate is the hits' increase over the queries'. A level whose hit rate is more than
MARGIN above the share its workload intends (0 for salted synthetic prompts, the trace's
intended_prefix_share for a trace) is invalid, with the two figures in the reason.
"""

from __future__ import annotations

from .client import Endpoint

MARGIN = 0.15  # a chat template's own shared tokens, a block an engine counts whole
COUNTERS = {  # engine: (hits, queries), Prometheus sample names (counters: _total)
    "vllm": (("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
             ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total")),
    "sglang": (("sglang:cached_tokens_total",), ("sglang:prompt_tokens_total",)),
}


def read_counters(ep: Endpoint) -> dict:
    """{"engine", "hits", "queries"} summed over the engine's label sets, or {"absent": why}."""
    import httpx
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        return {"absent": "prometheus-client is not installed here, so /metrics was not read"}
    try:
        resp = httpx.get(ep.url + "/metrics", headers=ep.headers(), timeout=5.0)
    except httpx.HTTPError as e:
        return {"absent": f"/metrics did not answer ({type(e).__name__})"}
    if resp.status_code != 200:
        return {"absent": f"the engine exposes no /metrics (HTTP {resp.status_code})"}
    samples: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(resp.text):
            for s in family.samples:
                samples[s.name] = samples.get(s.name, 0.0) + s.value
    except ValueError:
        return {"absent": "/metrics is not Prometheus text"}
    for engine, (hits, queries) in COUNTERS.items():
        h = next((n for n in hits if n in samples), None)
        q = next((n for n in queries if n in samples), None)
        if h and q:
            return {"engine": engine, "hits": samples[h], "queries": samples[q]}
    return {"absent": "/metrics has no vLLM or SGLang prefix-cache counters"}


def level_cache(before: dict, after: dict, intended: float) -> tuple[dict, list]:
    """(the level's prefix-cache figures, gate findings) from counters read around it."""
    from .. import gates
    if "absent" in before or "absent" in after:
        return {"prefix_cache": (before.get("absent") or after.get("absent")), "intended_hit_rate": intended}, []
    queries = after["queries"] - before["queries"]
    if queries <= 0:
        return {"prefix_cache": f"{after['engine']}: no prefix-cache queries during the level", "intended_hit_rate": intended}, []
    rate = (after["hits"] - before["hits"]) / queries
    out = {"prefix_cache": f"{after['engine']} counters", "prefix_cache_hit_rate": rate, "intended_hit_rate": intended}
    if rate > intended + MARGIN:
        return out, [(gates.INVALID, f"prefix cache served {rate:.0%} of prompt tokens, above the {intended:.0%} this "
                                     f"workload intends (+{MARGIN:.0%} allowed): a cache warm from an earlier run, or "
                                     f"prompts sharing more than they should")]
    return out, []

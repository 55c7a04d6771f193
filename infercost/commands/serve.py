"""`infercost serve`: load an OpenAI-compatible endpoint level by level, record and price each level."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

from rich.markup import escape

from infercost.errors import InputError
from infercost.flags import csv_list, positive
from infercost.numbers import flag
from infercost.version import __version__

from .common import add_price_flags, console, price_bases, print_costs, warn
from .history import after_run, check_store, history_flag

NAME = "serve"
HELP = "load an OpenAI-compatible endpoint (streamed), measure it level by level, price it"


def arguments(p) -> None:
    p.add_argument("url", help="the endpoint's base URL, e.g. http://127.0.0.1:8000 (the only address contacted)")
    p.add_argument("--model", "-m", required=True, help="the model name the endpoint serves")
    p.add_argument("--api", choices=("completions", "chat"), default="completions", help="/v1/completions or /v1/chat/completions")
    p.add_argument("--concurrency", type=csv_list, default=None, help="concurrency levels, e.g. 1,2,4 (default 1, 2, 4 ... --max-concurrency)")
    p.add_argument("--max-concurrency", type=positive(int), default=8, help="largest default concurrency level (default 8)")
    p.add_argument("--rate", type=csv_list, default=None, help="Poisson arrival rates (requests/s) instead of concurrency levels")
    p.add_argument("--input-tokens", default="128",
                   help="prompt length in --tokenizer's tokens (without one: in words), N or MIN-MAX (default 128)")
    p.add_argument("--output-tokens", default="128", help="max_tokens per request, N or MIN-MAX (default 128)")
    p.add_argument("--prompts", type=Path, default=None, help='JSONL file of {"prompt": "..."} instead of synthetic prompts')
    p.add_argument("--trace", type=Path, default=None, help="replay a Mooncake-format trace (JSONL: timestamp ms, input_length, "
                   "output_length, hash_ids) at its times, open loop, prompts sharing the prefix blocks it says they share")
    p.add_argument("--time-scale", type=positive(float), default=1.0, help="replay a trace's times multiplied by this (default 1)")
    p.add_argument("--sessions", type=positive(int), default=None,
                   help="N multi-turn sessions at once, closed loop in each: every turn's prompt is the conversation so far "
                        "(the server's replies included) plus a new part of --input-tokens")
    p.add_argument("--session-shape", choices=("chat", "agentic"), default="chat",
                   help="chat: a user part a turn; agentic: a long shared system prompt, many short turns (default chat)")
    p.add_argument("--turns", default=None, help="turns a session, N or MIN-MAX (default 3-8 chat, 8-20 agentic)")
    p.add_argument("--think-time", type=flag(low=0, low_open=False), default=2.0,
                   help="mean seconds between a reply and the next turn, exponential (default 2)")
    p.add_argument("--system-tokens", type=flag(integer=True, low=0, low_open=False), default=None,
                   help="the system prompt every session shares (default 0 chat, 2000 agentic)")
    p.add_argument("--trace-block-tokens", type=positive(int), default=512, help="tokens a trace's hash id stands for (Mooncake: 512)")
    p.add_argument("--salt", type=flag(integer=True, low=0, low_open=False), default=None,
                   help="salt of the prompts (a trace's block contents, the synthetic words, a word leading each file prompt); "
                        "default: new each run, so no run finds another's prompts in the engine's prefix cache")
    p.add_argument("--no-salt", action="store_true",
                   help="send prompts as they are (the same each run with the same --seed); the prefix cache's hits are not judged")
    p.add_argument("--launch", default=None, metavar="COMMAND",
                   help='start the engine first, e.g. "vllm serve meta-llama/Llama-3.1-8B-Instruct --port 8000": wait until '
                        "the URL answers, measure, then stop it and its children (its log is kept beside the results)")
    p.add_argument("--launch-timeout", type=positive(float), default=600.0,
                   help="seconds a launched engine may take to answer before the run ends (default 600)")
    p.add_argument("--repeats", type=positive(int), default=1,
                   help="run each level N times in turn; each run is its own record, and the spread across runs is printed")
    p.add_argument("--min-duration", type=positive(float), default=10.0, help="seconds each level runs at least (default 10)")
    p.add_argument("--min-requests", type=positive(int), default=20, help="requests each level completes at least (default 20)")
    p.add_argument("--max-duration", type=positive(float), default=120.0, help="seconds after which a level stops (default 120)")
    p.add_argument("--warmup-requests", type=flag(integer=True, low=0, low_open=False), default=2,
                   help="requests sent before each level, recorded but not measured (default 2)")
    p.add_argument("--timeout", type=positive(float), default=60.0, help="seconds a request may take (default 60)")
    p.add_argument("--slo", default=None, help="goodput target, e.g. ttft=500ms,tpot=50ms")
    p.add_argument("--tokenizer", default=None, help="tokenizer.json (or its folder) to count tokens when the server sends no usage")
    p.add_argument("--api-key-env", default=None, help="environment variable holding the API key (never written anywhere)")
    p.add_argument("--no-ignore-eos", action="store_true", help="do not ask the server to ignore EOS")
    p.add_argument("--kernel-model", default=None, help="infercost's name of the served model (e.g. llama-3.1-8b), to set "
                   "the engine beside the kernels' decode of it in reports")
    p.add_argument("--device", default="unknown", help="the accelerator behind the endpoint, e.g. 'NVIDIA H200' (for prices)")
    p.add_argument("--device-kind", choices=("gpu", "tpu", "cpu"), default="gpu", help="what kind of device serves (default gpu)")
    p.add_argument("--devices", type=positive(int), default=1,
                   help="how many of them the engine uses (default 1): a price row's share counts them")
    p.add_argument("--seed", type=flag(integer=True, low=0, low_open=False), default=0, help="seed of the prompts (default 0)")
    p.add_argument("--out", "-o", type=Path, default=None, help="results file (default results/serve-<time>-<host>.jsonl)")
    add_price_flags(p)
    history_flag(p)


def run(args) -> int:
    from infercost.bench import serving
    from infercost.bench.records import results_path
    url = serving.check_url(args.url)
    serving.api_key(args.api_key_env)  # a named variable that is unset is an error; its value a secret
    counter = serving.Counter(args.tokenizer) if args.tokenizer else None  # a broken one refused before any request
    bases = price_bases(args, cpu=args.device_kind == "cpu")
    check_store(args.history)
    limits = dict(min_duration_s=args.min_duration, min_requests=args.min_requests,
                  warmup_requests=args.warmup_requests, max_duration_s=args.max_duration)
    import secrets
    if args.no_salt and args.salt is not None:
        raise InputError("give --salt or --no-salt, not both")
    salt = None if args.no_salt else args.salt if args.salt is not None else secrets.randbelow(1 << 32)
    if args.sessions:
        if args.trace or args.concurrency or args.rate or args.prompts:
            raise InputError("--sessions builds its own prompts and arrivals: give it without --trace, --concurrency, "
                             "--rate or --prompts")
        agentic = args.session_shape == "agentic"
        work = serving.Sessions(args.sessions, serving.span(args.turns or ("8-20" if agentic else "3-8"), "--turns"),
                                args.think_time, args.session_shape,
                                args.system_tokens if args.system_tokens is not None else (2000 if agentic else 0),
                                serving.span(args.input_tokens, "--input-tokens"),
                                serving.span(args.output_tokens, "--output-tokens"), salt or 0, counter, args.seed)
        levels = [serving.Level("sessions", args.sessions, min_duration_s=0.0, min_requests=1,
                                warmup_requests=args.warmup_requests, max_duration_s=float("inf"))]
    elif args.trace:
        if args.concurrency or args.rate or args.prompts:
            raise InputError("--trace sets the arrivals and prompts: give it without --concurrency, --rate or --prompts")
        trace = serving.read_trace(args.trace, args.trace_block_tokens)
        work = serving.TracePrompts(trace, args.trace_block_tokens, counter, salt or 0, serving.trace_name(args.trace))
        levels = [serving.trace_level(trace, args.time_scale, args.warmup_requests)]
    else:
        levels = serving.plan_levels(args.concurrency, args.rate, args.max_concurrency, **limits)
        work = serving.Prompts(serving.span(args.input_tokens, "--input-tokens"),
                               serving.span(args.output_tokens, "--output-tokens"),
                               serving.read_prompts(args.prompts) if args.prompts else None, args.seed, counter, salt)
    levels = serving.repeated(levels, args.repeats)
    ep = serving.Endpoint(url, args.model, args.api, args.api_key_env, args.timeout, not args.no_ignore_eos, args.tokenizer,
                          args.devices)
    slo = serving.parse_slo(args.slo)
    path = results_path(args.out, False, kind="serve")
    engine = serving.Engine(args.launch, url, path.with_suffix(".engine.log"), args.launch_timeout) \
        if args.launch is not None else None
    with engine or nullcontext():
        if engine:
            console.print(escape(f"launched: {engine.identity()['command']} (ready after {engine.ready_s:.1f} s; "
                                 f"log {engine.log})"))
        return measure(args, ep, levels, work, slo, bases, path, engine.identity() if engine else None)


def measure(args, ep, levels, work, slo, bases, path, launched) -> int:
    from infercost.bench import serving
    from infercost.bench.records import Writer, run_provenance
    writer = Writer(path, warn)
    console.print(escape(f"infercost {__version__}: {len(levels)} levels against {ep.shown_url} ({args.model}, {work.describe()})"))

    def on_level(r):
        m, p = r["metrics"], r["case"]["params"]
        line = (f"{m['output_tokens_per_s']:.4g} output tok/s, TTFT {m['ttft_s'] * 1e3:.3g} ms, TPOT "
                f"{m['tpot_s'] * 1e3:.3g} ms, {m['requests_ok']} ok / {m['requests_failed']} failed"
                if r["status"] == "ok" else f"{r['status']}: {'; '.join(r['reasons'])}")
        run = f" (run {p['repeat']} of {p['repeats']})" if p.get("repeats") else ""
        console.print(escape(f"{p['mode']} {p['level']:g}{run}: {line}"))

    try:
        records = serving.run(ep, levels, work, slo, writer, run_provenance(args.seed), args.device, args.device_kind,
                              on_level, args.kernel_model, launched)
    finally:
        writer.close()
    if args.repeats > 1:
        print_repeats(records)
    if bases:
        print_costs(records, bases)
    console.print(escape(f"results: {path}"))
    return after_run(args.history, path, bases, args.pricing) if args.history else 0


def print_repeats(records: list[dict]) -> None:
    """Each level's output tokens/s across its runs: mean, range, 95% interval of the mean."""
    from infercost.bench.serving.metrics import across_repeats
    by_level: dict = {}
    for r in records:
        p = r["case"]["params"]
        by_level.setdefault((p["mode"], p["level"]), []).append(r)
    for (mode, level), runs in by_level.items():
        rates = [r["metrics"]["output_tokens_per_s"] for r in runs if r["status"] == "ok"]
        if not rates:
            console.print(escape(f"{mode} {level:g}: no valid run of {len(runs)}"))
            continue
        a = across_repeats(rates)
        ci = f", 95% interval of the mean {a['ci95'][0]:.4g}-{a['ci95'][1]:.4g}" if a["ci95"] else ""
        console.print(escape(f"{mode} {level:g} across {a['n']} valid runs of {len(runs)}: output tok/s mean "
                             f"{a['mean']:.4g}, range {a['min']:.4g}-{a['max']:.4g}{ci}"))

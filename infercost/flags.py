"""The command line's flags: every subcommand's arguments, their types and defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

from infercost.version import __version__
from infercost.errors import InputError
from infercost.numbers import flag


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        # No abbreviations: a mistyped flag (`--token SECRET`) must not silently become another
        # (`--tokenizer`), and is refused naming it.
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str):  # argparse's own errors, made one line like ours
        raise InputError(message)


def csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def positive(kind):
    """A finite number above zero (a whole number for int)."""
    return flag(integer=kind is int)


def build_parser() -> Parser:
    from infercost.bench.backend import NAMES
    from infercost.bench.plan import SUITES, WORKLOADS
    from infercost.kernels.dtypes import DTYPES

    parser = Parser(prog="infercost", description="What does a token cost on this hardware?")
    parser.add_argument("--version", action="version", version=f"infercost {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    sub.add_parser("backends", help="list the backends and whether each can run here")

    run = sub.add_parser("run", help="measure every available backend (default: the quick suite)")
    run.add_argument("--backend", "-b", action="append", type=csv_list, default=[],
                     help=f"backends to run, repeatable or comma-separated ({', '.join(NAMES)}); default: all available")
    run.add_argument("--workload", "-w", action="append", type=csv_list, default=[],
                     help=f"workloads to run ({', '.join(WORKLOADS)}); default: the suite's")
    run.add_argument("--dtype", "-d", action="append", type=csv_list, default=[],
                     help=f"dtypes ({', '.join(DTYPES)}); default: the suite's")
    run.add_argument("--suite", "-s", default="quick", help=f"named suite ({', '.join(SUITES)}); default quick")
    run.add_argument("--shape", action="append", default=[],
                     help="explicit matmul shape MxNxK (repeatable); replaces the suite's shapes")
    run.add_argument("--model", "-m", action="append", type=csv_list, default=[],
                     help="transformer cases for these models (a name or a config.json); replaces the suite's")
    run.add_argument("--batch", action="append", type=csv_list, default=[], help="batch sizes for --model (default 1)")
    run.add_argument("--tokens", action="append", type=csv_list, default=[],
                     help="prompt length (prefill) and context length (decode) for --model (default 128)")
    run.add_argument("--devices", type=positive(int), default=None,
                     help="split each transformer case over N devices, tensor parallel")
    run.add_argument("--mesh", default=None, help="a device layout, e.g. tp=4,dp=2 (tensor and data parallel)")
    run.add_argument("--quant", choices=("int8", "fp8"), default=None,
                     help="quantize the transformer cases' weights: int8 (per-channel, weight-only) or fp8 (e4m3, "
                          "per-channel scales; only on devices with native fp8); matmul cases are left out")
    run.add_argument("--kv-cache", choices=("int8",), default=None,
                     help="hold the transformer cases' KV cache in int8 (a float32 scale per head and position)")
    run.add_argument("--weights", default=None, help="safetensors file or folder with Hugging Face names (default: seeded random weights)")
    run.add_argument("--tf32", action="store_true", help="allow TF32 for float32 matmuls on CUDA GPUs")
    run.add_argument("--repeats", type=positive(int), default=None, help="minimum timed blocks per case (default 10)")
    run.add_argument("--min-time", type=positive(float), default=None, help="minimum seconds of timing per case (default 1)")
    run.add_argument("--warmup", type=positive(float), default=None, help="warm-up seconds per case (default 1)")
    run.add_argument("--threads", type=positive(int), default=None, help="CPU threads for CPU backends (default: all usable CPUs)")
    run.add_argument("--seed", type=flag(integer=True, low=0, low_open=False, high=2**32, high_open=True), default=0,
                     help="seed of the input data (default 0)")
    run.add_argument("--out", "-o", type=Path, default=None, help="results file (JSON Lines); default results/run-<time>-<host>.jsonl")
    run.add_argument("--resume", action="store_true", help="skip cases already recorded in --out (default: the newest file in results/)")
    run.add_argument("--case-timeout", type=positive(float), default=600.0, help="seconds before a case is abandoned (default 600)")
    add_price_flags(run)
    run.add_argument("--detect-instance", action="store_true",
                     help="ask the cloud's instance-metadata service which instance this is, to price the run "
                          "(off by default; also INFERCOST_DETECT_INSTANCE=1)")

    cost = sub.add_parser("cost", help="re-price stored results without re-running them")
    cost.add_argument("results", nargs="+", help="result files or folders")
    add_price_flags(cost)
    cost.add_argument("--blend", default="3:1", help="input:output token ratio of the blended price (default 3:1)")
    cost.add_argument("--max-tpot-ms", type=positive(float), default=None,
                      help="also show the cheapest batch whose time per output token meets this limit")

    est = sub.add_parser("estimate", help="roofline estimate for a model on catalog hardware (an estimate, not a measurement)")
    est.add_argument("--model", "-m", required=True, help="model name or config.json")
    est.add_argument("--accelerator", "-a", required=True, help="a catalog name or a device name, e.g. 'TPU v5e', 'NVIDIA H100 80GB HBM3'")
    est.add_argument("--chips", type=positive(int), default=1)
    est.add_argument("--batch", type=positive(int), default=1)
    est.add_argument("--context", type=positive(int), default=2048)
    est.add_argument("--prompt", type=positive(int), default=None, help="prompt length for prefill (default: the context)")
    est.add_argument("--dtype", default="bfloat16", help="float32, bfloat16, float16, fp8 or int8: compute, and "
                     "weights and KV cache unless --quant / --kv-cache say otherwise")
    est.add_argument("--quant", choices=("int8", "fp8"), default=None, help="weights stored in int8 or fp8")
    est.add_argument("--kv-cache", choices=("int8", "fp8"), default=None, help="KV cache stored in int8 or fp8")
    est.add_argument("--mfu", type=flag(high=1), default=1.0, help="scale the compute ceiling by a measured MFU (0-1]")
    est.add_argument("--mbu", type=flag(high=1), default=1.0, help="scale the bandwidth ceiling by a measured MBU (0-1]")
    est.add_argument("--price-per-chip-hour", type=positive(float), default=None, help="USD per chip-hour for the floor $/M tokens")
    est.add_argument("--from-results", nargs="+", default=None, metavar="RESULTS",
                     help="scale by the best MFU (prefill) and MBU (decode) measured in these results")

    rep = sub.add_parser("report", help="Markdown and HTML report with figures, plus CSV and Parquet, from result files")
    rep.add_argument("results", nargs="+", help="result files or folders (from one or many machines)")
    rep.add_argument("--out", "-o", type=Path, required=True, help="folder to write the report to")
    add_price_flags(rep)
    rep.add_argument("--blend", default="3:1", help="input:output token ratio of the blended price (default 3:1)")
    rep.add_argument("--min-user-tps", type=positive(float), default=20.0,
                     help="fleet league table: the slowest per-user speed (tokens/s) a batch may give (default 20)")

    cmp = sub.add_parser("compare", help="compare two result sets case by case; exit 1 if any case got slower beyond --threshold")
    cmp.add_argument("base", help="baseline results (file or folder)")
    cmp.add_argument("new", help="new results (file or folder)")
    cmp.add_argument("--threshold", default="5%", help="change that counts, e.g. 5%% (default 5%%)")

    sv = sub.add_parser("serve", help="load an OpenAI-compatible endpoint (streamed), measure it level by level, price it")
    sv.add_argument("url", help="the endpoint's base URL, e.g. http://127.0.0.1:8000 (the only address contacted)")
    sv.add_argument("--model", "-m", required=True, help="the model name the endpoint serves")
    sv.add_argument("--api", choices=("completions", "chat"), default="completions", help="/v1/completions or /v1/chat/completions")
    sv.add_argument("--concurrency", type=csv_list, default=None, help="concurrency levels, e.g. 1,2,4 (default 1, 2, 4 ... --max-concurrency)")
    sv.add_argument("--max-concurrency", type=positive(int), default=8, help="largest default concurrency level (default 8)")
    sv.add_argument("--rate", type=csv_list, default=None, help="Poisson arrival rates (requests/s) instead of concurrency levels")
    sv.add_argument("--input-tokens", default="128", help="prompt length in words, N or MIN-MAX (default 128)")
    sv.add_argument("--output-tokens", default="128", help="max_tokens per request, N or MIN-MAX (default 128)")
    sv.add_argument("--prompts", type=Path, default=None, help='JSONL file of {"prompt": "..."} instead of synthetic prompts')
    sv.add_argument("--min-duration", type=positive(float), default=10.0, help="seconds each level runs at least (default 10)")
    sv.add_argument("--min-requests", type=positive(int), default=20, help="requests each level completes at least (default 20)")
    sv.add_argument("--max-duration", type=positive(float), default=120.0, help="seconds after which a level stops (default 120)")
    sv.add_argument("--warmup-requests", type=flag(integer=True, low=0, low_open=False), default=2,
                    help="requests sent before each level, recorded but not measured (default 2)")
    sv.add_argument("--timeout", type=positive(float), default=60.0, help="seconds a request may take (default 60)")
    sv.add_argument("--slo", default=None, help="goodput target, e.g. ttft=500ms,tpot=50ms")
    sv.add_argument("--tokenizer", default=None, help="tokenizer.json (or its folder) to count tokens when the server sends no usage")
    sv.add_argument("--api-key-env", default=None, help="environment variable holding the API key (never written anywhere)")
    sv.add_argument("--no-ignore-eos", action="store_true", help="do not ask the server to ignore EOS")
    sv.add_argument("--kernel-model", default=None, help="infercost's name of the served model (e.g. llama-3.1-8b), to set "
                    "the engine beside the kernels' decode of it in reports")
    sv.add_argument("--device", default="unknown", help="the accelerator behind the endpoint, e.g. 'NVIDIA H200' (for prices)")
    sv.add_argument("--device-kind", choices=("gpu", "tpu", "cpu"), default="gpu", help="what kind of device serves (default gpu)")
    sv.add_argument("--seed", type=flag(integer=True, low=0, low_open=False), default=0, help="seed of the prompts (default 0)")
    sv.add_argument("--out", "-o", type=Path, default=None, help="results file (default results/serve-<time>-<host>.jsonl)")
    add_price_flags(sv)

    ing = sub.add_parser("ingest", help="read pytest-benchmark JSON into infercost results")
    ing.add_argument("json", type=Path, help="the file pytest --benchmark-json wrote")
    ing.add_argument("--out", "-o", type=Path, required=True, help="results file to append to")

    fl = sub.add_parser("fleet", help="the same suite on many cloud instances through SkyPilot: plan, launch, status, collect")
    fsub = fl.add_subparsers(dest="fleet_command", required=True, metavar="{plan,launch,status,collect}")
    fp = fsub.add_parser("plan", help="write one SkyPilot task per instance and print the fleet's estimated cost")
    fp.add_argument("--instances", required=True, help="comma-separated provider:instance_type price rows, "
                                                       "e.g. aws:p5en.48xlarge,gcp:tpu-v6e-8 (see `infercost prices`)")
    fp.add_argument("--suite", default="llm", help="the suite every instance runs (default llm)")
    fp.add_argument("--spot", action="store_true", help="spot instances (default on-demand)")
    fp.add_argument("--region", help="region of the price rows (default: each row's first)")
    fp.add_argument("--bucket", help="bucket the results are written to (default: a new infercost-fleet-<date>-<random>)")
    fp.add_argument("--prices", action="append", default=[], help="your own price table(s)")
    fp.add_argument("--out", "-o", type=Path, default=Path("fleet"), help="folder for the tasks (default ./fleet)")
    fla = fsub.add_parser("launch", help="launch every task of a plan as a SkyPilot managed job")
    fla.add_argument("folder", type=Path, help="the plan's folder")
    fst = fsub.add_parser("status", help="the fleet's managed jobs")
    fst.add_argument("folder", type=Path, nargs="?", help="the plan's folder (default: every infercost job)")
    fco = fsub.add_parser("collect", help="gather the tasks' result files into FOLDER/collected, one record per case")
    fco.add_argument("folder", type=Path, help="the plan's folder")
    fco.add_argument("--from", dest="source", type=Path, help="where the bucket was synced (default FOLDER/results)")

    pr = sub.add_parser("prices", help="list price rows, or import a SkyPilot catalog CSV")
    pr.add_argument("--from-skypilot", action="store_true",
                    help="read the catalogs an installed SkyPilot has fetched into a new dated table, after showing "
                         "how they differ from the current one")
    pr.add_argument("--import-skypilot", metavar="CSV", help="convert a SkyPilot vms.csv into infercost's format")
    pr.add_argument("--provider", help="provider of the imported catalog (aws, gcp, azure, ...)")
    pr.add_argument("--as-of", help="date the imported catalog was read (YYYY-MM-DD)")
    pr.add_argument("--out", "-o", type=Path, help="where to write the imported table")
    pr.add_argument("--prices", action="append", default=[], help="extra price table(s) to list")
    pr.add_argument("filter", nargs="?", default="", help="show rows whose provider:instance contains this")
    return parser


def add_price_flags(p) -> None:
    p.add_argument("--instance", action="append", default=None,
                   help="price row provider:instance_type, e.g. gcp:tpu-v6e-8 (see `infercost prices`); repeat to give "
                        "a GPU/TPU instance for accelerator results and a CPU instance for CPU results")
    p.add_argument("--pricing", default="on-demand", help="on-demand, spot, 1-year, 3-year or owned (default on-demand)")
    p.add_argument("--region", help="region of the price row (default: the first listed)")
    p.add_argument("--prices", action="append", default=[], help="your own price table(s), same format as hardware/prices.csv")
    p.add_argument("--any-device", action="store_true",
                   help="price results from a device other than the --instance row's accelerator (the output says so)")
    p.add_argument("--price-per-hour", type=positive(float), default=None, help="USD per hour of the machine, instead of a price row")
    p.add_argument("--accelerators", type=flag(integer=True, low=0, low_open=False), default=None,
                   help="accelerators the --price-per-hour or --owned price covers (default 1; 0 for a CPU machine)")
    p.add_argument("--owned", type=positive(float), default=None, metavar="USD",
                   help="owned hardware: its purchase price (with --years, --power-w and --kwh-price)")
    p.add_argument("--years", type=positive(float), default=4.0, help="amortisation years for --owned (default 4)")
    p.add_argument("--power-w", type=positive(float), default=None, help="power draw in watts for --owned")
    p.add_argument("--kwh-price", type=positive(float), default=None, help="electricity USD per kWh for --owned")



def join_negative_values(argv: list[str]) -> list[str]:
    """`--shape -4x4x4` would read as an unknown option; keep it as --shape's value so the
    error can say what is wrong with it."""
    out = []
    for token in argv:
        if token.startswith("--") and token.endswith("=--"):  # argparse would drop the "--" and use the default
            raise InputError(f"argument {token[:-3]}: '--' is not a value")
        if out and out[-1] == "--shape" and token.startswith("-") and token[1:2].isdigit():
            out[-1] = f"--shape={token}"
        else:
            out.append(token)
    return out

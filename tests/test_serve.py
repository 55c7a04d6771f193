"""`infercost serve` against a real OpenAI-compatible server: `transformers serve` on 127.0.0.1
with a tiny random Llama and a tokenizer built here (nothing downloaded). A small in-process stub
is used only for faults a real server will not produce on demand (a 500 mid-stream, a malformed
chunk, a redirect) and to see the headers a request carries."""

import asyncio
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from infercost.bench import serving as serve

from conftest import loopback_server

pytest.importorskip("fastapi", reason="transformers serve needs transformers[serving]")
TRANSFORMERS = shutil.which("transformers", path=str(Path(sys.executable).parent)) or shutil.which("transformers")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_model(folder: Path) -> None:
    """A 2-layer random Llama and a word-level tokenizer: "w0" ... "w252" are one token each."""
    import transformers as tf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    words = ["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(253)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    fast.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    fast.save_pretrained(folder)
    cfg = tf.LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=1, eos_token_id=None)  # no EOS: every request runs to max_tokens
    tf.LlamaForCausalLM(cfg).save_pretrained(folder)


def start_server(folder: Path, cpus: set | None = None) -> tuple[subprocess.Popen, str]:
    """`transformers serve` of the model folder on 127.0.0.1 (on `cpus` only, when given)."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if cpus:
        env["OMP_NUM_THREADS"] = str(len(cpus))
    proc = subprocess.Popen([TRANSFORMERS, "serve", str(folder), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
                            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    url = f"http://127.0.0.1:{port}"
    import httpx
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "transformers serve exited"
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError("transformers serve did not start")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    make_model(folder)
    return folder


@pytest.fixture(scope="module")
def server(model_dir):
    proc, url = start_server(model_dir)
    yield url, str(model_dir)
    stop(proc)


def level(mode="concurrency", value=2, duration=1.5, requests=8):
    return serve.Level(mode, value, min_duration_s=duration, min_requests=requests, warmup_requests=1, max_duration_s=30)


@pytest.mark.slow
def test_a_level_counts_exactly_the_tokens_the_server_returned(server, model_dir):
    url, model = server
    ep = serve.Endpoint(url, model, timeout_s=30)
    counter = serve.Counter(str(model_dir))
    asyncio.run(serve.probe(ep, counter))
    requests, start, end = asyncio.run(serve.run_level(ep, level(value=2), serve.Prompts((4, 8), (6, 10)), counter))
    measured = [r for r in requests if not r.warmup]
    assert len(measured) >= 8 and all(r.ok for r in requests)
    for r in measured:
        # The count is the server's usage, and with no EOS it is exactly what was asked (the tokenizer
        # over the returned text is no check of it: a random model's tokens, decoded and encoded
        # again, can split into more or merge into fewer). A chunk carries one token or more
        # (transformers 5.25 sends its last few together), so chunks never outnumber the tokens.
        assert r.output_tokens == r.max_tokens
        assert 0 < len(r.chunks) <= r.output_tokens and counter.count("".join(r.text)) > 0
        assert 0 < r.ttft < r.e2e
        assert r.clock == "written"  # TTFT and end-to-end counted from the request's first byte on the wire
    metrics, stats, findings = serve.summarize_level(requests, start, end, {})
    assert metrics["output_tokens"] == sum(r.output_tokens for r in measured)
    # Little's law: requests in flight = throughput x latency, about the concurrency asked for.
    assert metrics["mean_in_flight"] == pytest.approx(2, rel=0.2)
    assert stats["ttft_s"]["p50"] <= stats["ttft_s"]["p90"] and stats["e2e_s"]["p50"] > stats["ttft_s"]["p50"]
    if stats["ttft_s"]["n"] < 100:  # a p99 only from 100 requests or more (a fast level may reach them)
        assert stats["ttft_s"]["p99"] is None and "at least 100 requests" in stats["ttft_s"]["p99_refused"]
    else:
        assert stats["ttft_s"]["p99"] >= stats["ttft_s"]["p90"] and "p99_refused" not in stats["ttft_s"]


@pytest.mark.slow
def test_a_concurrency_sweep_writes_priced_records(server, tmp_path):
    url, model = server
    out = tmp_path / "serve.jsonl"
    proc = subprocess.run([sys.executable, "-m", "infercost.cli", "serve", url, "--model", model, "--concurrency", "1,2",
                           "--min-duration", "1.5", "--min-requests", "8", "--warmup-requests", "1",
                           "--input-tokens", "6", "--output-tokens", "8", "--slo", "ttft=2s,tpot=1s", "--tokenizer", model,
                           "--repeats", "2", "--price-per-hour", "2", "--out", str(out), "--history", str(tmp_path / "h.duckdb")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(l) for l in out.read_text().splitlines()]
    assert [(r["case"]["params"]["level"], r["case"]["params"]["repeat"]) for r in records] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert "history " in proc.stdout and "4 records added" in proc.stdout  # every level's run, in the history
    assert all(r["settings"]["loop"] == "closed" for r in records)
    for level in (1, 2):  # the spread across a level's runs is printed (each of its valid runs counted)
        valid = sum(r["status"] == "ok" for r in records if r["case"]["params"]["level"] == level)
        assert (f"concurrency {level} across {valid} valid runs of 2" in proc.stdout) == (valid > 0), proc.stdout
    for r in records:
        # each measured request's own figures; prompts cut to 6 of the tokenizer's tokens, and the
        # server (the tiny model has no chat template to add its own) counted exactly those
        per = r["requests"]
        assert len(per["ttft_s"]) == r["metrics"]["requests_ok"] + r["metrics"]["requests_failed"]
        assert r["case"]["params"]["input"].startswith("6 tokens")
        assert set(per["prompt_tokens"]) == {6} and set(per["output_tokens"]) == {8}
        assert r["case"]["workload"] == "serve" and r["case"]["engine"]["server"] == "uvicorn"
        assert model in r["case"]["engine"]["models"]
        assert r["metrics"]["warmup_requests"] == 1 and r["metrics"]["requests_failed"] == 0
        # transformers serve exposes no prefix-cache counters: the record says so, and invents no hit rate
        assert "prefix_cache_hit_rate" not in r["metrics"] and "/metrics" in r["metrics"]["prefix_cache"]
        # A level is ok, or (a neighbour's burst slowed its first half) invalid for climbing alone, and
        # then reports no throughput; that a steady level reads steady is held by the waves test below.
        climbed = r["status"] == "invalid" and r["reasons"] and all("climbing" in x for x in r["reasons"])
        assert r["status"] == "ok" or climbed, r["reasons"]
        if climbed:
            assert r["metrics"]["output_tokens_per_s"] is None and r["metrics"]["goodput_requests_per_s"] is None
        else:  # under a generous SLO every request counts toward goodput
            assert r["metrics"]["goodput_requests_per_s"] == pytest.approx(r["metrics"]["requests_per_s"])
    assert ("$/M output" in proc.stdout) == any(r["status"] == "ok" for r in records)
    import infercost
    assert len(infercost.load_results(out)) == 4


def waves(starts, size: int, length: float) -> list:
    """Requests a batching server answers in waves: `size` requests start together at each start
    and stream 10 tokens, one chunk each, evenly over `length` seconds; all of a wave end together."""
    out = []
    for w in starts:
        chunks = [w + (i + 0.5) * length / 10 for i in range(10)]
        out += [serve.Request("p", 10, start=float(w), ttft=chunks[0] - w, e2e=chunks[-1] - w, chunks=list(chunks),
                              output_tokens=10) for _ in range(size)]
    return out


def test_a_level_served_in_waves_is_steady_and_one_that_speeds_up_is_climbing():
    # Steady: three waves of 6 back to back, 3 s each, over a window of 0-8 s. By hand, the tokens
    # that arrive in 0-4 s: wave 1's 60 and 3 chunks of wave 2 (18) = 78; in 4-8 s: wave 2's other
    # 42 and 7 chunks of wave 3 (42) = 84, +8% (below the 10% warning). Counted when requests end,
    # wave 1 (ends at 3 s) against waves 2 and 3 read +100%, and the level was thrown away.
    _, _, findings = serve.summarize_level(waves([0, 3, 6], 6, 3.0), 0.0, 8.0, {})
    assert not [r for _, r in findings if "climbing" in r]
    # Climbing: waves of 4 every second over 0-10 s, then 4 more in each of the last five: by
    # hand 200 tokens in the first half and 400 in the second, +100%.
    climbing = waves(range(10), 4, 1.0) + waves(range(5, 10), 4, 1.0)
    _, _, findings = serve.summarize_level(climbing, 0.0, 10.0, {})
    assert [(level, r) for level, r in findings if "climbing" in r] == [
        ("invalid", "throughput still climbing: second half +100% over the first")]


def test_the_throughput_interval_shows_how_the_rate_moved_even_when_every_request_has_one_length():
    # Every request streams 10 tokens. Two waves of 6 over a 6 s window: one chunk of 6 tokens in
    # each of the window's 20 slices of 0.3 s, so the rate (120 tokens / 6 s) has no spread to show.
    steady, _, _ = serve.summarize_level(waves([0, 3], 6, 3.0), 0.0, 6.0, {})
    assert steady["output_tokens_per_s"] == pytest.approx(20.0)
    assert steady["output_tokens_per_s_ci95_low"] == pytest.approx(20.0) == steady["output_tokens_per_s_ci95_high"]
    # Waves of 2 then 10: the same 120 tokens and rate, but 2 tokens a slice, then 10. Resampling
    # the requests (all alike) gave a zero-width interval; resampling the slices does not.
    moved, _, _ = serve.summarize_level(waves([0], 2, 3.0) + waves([3], 10, 3.0), 0.0, 6.0, {})
    assert moved["output_tokens_per_s"] == pytest.approx(20.0)
    assert moved["output_tokens_per_s_ci95_low"] < 20.0 < moved["output_tokens_per_s_ci95_high"]
    assert moved["output_tokens_per_s_ci95_high"] - moved["output_tokens_per_s_ci95_low"] > 4.0


@pytest.mark.slow
def test_a_server_killed_mid_level_gives_failed_requests_and_an_invalid_level(model_dir):
    proc, url = start_server(model_dir)
    ep = serve.Endpoint(url, str(model_dir), timeout_s=10)
    killer = threading.Timer(1.0, stop, args=(proc,))
    killer.start()
    try:
        requests, start, end = asyncio.run(serve.run_level(ep, level(value=2, duration=3, requests=10),
                                                           serve.Prompts((4, 4), (8, 8)), serve.Counter(None)))
    finally:
        killer.join()
        stop(proc)
    failed = [r for r in requests if not r.ok]
    assert failed and all(r.e2e is None for r in failed)  # a failed request is never timed as fast
    rec = serve.level_record(ep, level(), serve.Prompts(), requests, start, end, {}, {}, "unknown", "gpu")
    assert rec["status"] == "invalid" and rec["reasons"][0].startswith("errors:")
    assert rec["metrics"]["output_tokens_per_s"] is None


@pytest.mark.slow
def test_a_slow_server_hits_the_request_timeout_cleanly(server):
    url, model = server
    ep = serve.Endpoint(url, model, timeout_s=0.002, ignore_eos=False)
    requests, start, end = asyncio.run(serve.run_level(ep, level(value=1, duration=0.3, requests=3),
                                                       serve.Prompts((4, 4), (64, 64)), serve.Counter(None)))
    assert requests and all(r.error and r.error.startswith("timeout") for r in requests)
    metrics, _, findings = serve.summarize_level(requests, start, end, {})
    assert metrics["timeouts"] == metrics["requests_failed"] > 0 and findings[0][0] == "invalid"


class Quiet(http.server.BaseHTTPRequestHandler):
    """A loopback test server's handler: HTTP/1.1, no log lines, a body sent whole."""
    protocol_version = "HTTP/1.1"

    def send_body(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class Stub(Quiet):
    """Faults on demand, by the prompt: "fault500", "garbage", "redirect"; otherwise 3 good chunks."""
    seen: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Stub.seen.append(dict(self.headers))
        prompt = body.get("prompt", "")
        if prompt == "redirect":
            self.send_response(307)
            self.send_header("Location", "http://127.0.0.1:9/v1/completions")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        chunk = lambda text: f"data: {json.dumps({'choices': [{'index': 0, 'text': text}]})}\n\n".encode()
        self.wfile.write(chunk("a"))
        if prompt == "garbage":
            self.wfile.write(b"data: {not json\n\n")
        elif prompt == "fault500":
            self.wfile.write(b'data: {"error": {"code": 500, "message": "internal error"}}\n\n')
        else:
            self.wfile.write(chunk(" b") + chunk(" c"))
            self.wfile.write(f"data: {json.dumps({'choices': [], 'usage': {'completion_tokens': 3}})}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def do_GET(self):
        self.send_body(json.dumps({"data": [{"id": "stub", "owned_by": "test"}]}).encode())


@pytest.fixture
def stub():
    Stub.seen = []
    for _, url in loopback_server(Stub):
        yield url


@pytest.mark.parametrize("prompt,error", [("fault500", "error in the stream"), ("garbage", "JSONDecodeError"),
                                          ("redirect", "HTTP 307")])
def test_faults_mid_stream_are_failed_requests(stub, prompt, error):
    ep = serve.Endpoint(stub, "stub", timeout_s=5, ignore_eos=False)
    req = asyncio.run(_one(ep, serve.Request(prompt, 4)))
    assert not req.ok and error in req.error and req.e2e is None


async def _one(ep, req):
    async with serve.client.client_for(ep, 1) as client:
        return await serve.send(client, ep, req, serve.Counter(None))


def test_the_api_key_is_sent_but_never_written(stub, tmp_path):
    secret = "sk-test-" + "9" * 24
    out = tmp_path / "r.jsonl"
    env = {**os.environ, "MY_KEY": secret}
    proc = subprocess.run([sys.executable, "-m", "infercost.cli", "serve", stub, "--model", "stub", "--api-key-env", "MY_KEY",
                           "--concurrency", "1", "--min-duration", "0.2", "--min-requests", "3", "--warmup-requests", "0",
                           "--out", str(out), "--no-ignore-eos"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert any(h.get("Authorization") == f"Bearer {secret}" for h in Stub.seen)
    report = subprocess.run([sys.executable, "-m", "infercost.cli", "report", str(out), "--out", str(tmp_path / "rep")],
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    written = [out.read_text(), proc.stdout, proc.stderr, report.stdout, report.stderr]
    written += [p.read_bytes().decode("utf-8", "replace") for p in (tmp_path / "rep").iterdir() if p.suffix != ".png"]
    assert all(secret not in text for text in written)
    assert json.loads(out.read_text().splitlines()[0])["case"]["api_key_env"] == "MY_KEY"  # the name only


def test_bad_serve_input_is_one_line(tmp_path):
    for args, words in ((["ftp://x", "--model", "m"], "not an http"), (["http://127.0.0.1:9", "--model", "m", "--slo", "latency=1"], "--slo"),
                        (["http://127.0.0.1:9", "--model", "m", "--output-tokens", "9-3"], "backwards"),
                        (["http://127.0.0.1:9", "--model", "m", "--concurrency", "1", "--rate", "2"], "not both"),
                        (["http://127.0.0.1:9", "--model", "m", "--sessions", "2", "--rate", "2"], "--sessions builds"),
                        (["http://127.0.0.1:9", "--model", "m", "--sessions", "2", "--turns", "5-2"], "backwards"),
                        (["http://127.0.0.1:9", "--model", "m", "--salt", "3", "--no-salt"], "not both")):
        proc = subprocess.run([sys.executable, "-m", "infercost.cli", "serve", *args, "--out", str(tmp_path / "x.jsonl")],
                              capture_output=True, text=True, timeout=60)
        lines = [l for l in proc.stderr.splitlines() if l.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and words in lines[0], proc.stderr
        assert not (tmp_path / "x.jsonl").exists()


def test_the_report_sets_an_engine_beside_the_kernels_ceiling():
    from infercost.report.render import engine_rows
    device = "NVIDIA H200"

    def rec(workload, backend, batch, tps, **params):
        return {"status": "ok", "case": {"workload": workload, "backend": backend, "device": device,
                                         "params": {"model": "llama-3.1-8b", "batch": batch, **params},
                                         "engine": {"server": "vllm"}},
                "metrics": {"output_tokens_per_s": tps}}
    records = [rec("decode", "torch-cuda", 1, 180.0), rec("decode", "torch-cuda", 4, 1000.0),
               rec("decode", "torch-cuda", 16, 3000.0),
               rec("serve", "endpoint", 4, 500.0, model_name="x", mode="concurrency", level=4)]
    (row,) = engine_rows(records)
    # Concurrency 4 against the kernels' batch 4 (not 16, not 1): 500 / 1000 tok/s.
    assert row[4] == "torch-cuda b4" and row[-1] == "50%"


def small_trace(path: Path, block: int = 8) -> list[dict]:
    """Three conversations of three turns, each turn's prompt the last one's full blocks plus a
    block, and one token more in a partial block of its own (as Mooncake hashes a partial block):
    requests of one conversation share their first blocks, and every request shares block 0."""
    rows = []
    for conv in range(3):
        full = [0, 100 + conv]
        for turn in range(3):
            full = full + [1000 + conv * 10 + turn]
            rows.append({"timestamp": conv * 40 + turn * 150, "input_length": block * len(full) + 1,
                         "output_length": 4 + turn, "hash_ids": full + [5000 + conv * 10 + turn]})
    rows.sort(key=lambda r: r["timestamp"])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


@pytest.mark.slow
def test_a_trace_is_replayed_at_its_times_with_exactly_the_prefix_blocks_it_shares(server, tmp_path):
    url, model = server
    rows = small_trace(tmp_path / "t.jsonl")
    out = tmp_path / "serve.jsonl"
    proc = subprocess.run([sys.executable, "-m", "infercost.cli", "serve", url, "--model", model, "--trace",
                           str(tmp_path / "t.jsonl"), "--trace-block-tokens", "8", "--tokenizer", model,
                           "--warmup-requests", "1", "--salt", "7", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (rec,) = [json.loads(l) for l in out.read_text().splitlines()]
    p, m, per = rec["case"]["params"], rec["metrics"], rec["requests"]
    assert p["mode"] == "trace" and p["salt"] == 7 and p["trace"].startswith("t.jsonl sha256:")
    assert p["level"] == pytest.approx(9 / 0.38)  # 9 requests over the trace's 380 ms
    # the server's own count of every prompt is exactly the trace's input length
    assert sorted(per["prompt_tokens"]) == sorted(r["input_length"] for r in rows)
    assert sorted(per["output_tokens"]) == sorted(r["output_length"] for r in rows)
    # reuse the trace intends, by hand: turn 1 of each conversation repeats block 0 (after the first
    # conversation's), turn 2 its first three blocks, turn 3 its first four; 8 tokens a block
    reused = 8 * (2 + 3 * 3 + 3 * 4)  # turn 1: block 0 twice; turns 2 and 3 of three conversations
    total = sum(r["input_length"] for r in rows)
    assert m["intended_prefix_share"] == pytest.approx(reused / total)
    # open loop: each request left at its time (within a loaded 2-core machine's scheduling)
    assert len(per["lateness_s"]) == 9 and max(per["lateness_s"]) < 0.25 and min(per["lateness_s"]) > -1e-3
    assert m["schedule_lateness_p99_s"] == max(per["lateness_s"])


def test_the_prompts_of_a_trace_share_exactly_the_blocks_its_hash_ids_share(model_dir, tmp_path):
    from infercost.bench.serving.trace import TracePrompts, read_trace
    rows = small_trace(tmp_path / "t.jsonl")
    counter = serve.Counter(str(model_dir))
    trace = read_trace(tmp_path / "t.jsonl", 8)
    tokens = [counter.tok.encode(TracePrompts(trace, 8, counter, salt=3).request(t).prompt, add_special_tokens=False).ids
              for t in trace]
    for r, ids in zip(rows, tokens):
        assert len(ids) == r["input_length"]
    for a, ra in zip(tokens, rows):
        for b, rb in zip(tokens, rows):
            same = 0  # leading blocks the two share, in the trace
            while same < min(len(ra["hash_ids"]), len(rb["hash_ids"])) and ra["hash_ids"][same] == rb["hash_ids"][same]:
                same += 1
            n = min(8 * same, len(a), len(b))
            assert a[:n] == b[:n]
            if same < min(len(ra["hash_ids"]), len(rb["hash_ids"])):  # the first block they do not share differs
                assert a[8 * same:8 * same + 8] != b[8 * same:8 * same + 8]
    # another salt: other block contents, the same lengths (a second run finds nothing cached)
    other = TracePrompts(trace, 8, counter, salt=4).request(trace[0]).prompt
    assert other != TracePrompts(trace, 8, counter, salt=3).request(trace[0]).prompt


@pytest.mark.parametrize("line,words", [
    ('{"timestamp": 5, "input_length": 8, "output_length": 2}', "missing hash_ids"),
    ('{"timestamp": -1, "input_length": 8, "output_length": 2, "hash_ids": [1]}', "timestamp -1"),
    ('{"timestamp": 1, "input_length": 0, "output_length": 2, "hash_ids": []}', "input_length 0"),
    ('{"timestamp": 1, "input_length": 8, "output_length": 99999999, "hash_ids": [1]}', "output_length 99999999"),
    ('{"timestamp": 1, "input_length": 20, "output_length": 2, "hash_ids": [1]}', "1 hash_ids for 20 input tokens"),
    ('[1, 2]', "not an object"), ('{"timestamp": 1', "not JSON")])
def test_a_broken_trace_is_refused_in_one_line(tmp_path, line, words):
    (tmp_path / "t.jsonl").write_text('{"timestamp": 0, "input_length": 8, "output_length": 2, "hash_ids": [1]}\n' + line + "\n")
    proc = subprocess.run([sys.executable, "-m", "infercost.cli", "serve", "http://127.0.0.1:9", "--model", "m", "--trace",
                           str(tmp_path / "t.jsonl"), "--trace-block-tokens", "8", "--out", str(tmp_path / "x.jsonl")],
                          capture_output=True, text=True, timeout=60)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and words in lines[0] and "t.jsonl:2" in lines[0], proc.stderr
    assert not (tmp_path / "x.jsonl").exists()


def test_an_unsorted_trace_is_refused(tmp_path):
    from infercost.bench.serving.trace import read_trace
    from infercost.errors import InputError
    (tmp_path / "t.jsonl").write_text('{"timestamp": 10, "input_length": 8, "output_length": 2, "hash_ids": [1]}\n'
                                      '{"timestamp": 5, "input_length": 8, "output_length": 2, "hash_ids": [1]}\n')
    with pytest.raises(InputError, match="t.jsonl:2: timestamp 5 comes before"):
        read_trace(tmp_path / "t.jsonl", 8)


def test_latency_percentiles_carry_order_statistic_intervals_and_a_p99_needs_100_requests():
    from infercost.bench.stats import percentiles
    few = percentiles([float(i) for i in range(1, 21)])  # 20 values
    assert few["p99"] is None and few["p99_refused"] == "a p99 needs at least 100 requests; there were 20"
    # median of 20: n q = 10, half-width 1.96 sqrt(5) = 4.38: ranks floor(5.62) = 5 to ceil(14.38) + 1 = 16
    assert few["p50_ci95"] == [5.0, 16.0] and few["n"] == 20
    many = percentiles([float(i) for i in range(1, 1001)])  # 1..1000
    # p99: n q = 990, half-width 1.96 sqrt(9.9) = 6.17: ranks 983 to 998
    assert many["p99"] == pytest.approx(990.01) and many["p99_ci95"] == [983.0, 998.0]


def test_end_to_end_interactivity_and_the_spread_across_repeats_by_hand():
    reqs = []
    for i in range(10):  # e2e per output token: 0.1, 0.2, ... 1.0 s; p90 (numpy, linear) 0.91 s
        r = serve.Request("p", 10, start=0.0, ttft=0.05, e2e=float(i + 1), output_tokens=10)
        r.chunks = [0.05 + k * 0.01 for k in range(10)]
        reqs.append(r)
    metrics, _, _ = serve.summarize_level(reqs, 0.0, 10.0, {})
    assert metrics["e2e_interactivity_tokens_per_s"] == pytest.approx(1 / 0.91)
    from infercost.bench.serving.metrics import across_repeats
    a = across_repeats([10.0, 12.0, 14.0])  # mean 12, sd 2, t(2) = 4.303: 12 -+ 4.303 x 2 / sqrt 3
    assert a["mean"] == 12.0 and a["min"] == 10.0 and a["max"] == 14.0
    assert a["ci95"] == pytest.approx([12 - 4.303 * 2 / 3 ** 0.5, 12 + 4.303 * 2 / 3 ** 0.5])
    assert across_repeats([5.0])["ci95"] is None


@pytest.mark.slow
def test_an_engine_is_launched_measured_and_stopped_with_its_log_kept(model_dir, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    out = tmp_path / "serve.jsonl"
    launch = f"{TRANSFORMERS} serve {model_dir} --host 127.0.0.1 --port {port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "infercost.cli", "serve", url, "--model", str(model_dir), "--launch", launch,
                           "--launch-timeout", "120", "--concurrency", "2", "--min-duration", "1", "--min-requests", "4",
                           "--warmup-requests", "1", "--input-tokens", "6", "--output-tokens", "4", "--tokenizer",
                           str(model_dir), "--out", str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    (rec,) = [json.loads(l) for l in out.read_text().splitlines()]
    launched = rec["settings"]["launched"]
    assert launched["command"] == launch and launched["engine"] == "transformers" and launched["version"]
    assert launched["ready_after_s"] > 0 and launched["log"] == "serve.engine.log"
    assert (tmp_path / "serve.engine.log").stat().st_size > 0
    assert rec["metrics"]["requests_ok"] >= 4
    import httpx
    with pytest.raises(httpx.HTTPError):  # stopped: nothing answers on its port any more
        httpx.get(url + "/health", timeout=2)


@pytest.mark.parametrize("command,code,words", [
    ("no-such-engine-xyz --port 1", 2, "command not found"), ("", 2, "an empty command"), ("a 'b", 2, "cannot split"),
    (f"{sys.executable} -c \"import sys; print('cannot load weights'); sys.exit(3)\"", 1, "exited with status 3"),
    (f"{sys.executable} -c \"import time; time.sleep(60)\"", 1, "did not answer")])
def test_an_engine_that_cannot_start_ends_the_run_in_one_line_and_is_stopped(tmp_path, command, code, words):
    port = free_port()
    out = tmp_path / "serve.jsonl"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "infercost.cli", "serve", f"http://127.0.0.1:{port}", "--model", "m",
                           "--launch", command, "--launch-timeout", "3", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == code and len(lines) == 1 and words in lines[0], proc.stderr
    assert not out.exists()  # nothing measured from an engine that never answered
    assert time.monotonic() - t0 < 60  # the sleeping one was stopped at the time-out, not waited for
    if code == 1 and "exited" in words:
        assert "cannot load weights" in lines[0]  # the log's last lines say why


def test_ctrl_c_while_an_engine_starts_stops_it(tmp_path):
    marker = f"engine-marker-{os.getpid()}"
    proc = subprocess.Popen([sys.executable, "-m", "infercost.cli", "serve", f"http://127.0.0.1:{free_port()}", "--model", "m",
                             "--launch", f"{sys.executable} -c \"import time, sys; time.sleep(300)\" {marker}",
                             "--out", str(tmp_path / "s.jsonl")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a terminal's Ctrl-C (a
    # background shell starts its children with it ignored, and Python then raises no KeyboardInterrupt)
    # the engine's own command line (python -c ...), not infercost's, which holds the marker too
    found = lambda: subprocess.run(["pgrep", "-f", f"^\\S+ -c import time, sys; time.sleep\\(300\\) {marker}"],
                                   capture_output=True, text=True).stdout.split()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not found():
        time.sleep(0.2)
    assert found()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert proc.returncode == 130
    assert not found()  # no engine left behind


class CachingEngine(Quiet):
    """A loopback engine with a prefix cache over blocks of 4 words (a word is a token here), its
    counters exposed in Prometheus text by prometheus_client under vLLM's V1 names."""
    BLOCK = 4
    lock = threading.Lock()

    @classmethod
    def reset(cls):
        from prometheus_client import CollectorRegistry, Counter
        cls.registry = CollectorRegistry()
        cls.hits = Counter("vllm:prefix_cache_hits", "prefix cache hits, tokens", registry=cls.registry)
        cls.queries = Counter("vllm:prefix_cache_queries", "prefix cache queries, tokens", registry=cls.registry)
        cls.cached = set()

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        words = body["prompt"].split()
        with CachingEngine.lock:  # whole leading blocks already seen behind the same blocks are hits
            hit, k = 0, 0
            while (k + 1) * self.BLOCK <= len(words) and tuple(words[:(k + 1) * self.BLOCK]) in self.cached:
                hit, k = hit + self.BLOCK, k + 1
            for j in range(1, len(words) // self.BLOCK + 1):
                self.cached.add(tuple(words[:j * self.BLOCK]))
            self.hits.inc(hit)
            self.queries.inc(len(words))
        n = body["max_tokens"]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for _ in range(n):
            self.wfile.write(f"data: {json.dumps({'choices': [{'index': 0, 'text': ' t'}]})}\n\n".encode())
        usage = {"completion_tokens": n, "prompt_tokens": len(words)}
        self.wfile.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\ndata: [DONE]\n\n".encode())
        self.wfile.flush()

    def do_GET(self):
        from prometheus_client import generate_latest
        self.send_body(generate_latest(self.registry) if self.path == "/metrics" else
                       json.dumps({"data": [{"id": "cached", "owned_by": "test"}]}).encode())


@pytest.fixture
def caching_engine():
    CachingEngine.reset()
    for _, url in loopback_server(CachingEngine):
        yield url


def serve_run(url, tmp_path, name, *args):
    out = tmp_path / f"{name}.jsonl"
    proc = subprocess.run([sys.executable, "-m", "infercost.cli", "serve", url, "--model", "cached", "--warmup-requests", "0",
                           *args, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(l) for l in out.read_text().splitlines()]


def test_a_trace_gets_the_cache_hits_it_intends_and_a_second_run_on_a_warm_cache_is_invalid(caching_engine, tmp_path):
    small_trace(tmp_path / "t.jsonl", block=4)
    args = ["--trace", str(tmp_path / "t.jsonl"), "--trace-block-tokens", "4", "--salt", "11"]
    (first,) = serve_run(caching_engine, tmp_path, "first", *args)
    m = first["metrics"]
    # the engine's counters saw exactly the reuse the trace intends (its blocks are the engine's blocks)
    assert m["prefix_cache"] == "vllm counters" and m["intended_hit_rate"] == m["intended_prefix_share"]
    assert m["prefix_cache_hit_rate"] == pytest.approx(m["intended_prefix_share"], abs=0.02)
    assert first["status"] == "ok", first["reasons"]
    (again,) = serve_run(caching_engine, tmp_path, "again", *args)  # the same salt: every block already cached
    assert again["metrics"]["prefix_cache_hit_rate"] > 0.9 and again["status"] == "invalid"
    assert any("prefix cache served" in r and "above the" in r for r in again["reasons"])
    (fresh,) = serve_run(caching_engine, tmp_path, "fresh", *args[:-2])  # a new salt each run: nothing carried over
    assert fresh["status"] == "ok" and fresh["metrics"]["prefix_cache_hit_rate"] == pytest.approx(
        fresh["metrics"]["intended_prefix_share"], abs=0.02)


def test_synthetic_prompts_are_salted_each_run_and_unsalted_ones_are_not_judged(caching_engine, tmp_path):
    args = ["--concurrency", "2", "--min-duration", "0.2", "--min-requests", "10", "--input-tokens", "12",
            "--output-tokens", "2"]
    for name in ("one", "two"):  # two runs, the same --seed: salted, the second finds nothing cached
        (rec,) = serve_run(caching_engine, tmp_path, name, *args)
        # (a 0.2 s level against an instant engine may read as climbing: only the cache gate is judged here)
        assert rec["metrics"]["prefix_cache_hit_rate"] < 0.15 and not any("prefix cache" in r for r in rec["reasons"])
        assert ", salted (" in rec["case"]["params"]["input"]
    serve_run(caching_engine, tmp_path, "plain1", *args, "--no-salt")
    (rec,) = serve_run(caching_engine, tmp_path, "plain2", *args, "--no-salt")  # the same prompts again
    assert "not judged" in rec["metrics"]["prefix_cache"] and not any("prefix cache" in r for r in rec["reasons"])
    assert "not salted" in rec["case"]["params"]["input"]


@pytest.mark.slow
def test_sessions_grow_each_prompt_by_the_reply_and_report_ttft_by_turn(server, tmp_path):
    url, model = server
    out = tmp_path / "serve.jsonl"
    proc = subprocess.run([sys.executable, "-m", "infercost.cli", "serve", url, "--model", model, "--sessions", "2",
                           "--turns", "3", "--think-time", "0.05", "--system-tokens", "10", "--input-tokens", "6",
                           "--output-tokens", "4", "--tokenizer", model, "--warmup-requests", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (rec,) = [json.loads(l) for l in out.read_text().splitlines()]
    per, m = rec["requests"], rec["metrics"]
    assert rec["case"]["params"]["mode"] == "sessions" and rec["settings"]["loop"] == "closed within each session"
    assert sorted(zip(per["session"], per["turn"])) == [(s, t) for s in range(2) for t in (1, 2, 3)]
    by = {(s, t): i for i, (s, t) in enumerate(zip(per["session"], per["turn"]))}
    for s in range(2):
        assert per["prompt_tokens"][by[(s, 1)]] == 16  # the shared system prompt (10) and the first part (6)
        for t in (2, 3):  # the server read the last prompt, its reply and a new part of 6
            prev, now = by[(s, t - 1)], by[(s, t)]
            assert per["prompt_tokens"][now] == per["prefix_tokens"][now] + 6
            # the reply as text: as many tokens as were generated, fewer where the random model drew
            # special tokens, which stream no text
            assert per["prompt_tokens"][prev] < per["prefix_tokens"][now] <= per["prompt_tokens"][prev] + per["output_tokens"][prev]
    assert per["prefix_tokens"][by[(0, 1)]] == 0 and per["prefix_tokens"][by[(1, 1)]] == 10  # the system prompt, sent before
    assert m["intended_prefix_share"] == pytest.approx(sum(per["prefix_tokens"]) / sum(per["prompt_tokens"]))
    assert set(rec["stats"]["ttft_by_turn_s"]) == {"turn_1", "turn_2", "turn_3"} and m["ttft_growth"] > 0


def test_a_secret_in_the_launch_command_is_in_no_file_or_output(tmp_path):
    # An engine that prints its own command line (as vLLM prints its arguments) and fails to start.
    secret = "sk-launch-" + "7" * 20
    script = "import sys; print('args:', sys.argv); print({'api_key': sys.argv[-1]}); sys.exit(4)"
    out = tmp_path / "serve.jsonl"
    proc = subprocess.run([sys.executable, "-m", "infercost.cli", "serve", f"http://127.0.0.1:{free_port()}", "--model", "m",
                           "--launch", f"{sys.executable} -c \"{script}\" --api-key {secret}", "--launch-timeout", "5",
                           "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "exited with status 4" in proc.stderr
    log = (tmp_path / "serve.engine.log").read_text()
    assert "args:" in log and secret not in log and secret not in proc.stderr + proc.stdout

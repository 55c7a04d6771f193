"""Secrets never reach a file or a screen: a password in the serve URL, an API key (even one a hostile
server echoes back in error bodies, stream chunks, its model list and its Server header), a secret in
a flag of the command line. Every output and every file is searched for each planted secret, in the
forms a server could echo it (as given, URL-decoded, and as the basic-auth header carries it)."""

import base64
import http.server
import json
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import loopback_server
from infercost.cli import main
from infercost.redact import MASK, redact, redact_argv, register

# Characters a key or password can hold (one that needs quoting is quoted in the URL), after a
# marker that no output holds by itself (a secret "requests" would be found in every report).
SECRET = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789-_.~!$%^()", min_size=5,
                 max_size=40).map(lambda s: "Zq7" + s)
PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class Echo(http.server.BaseHTTPRequestHandler):
    """A hostile OpenAI-compatible server: every reply repeats the credentials it was sent."""
    protocol_version = "HTTP/1.1"
    calls = 0

    def log_message(self, *args):
        pass

    def creds(self) -> str:
        auth = self.headers.get("Authorization") or ""
        decoded = ""
        if auth.startswith("Basic "):
            decoded = base64.b64decode(auth[6:]).decode("utf-8", "replace")
        return f"{auth} {auth.split(' ')[-1]} {decoded}"

    def reply(self, status, body: bytes, kind="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Server", f"echo {self.creds()}"[:200].encode("latin-1", "replace").decode("latin-1"))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.reply(200, json.dumps({"data": [{"id": "m", "owned_by": self.creds()},
                                             {"id": self.creds()}]}).encode())

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Echo.calls += 1
        if Echo.calls % 3 == 0:  # every third request refused, the credentials in the refusal (long, to be cut)
            self.reply(401, ("x" * 150 + f" invalid credentials {self.creds()} " + "y" * 300).encode())
            return
        chunks = [{"choices": [{"text": f" {self.creds()}"}]} for _ in range(3)]
        chunks.append({"choices": [], "usage": {"completion_tokens": 3, "prompt_tokens": 4}})
        body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        self.reply(200, body.encode(), "text/event-stream")


@pytest.fixture(scope="module")
def echo_server():
    yield from loopback_server(Echo)


def forms(secret: str) -> list[str]:
    return [secret, quote(secret, safe=""), json.dumps(secret)[1:-1]]


def everything_written(capsys, folder: Path) -> str:
    captured = capsys.readouterr()
    files = "\n".join(p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*") if p.is_file())
    return captured.out + captured.err + files


def serve_and_refuse(capsys, folder, monkeypatch, url, user, password, key, flag_secret) -> str:
    """Everything one served run and one refused command line write, given these secrets."""
    authed = url.replace("http://", f"http://{quote(user, safe='')}:{quote(password, safe='')}@")
    monkeypatch.setenv("INFERCOST_TEST_KEY", key)
    argv = ["serve", authed, "--model", "m", "--concurrency", "2", "--min-requests", "6", "--min-duration", "0.01",
            "--warmup-requests", "1", "--output-tokens", "3", "--input-tokens", "4", "--api-key-env", "INFERCOST_TEST_KEY",
            "--out", str(folder / "serve.jsonl"), "--price-per-hour", "1"]
    monkeypatch.setattr(sys, "argv", ["infercost", *argv])
    assert main(None) == 0
    # and a refused command line that echoes a secret-named flag back (argparse's own message)
    monkeypatch.setattr(sys, "argv", ["infercost", "serve", authed, "--model", "m", "--token", flag_secret])
    assert main(None) == 2
    return everything_written(capsys, folder)


_ordinary: list[str] = []


@pytest.mark.slow
@PROPERTY
@given(user=SECRET, password=SECRET, key=SECRET, flag_secret=SECRET)
@example(user="Zq722222", password="Zq722222", key="Zq722222", flag_secret="Zq7timeout_")  # CI found it
def test_no_secret_given_to_serve_appears_in_any_output_or_file(capsys, tmp_path_factory, monkeypatch, echo_server,
                                                               user, password, key, flag_secret):
    _, url = echo_server
    if not _ordinary:  # what the same runs write with other secrets: a piece found there is ordinary text
        _ordinary.append(serve_and_refuse(capsys, tmp_path_factory.mktemp("serve"), monkeypatch, url,
                                          "Zq7uuuu", "Zq7pppp", "Zq7kkkk", "Zq7ffff"))
    folder = tmp_path_factory.mktemp("serve")
    text = serve_and_refuse(capsys, folder, monkeypatch, url, user, password, key, flag_secret)
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    for secret in (user, password, key, flag_secret, basic):
        for form in forms(secret):
            assert form not in text, (secret, form)
            # nor a piece of 8 characters or more (a message or a server cut it to length) that the
            # program does not write anyway (a secret "Zq7timeout_" holds "timeout_", a record's word)
            pieces = {form[i:i + 8] for i in range(len(form) - 7)}
            assert not [p for p in pieces if p in text and p not in _ordinary[0]], (secret, form)
    record = json.loads((folder / "serve.jsonl").read_text().splitlines()[0])
    assert record["case"]["params"]["endpoint"] == url.replace("http://", f"http://{MASK}@")
    assert MASK in record["provenance"]["command"] and record["failures"]  # the refusals are recorded, masked


def test_an_api_key_variable_that_is_unset_or_empty_is_refused(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("INFERCOST_NO_SUCH_KEY", raising=False)
    monkeypatch.setenv("INFERCOST_EMPTY_KEY", "")
    for name in ("INFERCOST_NO_SUCH_KEY", "INFERCOST_EMPTY_KEY"):
        code = main(["serve", "http://127.0.0.1:9", "--model", "m", "--api-key-env", name, "--out", str(tmp_path / "s.jsonl")])
        err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
        assert code == 2 and len(err) == 1 and name in err[0] and "not set" in err[0]
        assert not (tmp_path / "s.jsonl").exists()


@PROPERTY
@given(secret=SECRET, before=st.text(max_size=30), after=st.text(max_size=30),
       carrier=st.sampled_from(["url", "user-only url", "query", "flag", "flag=", "bearer", "registered"]))
def test_redact_masks_a_secret_wherever_it_stands(secret, before, after, carrier):
    text = {"url": f"http://someone:{secret}@host:8000/v1",
            "user-only url": f"https://{secret}@host/x",
            "query": f"https://host/x?a=1&api_key={secret}&b=2",
            "flag": f"infercost serve --password {secret} --tokens 4",
            "flag=": f"infercost serve --auth-token={secret}",
            "bearer": f"Authorization: Bearer {secret}",
            "registered": f"the server said: invalid key {secret}!"}[carrier]
    if carrier == "registered":
        register(secret)
    out = redact(f"{before} {text} {after}")
    assert secret not in out.replace(before, "").replace(after, "") and MASK in out


def test_redact_keeps_ordinary_text_and_flags_that_hold_no_secret(monkeypatch):
    import infercost.redact
    # none planted by the tests before: neither whole secrets nor their pieces (a random secret of an
    # earlier test once held "--tokens", and this line's flag was masked as a piece of it)
    monkeypatch.setattr(infercost.redact, "_registered", set())
    monkeypatch.setattr(infercost.redact, "_fragments", set())
    line = "infercost serve http://127.0.0.1:8000 --tokens 128 --max-tokens 4 --tokenizer t.json --api-key-env KEY"
    assert redact(line) == line
    assert redact_argv(["--password", "hunter22", "--tokens", "4"]) == ["--password", MASK, "--tokens", "4"]
    assert redact("check passed: IQR/median 0.12 >= 0.1; a basic step") == "check passed: IQR/median 0.12 >= 0.1; a basic step"


@PROPERTY
@given(secret=SECRET, lines=st.lists(st.text(max_size=40), max_size=4), at=st.integers(0, 4),
       carrier=st.sampled_from(["http://u:{}@h", "https://{}@h/x", "x?a=1&api_key={}", "--password {}",
                                "--auth-token={}", "--api-key-env=--token={}", "Authorization: Bearer {}",
                                "authorization: basic {}", "----secret {}"]))
def test_the_scan_of_a_whole_file_finds_every_line_the_line_scan_would(secret, lines, at, carrier):
    # A results file is scanned once (might_hold_secret) and its lines one by one only when that
    # finds something: it must never say no where one of its lines holds a secret.
    from infercost.redact import has_secret, might_hold_secret
    lines.insert(min(at, len(lines)), carrier.format(secret))
    for line in lines:
        if has_secret(line):
            assert might_hold_secret("\n".join(lines).encode()), line
    assert might_hold_secret("\n".join(lines).encode())

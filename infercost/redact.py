"""Secrets never leave the process: everything infercost writes or prints passes through here.

Three kinds of secret are removed from any text:
- credentials in a URL (`scheme://user:password@host`, or a token as the user name): the whole
  user part becomes `***`, whatever its length;
- the values of URL query parameters and command-line flags whose names say they hold a secret
  (key, token, secret, password, auth, credential, signature, ...);
- every value registered with `register()` (the API key read from the environment), wherever it
  appears: an error body that echoes it, a stream chunk, a traceback; and any part of one
  FRAGMENT characters long or longer (a server that cuts its echo leaves a fragment).

Text is redacted before it is cut to length, so a cut never leaves part of a secret behind.
"""

from __future__ import annotations

import re
import sys
from contextlib import contextmanager

MASK = "***"
# A secret value shorter than this is not searched for inside other text (it would mask ordinary
# words); URL credentials and secret-named fields are masked whatever their length.
MIN_REGISTERED = 6
FRAGMENT = 8
# (--tokens, --max-tokens, --tokenizer, --sessions and --author hold no secret.)
SECRET_NAME = (r"[A-Za-z0-9_.-]*(?:key|token(?!s|izer)|secret|passw(?:or)?d|pwd|auth(?!or)|credential|signature|sig"
               r"|session(?!s)|cookie)[A-Za-z0-9_.-]*")
# Flags that name where a secret is, not the secret: kept as they are.
NOT_SECRET_FLAGS = {"--api-key-env"}

_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s]*@")  # to the authority's last @
_QUERY_SECRET = re.compile(rf"(?i)([?&;]{SECRET_NAME}=)[^&#\s\"']*")
_FLAG_SECRET = re.compile(rf"(?i)(?<![\w-])(--{SECRET_NAME})(=|\s+)(\S+)")
_HEADER_SECRET = re.compile(r"(?i)\b(bearer|authorization:\s*basic|authorization:)\s*[^\s\"']{8,}")
# For one scan of a whole file (might_hold_secret): the flag names, and the query pattern over bytes.
_QUERY_BYTES = re.compile(rf"(?i)[?&;]{SECRET_NAME}=".encode())
_FLAG_NAME = re.compile(rb"--[A-Za-z0-9_.-]*")
_SECRET_FLAG_NAME = re.compile(rf"(?i)--{SECRET_NAME}")

_registered: set[str] = set()
_fragments: set[str] = set()  # every FRAGMENT-long piece of a registered secret


def register(value: str | None) -> None:
    """A secret to mask wherever it appears from now on in this process (and any piece of it
    FRAGMENT characters long)."""
    if value and len(value) >= MIN_REGISTERED:
        _registered.add(value)
        _fragments.update(value[i:i + FRAGMENT] for i in range(len(value) - FRAGMENT + 1))


def _fragment_spans(text: str) -> list[tuple[int, int]]:
    """Where pieces of registered secrets stand in the text, overlapping pieces merged."""
    spans: list[list[int]] = []
    for i in range(len(text) - FRAGMENT + 1):
        if text[i:i + FRAGMENT] in _fragments:
            if spans and i <= spans[-1][1]:
                spans[-1][1] = i + FRAGMENT
            else:
                spans.append([i, i + FRAGMENT])
    return [(a, b) for a, b in spans]


_FLAG_AT = re.compile(rf"(?i)(--{SECRET_NAME})(=|\s+)(\S+)")


def _could_hold(text: str) -> tuple[bool, bool, bool, bool]:
    """Which of the patterns could match, by plain substring tests (a record's long lists of
    numbers hold none, and a regex scan of every one cost 0.4 ms a record)."""
    return (("@" in text and "://" in text), ("=" in text and any(c in text for c in "?&;")), "--" in text,
            any(w in text for w in ("earer", "EARER", "uthorization", "UTHORIZATION")))


def _flag_secret(text: str) -> bool:
    i = text.find("--")
    while i >= 0:
        if (i == 0 or not (text[i - 1].isalnum() or text[i - 1] in "_-")) and (m := _FLAG_AT.match(text, i)) \
                and m.group(1).lower() not in NOT_SECRET_FLAGS:
            return True
        i = text.find("--", i + 2)
    return False


def has_secret(text: str) -> bool:
    """Whether redact() would change the text (cheap for text that holds none)."""
    url, query, flag, header = _could_hold(text)
    return ((url and bool(_URL_USERINFO.search(text))) or (query and bool(_QUERY_SECRET.search(text)))
            or (flag and _flag_secret(text)) or (header and bool(_HEADER_SECRET.search(text)))
            or any(v in text for v in _registered) or any(f in text for f in _fragments))


def might_hold_secret(data: bytes) -> bool:
    """False only where has_secret() is False for every line of the (UTF-8) bytes: one scan of a
    whole results file instead of one a line (which cost ~20 us a record). Each test is implied by
    has_secret's own for a line: the same substrings (searched at memory speed), the query
    pattern, and any flag whose name says it holds a secret."""
    return (b"@" in data and b"://" in data) \
        or ((b"?" in data or b"&" in data or b";" in data) and bool(_QUERY_BYTES.search(data))) \
        or any(w in data for w in (b"earer", b"EARER", b"uthorization", b"UTHORIZATION")) \
        or (b"--" in data and _flag_names_secret(data)) \
        or any(v.encode() in data for v in _registered) or any(f.encode() in data for f in _fragments)


def _flag_names_secret(data: bytes) -> bool:
    """Whether any flag name in the text says it holds a secret: a file's command lines hold few
    names, and collecting them is 4x faster than trying the flag pattern at every --."""
    return any(_SECRET_FLAG_NAME.fullmatch(name.decode()) and name.decode().lower() not in NOT_SECRET_FLAGS
               for name in set(_FLAG_NAME.findall(data)))


def redact(text: str) -> str:
    """The text with every secret masked."""
    if not isinstance(text, str) or not text:
        return text
    for value in sorted(_registered, key=len, reverse=True):
        if value in text:
            text = text.replace(value, MASK)
    if _fragments:
        for a, b in reversed(_fragment_spans(text)):
            text = text[:a] + MASK + text[b:]
    url, query, flag, header = _could_hold(text)
    if url:
        text = _URL_USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)
    if query:
        text = _QUERY_SECRET.sub(lambda m: m.group(1) + MASK, text)
    if header:
        text = _HEADER_SECRET.sub(lambda m: m.group(1) + " " + MASK, text)
    if flag:
        text = _FLAG_SECRET.sub(lambda m: m.group(0) if m.group(1).lower() in NOT_SECRET_FLAGS
                                else m.group(1) + m.group(2) + MASK, text)
    return text


def clip(text: str, limit: int) -> str:
    """Redacted, then cut to `limit` characters (never the other way round)."""
    return redact(str(text))[:limit]


def redact_tree(value):
    """A copy of plain data (a record) with every string in it redacted; keys are kept."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_tree(v) for v in value]
    return value


def redact_argv(argv: list[str]) -> list[str]:
    """A command line as it may be stored: each argument redacted, and the value that follows a
    secret-named flag (`--token X`) masked too."""
    out = []
    for i, arg in enumerate(argv):
        prev = argv[i - 1].lower() if i else ""
        if (re.fullmatch(f"(?i)--{SECRET_NAME}", prev) and prev not in NOT_SECRET_FLAGS
                and not arg.startswith("-")):
            out.append(MASK)
        else:
            out.append(redact(arg))
    return out


def control_escaped(text: str) -> str:
    """User input echoed in a one-line message: newlines and other control characters shown as
    escapes (a name with a newline in it must not make a second line)."""
    return "".join(ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] for ch in str(text))


class RedactingStream:
    """A text stream (stdout, stderr) that masks secrets line by line before they are written."""

    def __init__(self, stream):
        self._stream, self._pending = stream, ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            whole, self._pending = self._pending.rsplit("\n", 1)
            self._stream.write(redact(whole) + "\n")
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._stream.write(redact(self._pending))
            self._pending = ""
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self):
        return getattr(self._stream, "encoding", "utf-8")

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextmanager
def redacted_output():
    """sys.stdout and sys.stderr masked line by line while the block runs (rich's consoles write
    through them)."""
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(streams[0]), RedactingStream(streams[1])
    try:
        yield
    finally:
        for s in (sys.stdout, sys.stderr):
            try:
                s.flush()
            except (OSError, ValueError):
                pass
        sys.stdout, sys.stderr = streams

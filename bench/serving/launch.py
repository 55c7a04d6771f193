"""An engine started for a run and always stopped after it (`serve --launch "vllm serve ..."`).

The command runs in a session of its own (its children with it), its output to a log file kept
beside the results. The run waits for the endpoint to answer (GET /health, else /v1/models) up
to a time-out; a command that is not found, exits, or never answers ends the run in one line
with the log's last lines, before anything is measured. At the end, on an error or on Ctrl-C,
the whole process group gets SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

from infercost.errors import InputError, RunError
from infercost.redact import NOT_SECRET_FLAGS, SECRET_NAME, control_escaped, redact, redact_argv, register

GRACE_S = 10.0
ENGINES = ("vllm", "sglang", "transformers", "text-generation-launcher", "llama-server", "trtllm-serve")


class Engine:
    """with Engine(command, url, log, timeout_s) as engine: ... (engine.identity: what ran)."""

    def __init__(self, command: str, url: str, log: Path, timeout_s: float = 600.0):
        try:
            self.argv = shlex.split(command)
        except ValueError as e:
            raise InputError(f"--launch: cannot split the command ({e})") from None
        if not self.argv:
            raise InputError("--launch: an empty command")
        for value in secret_values(self.argv):  # masked in the log, errors and records (an engine echoes its flags)
            register(value)
        if shutil.which(self.argv[0]) is None:
            raise InputError(f"--launch: {control_escaped(self.argv[0])}: command not found")
        self.url, self.log, self.timeout_s = url.rstrip("/"), Path(log), timeout_s
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Engine":
        if self._answers():
            raise InputError(f"--launch: something already answers at {self.url}; the run would measure it, not the "
                             f"engine it starts (stop it, or give the launched engine another port)")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log.open("ab")
        self.started = time.time()
        # Ctrl-C held back while the engine starts, so it is never started without being known here
        # (and so stopped): it arrives as soon as the process is ours
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        except OSError as e:
            self._log.close()
            raise InputError(f"--launch: cannot start {control_escaped(self.argv[0])}: {e.strerror or e}") from None
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        try:
            self.ready_s = self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wait_ready(self) -> float:
        deadline = time.monotonic() + self.timeout_s
        t0 = time.monotonic()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RunError(f"--launch: the engine exited with status {self.proc.returncode} before it answered; "
                               f"its log ({self.log}) ends: {self.tail()}")
            if self._answers():
                return time.monotonic() - t0
            time.sleep(0.5)
        raise RunError(f"--launch: the engine did not answer at {self.url} within {self.timeout_s:g} s "
                       f"(--launch-timeout); it was stopped; its log ({self.log}) ends: {self.tail()}")

    def _answers(self) -> bool:
        import httpx
        for path in ("/health", "/v1/models"):
            try:
                if httpx.get(self.url + path, timeout=2.0).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
        return False

    def stop(self) -> None:
        """The engine's whole process group: SIGTERM, then SIGKILL after GRACE_S."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        try:  # children that outlived the leader (a server's workers)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()
        try:  # the log as kept: every secret the command held masked
            text = self.log.read_bytes().decode("utf-8", "replace")
            if redact(text) != text:
                self.log.write_text(redact(text))
        except OSError:
            pass

    def tail(self, n: int = 3) -> str:
        try:
            lines = [l for l in self.log.read_bytes().decode("utf-8", "replace").splitlines() if l.strip()]
        except OSError:
            return "(no log)"
        return " | ".join(control_escaped(redact(l))[:200] for l in lines[-n:]) or "(empty)"

    def identity(self) -> dict:
        """What was launched, for the record: the command (secrets masked), the engine's package
        version where it is a Python package, the devices it was given, how long it took to answer."""
        name = Path(self.argv[0]).name
        version = None
        if name in ENGINES:
            from importlib import metadata
            try:
                version = metadata.version({"text-generation-launcher": "text-generation", "llama-server": "llama-cpp-python",
                                            "trtllm-serve": "tensorrt-llm"}.get(name, name))
            except metadata.PackageNotFoundError:
                pass
        devices = {k: os.environ[k] for k in ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "TPU_VISIBLE_CHIPS")
                   if k in os.environ}
        return {"command": " ".join(redact_argv(self.argv)), "engine": name, "version": version,
                "devices": devices or "all the host's", "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                "ready_after_s": round(self.ready_s, 3), "log": self.log.name}


def secret_values(argv: list[str]) -> list[str]:
    """The values of secret-named flags in a command line (`--api-key X`, `--api-key=X`)."""
    import re
    pattern = re.compile(rf"(?i)--{SECRET_NAME}")
    named = lambda flag: bool(pattern.fullmatch(flag)) and flag.lower() not in NOT_SECRET_FLAGS
    out = []
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if eq and named(flag) and value:
            out.append(value)
        elif i and named(argv[i - 1]) and not arg.startswith("-"):
            out.append(arg)
    return out

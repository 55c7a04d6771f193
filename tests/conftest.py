import os
import sys
from pathlib import Path

# `python -m pytest` puts the checkout's root on sys.path, where our kernels/ folder would stand in
# for PyPI's `kernels` (which transformers imports); ours is installed as infercost.kernels.
ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT]

# Tests see the CPU only, and never contact anything but loopback.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# In-process CLI calls raise a bug's exception instead of its one-line summary.
os.environ.setdefault("INFERCOST_DEBUG", "1")


def loopback_server(handler):
    """An HTTP server for `handler` on 127.0.0.1 (a free port), serving from a thread until the
    generator resumes: `yield from loopback_server(H)` in a fixture gives (server, url)."""
    import http.server
    import threading
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def hf_checkpoint(tmp_path, kind):
    """A Hugging Face checkpoint as the Hub stores one (config.json, model.safetensors) of a small
    random model: "llama3" (untied, Llama 3 rope scaling) or "qwen2" (q/k/v biases, tied head).
    Returns the transformers model."""
    import torch
    import transformers as tf
    from safetensors.torch import save_file
    torch.manual_seed(0)
    common = dict(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=96, max_position_embeddings=64)
    if kind == "llama3":
        cfg = tf.LlamaConfig(**common, rope_theta=500000.0, tie_word_embeddings=False,
                             rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                           "high_freq_factor": 4.0, "original_max_position_embeddings": 16})
        model = tf.LlamaForCausalLM(cfg)
    else:
        cfg = tf.Qwen2Config(**common, tie_word_embeddings=True)
        model = tf.Qwen2ForCausalLM(cfg)
    with torch.no_grad():  # HF initialises norms to ones and biases to zeros; randomise them so they are tested
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    model.eval()
    cfg.save_pretrained(tmp_path)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not (kind == "qwen2" and k == "lm_head.weight")}
    save_file(state, tmp_path / "model.safetensors")
    return model


def _untracked(root: Path) -> set | None:
    import subprocess
    try:
        out = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "-z", "--untracked-files=all"],
                             capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return {e for e in out.stdout.split(b"\0") if e.startswith(b"??")} if out.returncode == 0 else None


import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def nothing_is_written_into_the_checkout():
    """No test leaves a file in the checkout (results, plans, junk paths belong in tmp_path)."""
    before = _untracked(ROOT)
    yield
    after = _untracked(ROOT)
    if before is not None and after is not None and after - before:
        new = sorted(e[3:].decode("utf-8", "replace") for e in after - before)
        pytest.fail(f"tests wrote into the checkout: {new[:5]}", pytrace=False)


@pytest.fixture(autouse=True)
def secrets_registered_in_a_test_stay_in_it():
    """The secrets a test registers (redact.register: process-wide, as a run needs) are forgotten
    after it. Hypothesis draws a secret's text partly from the test module's own string constants,
    so a property test once registered one holding "-requests", and a later test's one-line error
    ("fewer than --min-requests") came out masked."""
    from infercost import redact
    registered, fragments = set(redact._registered), set(redact._fragments)
    yield
    for live, kept in ((redact._registered, registered), (redact._fragments, fragments)):
        live.clear()
        live.update(kept)


@pytest.fixture(scope="session", autouse=True)
def frozen_objects_freed_at_exit():
    """Reading records freezes what it built out of the cycle collector's reach (records.py); thawed
    at the end, the native objects made in this process (DuckDB's) are freed before it exits, else
    nanobind, DuckDB's binding layer, lists them as leaked when the interpreter ends."""
    yield
    import gc
    gc.unfreeze()
    gc.collect()

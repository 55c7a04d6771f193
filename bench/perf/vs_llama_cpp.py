"""Batch-1 CPU decode against llama.cpp on the same weights, measured side by side in one run.

infercost's seeded small-125m weights (or small-moe's, with --model: a mixture of experts that
llama.cpp runs as Mixtral, its "llama" architecture with experts) are written to GGUF (F32, and llama.cpp's Q8_0 beside
infercost's int8) with gguf-py, in llama.cpp's layout (q and k rows permuted for its rotary
form, as its own converter does), and decoded by llama.cpp through llama-cpp-python; torch-cpu
and jax-cpu decode the same weights. Each runs in a process of its own (as `infercost run` runs
one worker a backend), and the rounds alternate: torch, JAX, llama.cpp, torch, ... Every
figure is the median over rounds of a round's median step time at context 128 (the prompt is
decoded first), and greedy tokens are compared so that "the same weights" is checked, not
assumed. Targets (the CPU-kernels issue): infercost float32 tokens/s >= llama.cpp F32's, torch-cpu
and jax-cpu alike, as the median of each round's ratio: a shared VM's memory speed moves between
rounds (42 to 67 GB/s within minutes on the 2-core EPYC VM), and a ratio within a round compares
sides that ran within a second of each other. Each side's buffers are its own process's, and on a
shared VM buffers read at speeds of their own (see bench/sweep.py): differences of a few percent
between sides are within what placement alone gives.

llama.cpp and gguf-py are not infercost dependencies: give an interpreter that has them.

    python -m venv /tmp/lcpp && /tmp/lcpp/bin/pip install llama-cpp-python gguf
    python bench/perf/vs_llama_cpp.py --llama-python /tmp/lcpp/bin/python [--rounds 5] [--steps 32] [--model small-moe]

llama-cpp-python builds llama.cpp for the CPU it is installed on (GGML_NATIVE); under
INFERCOST_CPU_ISA=avx2 infercost takes an AVX2-only host's paths but that build keeps its own, so
an AVX2 comparison needs llama.cpp built with CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from targets import cap_isa, report  # bench/perf/targets.py, beside this script

MODELS = ("small-125m", "small-moe")
MODEL, PROMPT = "small-125m", 128  # MODEL: --model's, set in main() and in each child


# -- the weights, shared through .npy files (the llama.cpp side needs only numpy and gguf) ----
def write_weights(folder: Path) -> None:
    import numpy as np

    from infercost.kernels.llama import seeded_weights_numpy
    from infercost.kernels.models import CONFIGS
    cfg = CONFIGS[MODEL]
    for name, w in seeded_weights_numpy(cfg, 0).items():
        np.save(folder / f"{name}.npy", w.astype(np.float32))
    (folder / "config.json").write_text(json.dumps(cfg.as_dict()))


def permute(w, heads: int):
    """HF's q/k rows (rotate-half rotary) in llama.cpp's order (interleaved pairs): the inverse of
    the permutation HF's conversion script applies, as llama.cpp's convert_hf_to_gguf.py does."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(folder: Path, path: Path, q8: bool) -> None:
    import gguf
    import numpy as np

    c = json.loads((folder / "config.json").read_text())
    load = lambda name: np.load(folder / f"{name}.npy")
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(f"infercost {MODEL} seed 0")
    w.add_context_length(4096)
    w.add_embedding_length(c["hidden"])
    w.add_block_count(c["layers"])
    moe = "experts" in c  # Mixtral's form: softmax over the experts, the top k renormalised
    w.add_feed_forward_length(c["expert_intermediate"] if moe else c["intermediate"])
    if moe:
        assert c["norm_topk"] and not c["shared_intermediate"] and not c["dense_layers"], "not Mixtral's form"
        w.add_expert_count(c["experts"])
        w.add_expert_used_count(c["top_k"])
    w.add_head_count(c["heads"])
    w.add_head_count_kv(c["kv_heads"])
    w.add_rope_dimension_count(c["hidden"] // c["heads"])
    w.add_rope_freq_base(c["rope_theta"])
    w.add_layer_norm_rms_eps(c["norm_eps"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if q8 else gguf.LlamaFileType.ALL_F32)
    # A vocabulary of placeholder pieces: decode speed does not depend on the text.
    n = c["vocab_size"]
    w.add_tokenizer_model("llama")
    w.add_token_list(["<unk>", "<s>", "</s>"] + [f"t{i}" for i in range(3, n)])
    w.add_token_scores([0.0] * n)
    w.add_token_types([gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.NORMAL] * (n - 3))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)

    def add(name: str, array, matrix: bool):
        array = np.ascontiguousarray(array, dtype=np.float32)
        if q8 and matrix:
            w.add_tensor(name, gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0),
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, array)
    add("token_embd.weight", load("model.embed_tokens.weight"), False)
    for i in range(c["layers"]):
        p = f"model.layers.{i}."
        add(f"blk.{i}.attn_norm.weight", load(p + "input_layernorm.weight"), False)
        add(f"blk.{i}.attn_q.weight", permute(load(p + "self_attn.q_proj.weight"), c["heads"]), True)
        add(f"blk.{i}.attn_k.weight", permute(load(p + "self_attn.k_proj.weight"), c["kv_heads"]), True)
        add(f"blk.{i}.attn_v.weight", load(p + "self_attn.v_proj.weight"), True)
        add(f"blk.{i}.attn_output.weight", load(p + "self_attn.o_proj.weight"), True)
        add(f"blk.{i}.ffn_norm.weight", load(p + "post_attention_layernorm.weight"), False)
        if moe:  # the router, and each matrix of every expert stacked [experts, out, in]
            add(f"blk.{i}.ffn_gate_inp.weight", load(p + "mlp.gate.weight"), False)
            for ours, theirs in (("gate", "gate"), ("up", "up"), ("down", "down")):
                add(f"blk.{i}.ffn_{theirs}_exps.weight",
                    np.stack([load(p + f"mlp.experts.{e}.{ours}_proj.weight") for e in range(c["experts"])]), True)
            continue
        add(f"blk.{i}.ffn_gate.weight", load(p + "mlp.gate_proj.weight"), True)
        add(f"blk.{i}.ffn_up.weight", load(p + "mlp.up_proj.weight"), True)
        add(f"blk.{i}.ffn_down.weight", load(p + "mlp.down_proj.weight"), True)
    add("output_norm.weight", load("model.norm.weight"), False)
    add("output.weight", load("lm_head.weight"), True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# -- one side of the comparison, in its own process ----------------------------------------------
def prompt_tokens():
    import numpy as np
    return np.random.default_rng(0).integers(3, 32000, (1, PROMPT))


def llama_side(folder: Path, threads: int, steps: int):
    """name -> a function running one round (median seconds a step) and the greedy tokens."""
    import llama_cpp
    import numpy as np

    out = {}
    for fmt, q8 in (("F32", False), ("Q8_0", True)):
        path = folder / f"model-{fmt}.gguf"
        write_gguf(folder, path, q8)
        llm = llama_cpp.Llama(str(path), n_ctx=PROMPT + 4 * steps + 64, n_threads=threads, n_threads_batch=threads,
                              n_batch=PROMPT, logits_all=True, verbose=False)
        tokens = prompt_tokens()[0].tolist()

        def round_(llm=llm):
            llm.reset()
            llm.eval(tokens)
            greedy, times = [], []
            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            for _ in range(steps):
                greedy.append(nxt)
                start = time.perf_counter()
                llm.eval([nxt])
                times.append(time.perf_counter() - start)
                nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            return statistics.median(times), greedy
        out[f"llama.cpp {fmt}"] = round_
    return out


def infercost_side(backend_name: str, threads: int, steps: int):
    import numpy as np

    from infercost.bench.backend import open_backend
    from infercost.kernels import quant
    from infercost.kernels.dtypes import QuantSpec
    from infercost.kernels.models import CONFIGS

    cfg = CONFIGS[MODEL]
    backend = open_backend(backend_name, threads=threads)
    backend.configure("float32", False)
    out = {}
    for fmt in ("float32", "int8"):
        kw = dict(seed=0) if fmt == "float32" else dict(weights=quant.quantize_seeded(cfg, 0, fmt), quant=QuantSpec(fmt))
        runner = backend.load_model(cfg, "float32", 1, PROMPT + steps + 1, **kw)
        prompt = prompt_tokens()

        def round_(runner=runner):
            logits = backend.fetch(runner.prefill_step(prompt, last_only=True)())
            nxt = int(logits[0, -1].argmax())
            greedy, times = [], []
            for i in range(steps):
                greedy.append(nxt)
                start = time.perf_counter()
                logits = backend.fetch(runner.decode_step(np.array([[nxt]]), PROMPT + i)())
                times.append(time.perf_counter() - start)
                nxt = int(logits[0, -1].argmax())
            return statistics.median(times), greedy
        round_()  # compile and warm up
        out[f"{backend_name} {fmt}"] = round_
    return out


def child(side: str, folder: Path, threads: int, steps: int) -> None:
    rounds = llama_side(folder, threads, steps) if side == "llama" else infercost_side(side, threads, steps)
    print("ready", flush=True)
    for _ in sys.stdin:
        print(json.dumps({name: fn() for name, fn in rounds.items()}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--llama-python", help="an interpreter with llama-cpp-python and gguf installed")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--model", default="small-125m", choices=MODELS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global MODEL
    MODEL = args.model
    threads = len(os.sched_getaffinity(0))  # the llama.cpp process has no infercost to ask
    if args.rounds < 1 or args.steps < 1:
        parser.error("--rounds and --steps must be at least 1")
    if args.child:
        child(args.child, Path(args.folder), threads, args.steps)
        return 0
    if not args.llama_python or not Path(args.llama_python).exists():
        parser.error("--llama-python: give an interpreter with llama-cpp-python and gguf (see the docstring)")
    host = cap_isa()  # the cap, if any, reaches the torch and JAX processes through the environment
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_weights(folder)
        sides = {}
        for side, python in (("torch-cpu", sys.executable), ("jax-cpu", sys.executable), ("llama", args.llama_python)):
            proc = subprocess.Popen([python, __file__, "--child", side, "--folder", str(folder), "--steps", str(args.steps),
                                     "--model", MODEL],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            if proc.stdout.readline().strip() != "ready":
                sys.exit(f"the {side} process did not start")
            sides[side] = proc
        times, tokens = {}, {}
        for r in range(args.rounds):  # alternate: drift on a shared host hits every side alike
            for side, proc in sides.items():
                proc.stdin.write("round\n")
                proc.stdin.flush()
                for name, (t, greedy) in json.loads(proc.stdout.readline()).items():
                    times.setdefault(name, []).append(t)
                    tokens[name] = greedy
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        for proc in sides.values():
            proc.stdin.close()
            proc.wait()
    tpot = {name: statistics.median(t) for name, t in times.items()}

    def ratio(faster_if_above: str, over: str) -> float:
        """The median over rounds of times[over] / times[faster_if_above]: > 1 when the first is faster."""
        return statistics.median(b / a for a, b in zip(times[faster_if_above], times[over]))
    print(f"\n{MODEL} batch 1, context {PROMPT}, {threads} threads on {host}; medians of {args.rounds} alternating "
          f"rounds x {args.steps} steps, each framework in its own process; ratios: the median of each round's")
    print(f"{'':<22}{'TPOT ms':>9}{'tok/s':>9}  greedy tokens as torch-cpu float32")
    ref = tokens["torch-cpu float32"]
    for name, t in tpot.items():
        agree = sum(a == b for a, b in zip(tokens[name], ref))
        print(f"{name:<22}{t * 1e3:>9.2f}{1 / t:>9.1f}  {agree}/{len(ref)}")
    print("each round's ms a step (llama.cpp F32 / torch-cpu float32 / jax-cpu float32): "
          + ", ".join(f"{a * 1e3:.2f}/{b * 1e3:.2f}/{c * 1e3:.2f}" for a, b, c in
                      zip(times["llama.cpp F32"], times["torch-cpu float32"], times["jax-cpu float32"])))
    checks = [("torch-cpu float32 / llama.cpp F32 tokens/s", ratio("torch-cpu float32", "llama.cpp F32"), 1.0, ">="),
              ("jax-cpu float32 / llama.cpp F32 tokens/s", ratio("jax-cpu float32", "llama.cpp F32"), 1.0, ">="),
              ("torch-cpu int8 / llama.cpp Q8_0 tokens/s", ratio("torch-cpu int8", "llama.cpp Q8_0"), 1.0, ">=")]
    same = tokens["llama.cpp F32"] == ref == tokens["jax-cpu float32"]
    print(f"greedy tokens identical for torch-cpu, jax-cpu and llama.cpp F32: {same}")
    return 0 if report(checks) and same else 1


if __name__ == "__main__":
    sys.exit(main())

"""Quantized weights, made once on the host from the float weights, the same for every backend.

int8: symmetric, per output channel: scale = max|row| / 127, q = round(w / scale) in [-127, 127].
fp8:  e4m3 (float8_e4m3fn, max 448) with per-output-channel scales: scale = max|row| / 448.
A weight is used as q * scale; scales are kept in float32 here and rounded to the compute dtype
by the backend, as the reference does. Which weights are quantized is one recorded rule (RULE).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dtypes import QUANT_MODES as MODES

RULE = ("int8/fp8 weights, per-output-channel scales: every linear layer (q, k, v, o, gate, up, down) "
        "and the LM head; the embedding table (a gather) and the norms stay in the compute dtype")
QMAX = {"int8": 127.0, "fp8": 448.0}


def _fp8():
    import ml_dtypes  # a dependency of JAX
    return ml_dtypes.float8_e4m3fn


@dataclass(frozen=True)
class QWeight:
    """values [out, in] (int8, or float8_e4m3fn bits) and scale [out] (float32)."""
    values: np.ndarray
    scale: np.ndarray
    mode: str

    @property
    def shape(self) -> tuple[int, ...]:
        return self.values.shape

    def dequantized(self, scale_dtype=np.float32) -> np.ndarray:
        """float64 values as a backend computes them: q (exact) times the scale in its dtype."""
        return self.values.astype(np.float64) * self.scale.astype(scale_dtype).astype(np.float64)[:, None]

    def nbytes(self, scale_itemsize: int) -> int:
        return self.values.size * 1 + self.scale.size * scale_itemsize


def quantize_matrix(w: np.ndarray, mode: str) -> QWeight:
    if mode not in MODES:
        raise ValueError(f"unknown quantization {mode!r}; valid: {', '.join(MODES)}")
    w = np.asarray(w, dtype=np.float32)
    amax = np.abs(w).max(axis=1)
    scale = np.where(amax > 0, amax / QMAX[mode], 1.0).astype(np.float32)
    scaled = w / scale[:, None]
    if mode == "int8":
        values = np.clip(np.rint(scaled), -127, 127).astype(np.int8)
    else:
        values = np.clip(scaled, -448.0, 448.0).astype(_fp8())
    return QWeight(values, scale, mode)


def quantized_names(cfg) -> list[str]:
    """The parameters RULE quantizes: the model's linear layers (the LM head is its own tensor even
    when tied)."""
    return cfg.linear_names()


def quantize(cfg, weights: dict, mode: str) -> dict:
    """The float weights with every RULE parameter replaced by its QWeight."""
    out = dict(weights)
    for name in quantized_names(cfg):
        source = weights["model.embed_tokens.weight"] if (name == "lm_head.weight" and cfg.tie_embeddings) else weights[name]
        out[name] = quantize_matrix(source, mode)
    return out


def dequantized(weights: dict, scale_dtype=np.float32) -> dict:
    """float64 weights for the reference: what the quantized model computes with."""
    return {k: (v.dequantized(scale_dtype) if isinstance(v, QWeight) else np.asarray(v, dtype=np.float64))
            for k, v in weights.items()}


def quantize_seeded(cfg, seed: int, mode: str) -> dict:
    """The seeded weights (llama.seeded_weights_numpy's values), quantized tensor by tensor, so a
    large model never sits on the host in float64 whole."""
    import math

    from .llama import hashed_uniform_numpy, tensor_salt, weight_init
    names = set(quantized_names(cfg))
    out = {}
    for index, (name, shape) in enumerate(cfg.param_shapes().items()):
        offset, width = weight_init(name)
        w = (offset + width * hashed_uniform_numpy(math.prod(shape), tensor_salt(seed, index))).astype(np.float32)
        w = w.reshape(shape)
        out[name] = quantize_matrix(w, mode) if name in names else w
        if name == "model.embed_tokens.weight" and cfg.tie_embeddings:
            out["lm_head.weight"] = quantize_matrix(w, mode)
    return out


def quality(quantized_logits: list, float_logits: np.ndarray) -> dict:
    """How far quantizing moved the model: top-1 agreement and mean KL(float || quantized) of the
    next-token distributions over every position, against the unquantized model's float64 logits."""
    q = np.concatenate([np.asarray(x, np.float64) for x in quantized_logits], axis=1)
    f = np.asarray(float_logits, np.float64)[:, :q.shape[1]]
    logp = lambda z: z - z.max(-1, keepdims=True) - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True))
    lf, lq = logp(f), logp(q)
    kl = (np.exp(lf) * (lf - lq)).sum(-1)
    return {"top1_agreement": float((f.argmax(-1) == q.argmax(-1)).mean()), "mean_kl": float(max(kl.mean(), 0.0)),
            "against": "the unquantized model's float64 logits on the same tokens"}

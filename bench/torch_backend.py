"""PyTorch adapters: torch-cpu and torch-cuda (a ROCm build of torch presents itself as CUDA)."""

from __future__ import annotations

import numpy as np
import torch

from infercost.hardware.host import available_cpus, cpu_model, memory_available

from .backend import Backend, Unavailable

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TorchBackend(Backend):
    framework = "torch"
    device = torch.device("cpu")

    def put(self, array: np.ndarray, dtype: str):
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device, TORCH_DTYPES[dtype])

    def fetch(self, x) -> np.ndarray:
        return x.detach().to("cpu", torch.float64).numpy()

    def configure(self, dtype: str, tf32: bool) -> dict:
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
        return {"float32_matmul_precision": torch.get_float32_matmul_precision()}


class TorchCPU(TorchBackend):
    name = "torch-cpu"

    def __init__(self, threads: int | None = None):
        self.threads = threads or available_cpus()
        torch.set_num_threads(self.threads)

    def device_name(self) -> str:
        return cpu_model()

    def device_info(self) -> dict:
        return {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkldnn": torch.backends.mkldnn.is_available(),
        }

    def memory_bytes(self) -> int | None:
        return memory_available()


class TorchCUDA(TorchBackend):
    name = "torch-cuda"
    cache_policy = "flush-l2"
    device_timer = True

    def __init__(self, threads: int | None = None):
        if not torch.cuda.is_available():
            built = torch.version.cuda or torch.version.hip
            kind = f"built for CUDA/ROCm {built}" if built else "a CPU-only build"
            raise Unavailable(f"no CUDA/ROCm device visible to torch {torch.__version__} ({kind})")
        self.device = torch.device("cuda", torch.cuda.current_device())
        props = torch.cuda.get_device_properties(self.device)
        self.props = props
        # Zeroing a buffer of max(256 MiB, 2 x L2) between timed blocks evicts the cache.
        l2 = getattr(props, "L2_cache_size", 0) or 0
        self._flush_buf = torch.empty(max(256 << 20, 2 * l2), dtype=torch.uint8, device=self.device)

    def device_name(self) -> str:
        return torch.cuda.get_device_name(self.device)

    def device_info(self) -> dict:
        p = self.props
        info = {
            "torch": torch.__version__,
            "runtime": f"hip {torch.version.hip}" if torch.version.hip else f"cuda {torch.version.cuda}",
            "compute_capability": f"{p.major}.{p.minor}",
            "multiprocessors": p.multi_processor_count,
            "memory_total": p.total_memory,
            "l2_bytes": getattr(p, "L2_cache_size", None),
            "bf16_reduced_precision_reduction": torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction,
            "fp16_reduced_precision_reduction": torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction,
        }
        try:  # the driver version is not exposed by torch itself
            import pynvml
            pynvml.nvmlInit()
            info["driver"] = pynvml.nvmlSystemGetDriverVersion()
        except Exception:
            info["driver"] = None
        return info

    def memory_bytes(self) -> int | None:
        return torch.cuda.mem_get_info(self.device)[0]

    def unsupported(self, dtype: str, tf32: bool = False) -> str | None:
        if dtype == "bfloat16" and not torch.cuda.is_bf16_supported(including_emulation=False):
            return f"{self.device_name()} has no native bfloat16"
        if tf32 and not torch.version.hip and self.props.major < 8:
            return f"{self.device_name()} has no TF32 (needs compute capability 8.0+)"
        return None

    def sync(self, out=None) -> None:
        torch.cuda.synchronize(self.device)

    def flush(self) -> None:
        self._flush_buf.zero_()

    def time_block(self, fn, args, number: int) -> float:
        # CUDA events bracket only the device work; the flush before them is not timed.
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        self.flush()
        start.record()
        for _ in range(number):
            fn(*args)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

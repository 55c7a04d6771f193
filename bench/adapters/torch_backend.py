"""PyTorch adapters: torch-cpu and torch-cuda (a ROCm build of torch presents itself as CUDA)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from infercost.hardware.host import available_cpus, cpu_model, memory_available

from ..backend import Backend, Unavailable
from ..layout import Layout
from ..sweep import host_read_bandwidth

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def host_views(tensors) -> list[np.ndarray] | None:
    """Zero-copy numpy views of these tensors for the read sweep (bench/sweep.py), or None when one
    cannot be read by another kernel (oneDNN-packed) or is not in host memory. 16-bit floats and
    fp8 are viewed as integers of their width (numpy has no such floats of its own)."""
    views = []
    for t in tensors:
        if t.is_mkldnn or t.device.type != "cpu":
            return None
        t = t.detach()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.view(torch.int16)
        elif t.element_size() == 1 and t.dtype not in (torch.int8, torch.uint8):
            t = t.view(torch.int8)
        views.append(t.numpy())
    return views


def join_hosts(hosts: dict) -> None:
    """Remember the hosts: each case's group then spans them (bench/adapters/torch_dist.py); the
    processes join when a case starts, through torch.distributed's own store on host 0."""
    from . import torch_dist
    torch_dist.HOSTS = hosts
    global HOST_COUNT
    HOST_COUNT = hosts["count"]


HOST_COUNT = 1  # hosts in the run: a case can span every host's devices


class TorchBackend(Backend):
    framework = "torch"
    device = torch.device("cpu")
    spmd = False  # on several hosts, host 0's worker drives every rank (the others follow it)

    @contextlib.contextmanager
    def case_scope(self, case: dict, index: int):
        """On several hosts, each case has a group of its own over every host's ranks, formed before
        the case and ended after it (the other hosts' ranks follow it: follow_case)."""
        from . import torch_dist
        if torch_dist.HOSTS is None:
            yield
            return
        hosts = torch_dist.HOSTS
        torch_dist.CASE_PORT = hosts["port"] + 1 + (hosts["generation"] * 100 + index) % 500
        within = case["params"].get("within_host", False)  # host 0's own ranks only
        try:
            if hosts["rank"] == 0 and not within:
                torch_dist.group(case.get("devices") or 1, self.device)
            yield
        finally:
            if hosts["rank"] == 0 and torch_dist._group is not None:
                torch_dist._group.close()
                torch_dist._group = None

    def follow_case(self, case: dict) -> str | None:
        """A host other than 0: its ranks of the case's group, until host 0 ends it; why they
        failed, or None."""
        from . import torch_dist
        if case["params"].get("within_host"):
            return None  # host 0 measures its own devices; nothing runs here
        return torch_dist.follow_on_host(case.get("devices") or 1, self.device, self.threads or 1)

    def put(self, array: np.ndarray, dtype: str):
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device, TORCH_DTYPES[dtype])

    def fetch(self, x) -> np.ndarray:
        return x.detach().to("cpu", torch.float64).numpy()

    def configure(self, dtype: str, tf32: bool) -> dict:
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
        return {"float32_matmul_precision": torch.get_float32_matmul_precision()}

    def matmul(self, dtype: str, tf32: bool = False):
        return torch.matmul  # precision is set by configure()

    def mesh_unsupported(self, mesh: dict) -> str | None:
        layout = Layout.of(mesh)
        if layout.dp > 1:
            return (f"{self.name} splits a model over devices by tensor or expert parallelism only (dp=1); "
                    "the JAX backends take dp")
        if layout.ep > 1 and layout.tp > 1:
            return f"{self.name} splits a model by tensor or by expert parallelism, not both yet; the JAX backends take tp=T,ep=N"
        if layout.devices > self.device_count():
            return f"{layout} needs {layout.devices} devices; {self.name} has {self.device_count()}"
        return None

    def sharded(self, cfg, dtype, batch, max_seq, mesh, options, **kw):
        """The model split over the layout's tp (or ep) ranks, one process each (bench/adapters/torch_dist.py)."""
        from .torch_dist import ShardedRunner
        layout = Layout.of(mesh)
        return ShardedRunner(cfg, dtype, self.device, batch, max_seq, layout.ep if layout.ep > 1 else layout.tp,
                             options=options, expert_parallel=layout.ep > 1, **kw)

    def collective(self, op: str, per_device: int, dtype: str, devices: int, within_host: bool = False):
        from .torch_dist import Collective
        if op not in ("all-reduce", "all-gather", "all-to-all"):
            raise Unavailable(f"unknown collective {op!r}")
        if devices > self.device_count():
            raise Unavailable(f"{devices} devices asked for; {self.name} has {self.device_count()}")
        c = Collective(op, per_device, dtype, devices, self.device, within_host)
        return c, [c.inputs], lambda out: c.read(out).to("cpu", torch.float64).numpy().reshape(devices, -1)


class TorchCPU(TorchBackend):
    name = "torch-cpu"
    kind = "cpu"

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

    MAX_RANKS = 8

    def device_count(self) -> int:
        """Ranks are processes sharing a host's cores: one a core (at least 2), on every host."""
        return max(2, available_cpus()) * HOST_COUNT

    def mesh_unsupported(self, mesh: dict) -> str | None:
        # Up to MAX_RANKS ranks even on fewer cores, so a small host can check a split model (the
        # ranks then share cores, and the launch says so).
        layout = Layout.of(mesh)
        ranks = max(self.MAX_RANKS, self.device_count())
        if layout.dp == 1 and (layout.ep == 1 and layout.tp <= ranks or layout.tp == 1 and layout.ep <= ranks):
            return None  # (otherwise the base's reason)
        return super().mesh_unsupported(mesh)

    def build_model(self, cfg, dtype, batch, max_seq, *, seed, weights, compile_decode, keep_weights, mesh, quant):
        from infercost.kernels import llama_torch, llama_torch_cpu
        kv_int8 = quant.kv == "int8"
        ep = Layout.of(mesh).ep
        # Split by experts, each rank runs its share of the batch, eagerly (the all-to-alls' sizes
        # are known only at run time).
        options = {**llama_torch_cpu.plan(batch // ep, compile_decode and ep == 1, kv_int8, cfg.experts_model),
                   "kv_int8": kv_int8}
        if mesh is not None:
            return self.sharded(cfg, dtype, batch, max_seq, mesh, options, seed=seed, weights=weights,
                                keep_weights=keep_weights)
        return llama_torch.Runner(cfg, dtype, self.device, batch, max_seq, seed=seed, weights=weights,
                                  keep_weights=keep_weights, **options)

    def read_bandwidth(self, buffers):
        return host_read_bandwidth(host_views(buffers), self.threads)


class TorchCUDA(TorchBackend):
    name = "torch-cuda"
    kind = "gpu"
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

    def fp8_missing(self) -> str | None:
        if not torch.version.hip and (self.props.major, self.props.minor) < (8, 9):
            return f"{self.device_name()} has no native fp8 (needs compute capability 8.9+)"
        if torch.version.hip and "gfx94" not in getattr(self.props, "gcnArchName", ""):
            return f"{self.device_name()} has no native fp8 (needs an MI300-class GPU)"
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
        if hasattr(fn, "repeat"):  # a collective over ranks: one command announces the block
            fn.repeat(number)
        else:
            for _ in range(number):
                fn(*args)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    def monitor(self):
        from ..power import nvml_monitor
        return nvml_monitor(self.device.index or 0)

    def device_count(self) -> int:
        return torch.cuda.device_count() * HOST_COUNT

    def build_model(self, cfg, dtype, batch, max_seq, *, seed, weights, compile_decode, keep_weights, mesh, quant):
        from infercost.kernels import llama_torch
        ep = Layout.of(mesh).ep
        # Split by experts: eager, as on CPUs (the all-to-alls' sizes are known only at run time).
        options = {**llama_torch.cuda_plan(batch // ep, compile_decode and ep == 1, cfg.experts_model),
                   "kv_int8": quant.kv == "int8"}
        if mesh is not None:
            return self.sharded(cfg, dtype, batch, max_seq, mesh, options, seed=seed, weights=weights,
                                keep_weights=keep_weights)
        return llama_torch.Runner(cfg, dtype, self.device, batch, max_seq, seed=seed, weights=weights,
                                  keep_weights=keep_weights, **options)

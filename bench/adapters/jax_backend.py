"""JAX adapters: jax-cpu, jax-gpu, jax-tpu."""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from infercost.hardware.host import available_cpus, cpu_model, memory_available

from ..backend import Backend, Unavailable
from ..layout import Layout
from ..sweep import host_read_bandwidth


def join_hosts(hosts: dict) -> None:
    """One JAX runtime over every host's devices (jax.distributed), before any device is touched.
    On CPUs the hosts' collectives go over gloo; TPU pod slices and GPUs bring their own."""
    from infercost.bench.hosts import JOIN_TIMEOUT_S
    if jax.config.jax_platforms in (None, "", "cpu") or "cpu" in str(jax.config.jax_platforms):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    port = hosts["port"] + 1 + hosts["generation"] % 500
    try:
        # host 0's coordination service listens on the coordinator's address only (JAX's default: every interface)
        jax.distributed.initialize(f"{hosts['address']}:{port}", num_processes=hosts["count"],
                                   process_id=hosts["rank"], initialization_timeout=int(JOIN_TIMEOUT_S),
                                   coordinator_bind_address=f"{hosts['address']}:{port}")
    except Exception as e:  # a host that never came, an address no host listens on
        raise Unavailable(f"JAX could not join {hosts['count']} hosts at {hosts['address']}:{port}: "
                          f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__}") from None


def agree_json(value):
    """Process 0's JSON-able value on every process (one broadcast of a fixed-size byte buffer)."""
    from jax.experimental import multihost_utils
    raw = json.dumps(value).encode()
    if len(raw) > AGREE_BYTES - 8:
        raise ValueError(f"a value of {len(raw)} bytes is too long to agree on")
    buf = np.zeros(AGREE_BYTES, np.uint8)
    buf[:8] = np.frombuffer(np.int64(len(raw)).tobytes(), np.uint8)
    buf[8:8 + len(raw)] = np.frombuffer(raw, np.uint8)
    out = np.asarray(multihost_utils.broadcast_one_to_all(buf))
    n = int(np.frombuffer(out[:8].tobytes(), np.int64)[0])
    return json.loads(out[8:8 + n].tobytes())


AGREE_BYTES = 4096


class JaxBackend(Backend):
    framework = "jax"
    platform = ""

    def __init__(self, threads: int | None = None):
        try:
            devices = jax.devices(self.platform)
        except RuntimeError as e:
            detail = str(e).strip().splitlines()[0][:160] if str(e).strip() else "no device"
            raise Unavailable(f"JAX {jax.__version__} sees no {self.platform} device ({detail})") from None
        self.device = jax.local_devices(backend=self.platform)[0]  # this host's first (all of them are one host's)
        self.threads = available_cpus()

    def device_name(self) -> str:
        return self.device.device_kind

    def agree(self, value):
        return agree_json(value) if jax.process_count() > 1 else value

    def device_info(self) -> dict:
        info = {
            "jax": jax.__version__,
            "jaxlib": getattr(jax.lib, "__version__", None) or _version("jaxlib"),
            "device_kind": self.device.device_kind,
            "platform_version": getattr(self.device.client, "platform_version", None),
            "device_count": len(jax.devices(self.platform)),
        }
        stats = self._memory_stats()
        if stats.get("bytes_limit"):
            info["memory_total"] = stats["bytes_limit"]
        return info

    def _memory_stats(self) -> dict:
        try:
            return self.device.memory_stats() or {}
        except Exception:
            return {}

    def memory_bytes(self) -> int | None:
        stats = self._memory_stats()
        if "bytes_limit" in stats:
            return stats["bytes_limit"] - stats.get("bytes_in_use", 0)
        return None

    def configure(self, dtype: str, tf32: bool) -> dict:
        precision = "tensorfloat32" if tf32 else ("highest" if dtype == "float32" else "default")
        jax.config.update("jax_default_matmul_precision", precision)
        return {"jax_default_matmul_precision": precision}

    def put(self, array: np.ndarray, dtype: str):
        return jax.device_put(np.asarray(array).astype(jnp.dtype(dtype)), self.device)

    def fetch(self, x) -> np.ndarray:
        from infercost.kernels.llama_jax import on_host
        return on_host(x).astype(np.float64)

    def matmul(self, dtype: str, tf32: bool = False):
        # float32 asks for true float32 unless TF32 was requested; JAX's default on GPU and TPU
        # would silently use reduced-precision passes.
        precision = jax.lax.Precision.HIGHEST if dtype == "float32" and not tf32 else jax.lax.Precision.DEFAULT
        return lambda a, b: jnp.matmul(a, b, precision=precision)

    # XLA:CPU fuses decode attention written as broadcast multiply-reduces in place; as dots it
    # copied and transposed the cache every layer (7% of a CPU step). The same flag writes a
    # one-row int8 product as a multiply-reduce (XLA:CPU then converts inside the pass instead of
    # converting the whole matrix first). Elsewhere, batched dots.
    multiply_reduce_attention = False
    one_row_decode_options: dict = {}  # XLA compiler options for batch-1 decode steps
    step_kernel = False  # batch-1 float32 decode by infercost's step kernel (kernels/decode_f32_jax_cpu.py)

    def mesh_unsupported(self, mesh: dict) -> str | None:
        have = len(jax.devices(self.platform))
        layout = Layout.of(mesh)
        if layout.devices > have:
            return f"the layout {layout} needs {layout.devices} devices; JAX sees {have}"
        return None

    def device_count(self) -> int:
        return len(jax.devices(self.platform))

    def collective(self, op: str, per_device: int, dtype: str, devices: int, within_host: bool = False):
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        if devices > self.device_count():
            raise Unavailable(f"{devices} devices asked for; JAX sees {self.device_count()}")
        # within_host: this host's devices only (on several hosts each host runs its own at once)
        pool = jax.local_devices(backend=self.platform) if within_host else jax.devices(self.platform)
        mesh = Mesh(np.array(pool[:devices]), ("d",))
        host = (np.arange(1, devices + 1, dtype=np.float64)[:, None]
                + np.arange(per_device, dtype=np.float64)[None, :] / per_device).astype(jnp.dtype(dtype))
        x = jax.device_put(host, NamedSharding(mesh, P("d", None)))
        if op == "all-reduce":
            body = lambda a: jax.lax.psum(a, "d")
            out_spec = P("d", None)  # every device's copy of the sum, stacked
        elif op == "all-gather":
            body = lambda a: jax.lax.all_gather(a, "d", tiled=True)
            out_spec = P("d", None)
        elif op == "all-to-all":  # device i's j-th chunk goes to device j, which stacks them by source
            body = lambda a: jax.lax.all_to_all(a, "d", 1, 1, tiled=True)
            out_spec = P("d", None)
        else:
            raise Unavailable(f"unknown collective {op!r}")
        fn = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=P("d", None), out_specs=out_spec))
        fetch = lambda out: self.fetch(out).reshape(devices, -1)
        return fn, [x], fetch

    def make_mesh(self, mesh: dict):
        """A ("dp", "tp") mesh over the first dp x tp devices of this platform, or for expert
        parallelism a ("dp", "ep", "tp") one (dp = 1; a tp group's devices next to each other)."""
        from jax.sharding import Mesh
        layout = Layout.of(mesh)
        devices = np.array(jax.devices(self.platform)[:layout.devices])
        if layout.ep > 1:
            return Mesh(devices.reshape(1, layout.ep, layout.tp), ("dp", "ep", "tp"))
        return Mesh(devices.reshape(layout.dp, layout.tp), ("dp", "tp"))

    def build_model(self, cfg, dtype, batch, max_seq, *, seed, weights, compile_decode, keep_weights, mesh, quant):
        from infercost.kernels import llama_jax
        return llama_jax.Runner(cfg, dtype, self.device, batch, max_seq, seed=seed, weights=weights,
                                keep_weights=keep_weights, multiply_reduce_attention=self.multiply_reduce_attention,
                                mesh=self.make_mesh(mesh) if mesh is not None else None, kv_int8=quant.kv == "int8",
                                one_row_options=self.one_row_decode_options,
                                step_kernel_threads=self.threads if self.step_kernel else None)

    def compile(self, fn, args, donate: tuple[int, ...] = ()):
        # Ahead-of-time: the returned object never retraces or recompiles when called.
        return jax.jit(fn, donate_argnums=donate).lower(*args).compile()

    def sync(self, out=None) -> None:
        if out is not None:
            jax.block_until_ready(out)

    # Calls queued before the previous one finished. Host devices sharing a few cores can
    # deadlock in a collective when several sharded calls are in flight at once, so there one
    # call at a time is kept in flight.
    in_flight_one = False

    def time_block(self, fn, args, number: int) -> float:
        self.flush()
        self.sync(args)
        outs = []
        with jax.transfer_guard("disallow"):
            start = time.perf_counter()
            for _ in range(number):
                if self.in_flight_one:  # finished, and freed, before the next (a kept buffer makes
                    jax.block_until_ready(fn(*args))  # the next call page-fault a fresh one)
                else:
                    outs.append(fn(*args))
            jax.block_until_ready(outs)  # dispatch is asynchronous: wait for every call
            return time.perf_counter() - start


def _version(name: str) -> str | None:
    from infercost.hardware.host import package_version
    return package_version(name)


class JaxCPU(JaxBackend):
    name = "jax-cpu"
    kind = "cpu"
    platform = "cpu"
    multiply_reduce_attention = True
    # Batch-1 decode without YNN fusions: YNN took only decode attention's reductions there, one
    # thread each, so XLA's second thread fell asleep and started the next product 15-28 us late;
    # as XLA's own loops the attention runs on both threads. int8 step 5-9% faster, float32 ~5%
    # (small-125m, EPYC, alternating in one process). Batched decode and prefill keep YNN: their
    # dots were 2.4-5x slower without it.
    one_row_decode_options = {"xla_cpu_experimental_ynn_fusion_type": ""}
    # Batch-1 float32 decode of a dense model: infercost's step kernel, through XLA's FFI. XLA's own
    # step streamed the weights at 68-82% of a read sweep on the EPYC host, ~300 small loops a step.
    step_kernel = True

    def __init__(self, threads: int | None = None):
        super().__init__(threads)
        self.in_flight_one = len(jax.devices("cpu")) > 1

    def read_bandwidth(self, buffers):
        if any(len(getattr(a, "sharding", None).device_set) > 1 for a in buffers if hasattr(a, "sharding")):
            return None  # split over several (host) devices: no single buffer to sweep
        # The same sweep as torch-cpu's, over numpy views of these very arrays (no copy on CPUs).
        return host_read_bandwidth([np.asarray(a) for a in buffers], self.threads)

    def device_name(self) -> str:
        return cpu_model()

    def device_info(self) -> dict:
        return {**super().device_info(), "threads": self.threads}

    def memory_bytes(self) -> int | None:
        return memory_available()  # XLA's CPU client keeps no memory statistics


class JaxGPU(JaxBackend):
    name = "jax-gpu"
    kind = "gpu"
    platform = "gpu"
    cache_policy = "flush-l2"

    def __init__(self, threads: int | None = None):
        super().__init__(threads)
        # Rewriting 256 MiB between timed blocks evicts the GPU's L2 (<= 128 MiB today).
        self._flush_buf = jax.device_put(np.zeros(64 << 20, np.float32), self.device)
        self._flush_fn = jax.jit(lambda x: x + 1.0, donate_argnums=0)

    def unsupported(self, dtype: str, tf32: bool = False) -> str | None:
        return None

    def flush(self) -> None:
        self._flush_buf = self._flush_fn(self._flush_buf)
        self._flush_buf.block_until_ready()

    def fp8_missing(self) -> str | None:
        cc = getattr(self.device, "compute_capability", None)
        if cc is None or tuple(int(x) for x in str(cc).split(".")[:2]) < (8, 9):
            return f"{self.device_name()} has no native fp8 (needs compute capability 8.9+)"
        return None

    def monitor(self):
        from ..power import nvml_monitor
        return nvml_monitor(getattr(self.device, "local_hardware_id", None) or 0)


class JaxTPU(JaxBackend):
    name = "jax-tpu"
    kind = "tpu"
    platform = "tpu"

"""PyTorch over several devices: one process per rank with torch.distributed (NCCL on CUDA/ROCm,
gloo on CPUs), started and driven by the worker that runs the case.

The worker is rank 0. It starts ranks 1..n-1 as its own child processes (they die with it, so a
case killed at its time limit leaves no rank behind) and, before each call, broadcasts a short
command the other ranks follow: load this model (rank 0 makes or reads each weight and scatters
every rank its shard), run this prefill or decode step, run this collective k times. Every rank
then runs the same code, and the model's own collectives keep them in step (vLLM's driver and
workers work this way). A rank that dies or hangs makes rank 0's next collective fail, at once or
after TIMEOUT_S; the case ends with an error, and the group is torn down and started afresh for
the next case.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from infercost.kernels import llama, llama_torch
from infercost.kernels.quant import QWeight
from infercost.kernels.llama_torch import TORCH_DTYPES, ExpertParallel, QLinear, TensorParallel

# A collective that waits longer than this has lost a rank.
TIMEOUT_S = float(os.environ.get("INFERCOST_RANK_TIMEOUT_S", 120))
WORDS, INLINE = 72, 64  # a command: 8 words, then up to 64 token ids (a decode step's) inline
EXIT, LOAD, STEP, COLL_SETUP, COLL_RUN, COLL_READ, KV_READ = range(7)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def transport(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


# A multi-host run (bench/hosts.py, set by torch_backend.join_hosts): {"count", "rank", "address",
# "port", "generation"}. Ranks are placed host by host; host 0's worker is rank 0 and drives all.
HOSTS: dict | None = None
CASE_PORT: int | None = None  # the store's port for the case being run (set around each case)


def start_ranks(ranks: range, world: int, port: int, device: torch.device, threads: int,
                master: str = "127.0.0.1", host_first: int = 0) -> list[subprocess.Popen]:
    """Processes for these global ranks of a group whose store listens at master:port (host_first:
    the global rank of this host's first device, so a rank knows its local device)."""
    return [subprocess.Popen([sys.executable, "-m", "infercost.bench.adapters.torch_dist", str(r), str(world),
                              str(port), device.type, str(threads), master, str(r - host_first)])
            for r in ranks]


class Group:
    """This process as rank 0 of `world` ranks, the others its children (on several hosts, the
    other hosts' ranks are theirs). On a CPU the ranks share this process's cores: each runs
    cores / world threads, unpinned (pinned, each rank's gloo I/O thread shared its one core, and
    all-reduces ran 3-12% slower than a plain loop's)."""

    def __init__(self, world: int, device: torch.device, within_host: bool = False):
        self.world, self.device, self.within_host = world, device, within_host
        spans = HOSTS is not None and not within_host  # its ranks on every host, or on this one only
        local = world // HOSTS["count"] if spans else world  # ranks on this host
        self.cores, self.threads_before = len(os.sched_getaffinity(0)), torch.get_num_threads()
        per = max(1, self.cores // local)
        port, master = (CASE_PORT, HOSTS["address"]) if spans else (free_port(), "127.0.0.1")
        self.procs = start_ranks(range(1, local), world, port, device, per, master)
        if device.type == "cpu":
            torch.set_num_threads(per)
        try:
            init(0, world, port, device, master)
        except Exception:
            self.abort()
            raise
        self.header = torch.zeros(WORDS, dtype=torch.long, device=device)

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def command(self, op: int, *words: int, tokens: np.ndarray | None = None) -> None:
        if self.world == 1:  # nobody to tell
            return
        h = [op, *words] + [0] * (8 - 1 - len(words))
        if tokens is not None and tokens.size <= INLINE:
            h += [int(t) for t in tokens.reshape(-1)]
        self.header[:len(h)].copy_(torch.tensor(h, dtype=torch.long))
        dist.broadcast(self.header, 0)
        if tokens is not None and tokens.size > INLINE:
            dist.broadcast(torch.as_tensor(tokens, dtype=torch.long, device=self.device).contiguous(), 0)

    def send(self, obj) -> None:
        if self.world > 1:
            dist.broadcast_object_list([obj], 0)

    def close(self) -> None:
        try:
            self.command(EXIT)
            for p in self.procs:
                p.wait(timeout=30)
        except Exception:
            pass
        self.abort()

    def abort(self) -> None:
        """Stop every rank and leave this process as it was before the group."""
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        if dist.is_initialized():
            dist.destroy_process_group()
        torch.set_num_threads(self.threads_before)


def init(rank: int, world: int, port: int, device: torch.device, master: str = "127.0.0.1") -> None:
    dist.init_process_group(transport(device), init_method=f"tcp://{master}:{port}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=TIMEOUT_S))


_group: Group | None = None


def group(world: int, device: torch.device, within_host: bool = False) -> Group:
    """The live group of this size on this device (on several hosts: over every host's ranks, or
    with within_host this host's only), started (or restarted) when needed."""
    global _group
    if _group is not None and (_group.world, _group.device, _group.within_host) == (world, device, within_host) \
            and _group.alive():
        return _group
    if _group is not None:
        _group.close()
        _group = None
    _group = Group(world, device, within_host)
    return _group


@atexit.register
def _close() -> None:
    if _group is not None:
        _group.close()


def guarded(fn):
    """Run fn; a failure (a rank lost) tears the group down before it is raised."""
    def call(*args):
        global _group
        try:
            return fn(*args)
        except Exception:
            if _group is not None:
                _group.abort()
                _group = None
            raise
    return call


# -- the model ------------------------------------------------------------------------------
def shard(full, spec: dict, name: str, kind: str, shape: tuple, rank: int, world: int, device):
    """This rank's part of one weight: rank 0 passes the whole tensor (or QLinear) and scatters
    the parts; the others pass None and receive theirs."""
    cfg, dtype = spec["cfg"], TORCH_DTYPES[spec["dtype"]]
    if spec.get("ep"):  # split by experts: every rank gets every tensor whole and keeps its experts
        slices = [tuple(slice(None) for _ in shape)] * world
    else:
        slices = [llama.tp_slices(cfg, name, shape, r, world) for r in range(world)]

    def scatter(whole, cut, like_shape, like_dtype):
        out = torch.empty(like_shape, dtype=like_dtype, device=device)
        parts = None if whole is None else [whole[s].contiguous() for s in cut]
        dist.scatter(out, parts, src=0)
        return out

    mine = slices[rank]
    local_shape = tuple(len(range(*s.indices(n))) for s, n in zip(mine, shape))
    if kind == "float":
        return scatter(full, slices, local_shape, dtype)
    # quantized: one-byte values travel as int8 (fp8 too), scales with the output rows
    values = scatter(None if full is None else full.values.view(torch.int8), slices, local_shape, torch.int8)
    scale = scatter(None if full is None else full.scale, [s[:1] for s in slices], local_shape[:1], dtype)
    return QLinear(values if kind == "int8" else values.view(torch.float8_e4m3fn), scale)


def build(spec: dict, source, rank: int, world: int, device, keep: dict | None = None) -> llama_torch.Runner:
    """Every rank: each weight's shard (rank 0 makes or reads it through `source`), then the model."""
    shards = {}
    for name, shape, kind in spec["tensors"]:
        full = source(name) if rank == 0 else None
        if keep is not None:
            keep[name] = full
        shards[name] = shard(full, spec, name, kind, shape, rank, world, device)
        del full
    if spec.get("ep"):
        split = {"ep": ExpertParallel(dist.group.WORLD, world, rank, spec["cfg"].experts)}
    else:
        split = {"tp": TensorParallel(dist.group.WORLD, world)}
    return llama_torch.Runner(spec["cfg"], spec["dtype"], device, spec["batch"], spec["max_seq"], weights=shards,
                              **split, **spec["options"])


def tensors(cfg, weights: dict | None) -> list[tuple[str, tuple, str]]:
    """(name, shape, kind) of every weight to scatter. A tied LM head gets its own vocabulary-split
    copy of the embedding (the embedding itself is replicated for the gather)."""
    shapes = cfg.param_shapes()
    names = list(weights) if weights is not None else list(shapes)
    if "lm_head.weight" not in names:
        names.append("lm_head.weight")
    out = []
    for name in names:
        v = weights.get(name) if weights is not None else None
        kind = v.mode if isinstance(v, QWeight) else "float"  # by type: a numpy.memmap has a .mode too
        shape = tuple(v.shape) if v is not None else shapes.get(name, shapes["model.embed_tokens.weight"])
        out.append((name, shape, kind))
    return out


class ShardedRunner:
    """Rank 0's side of a model split over `world` ranks; called like llama_torch.Runner."""

    def __init__(self, cfg, dtype: str, device, batch: int, max_seq: int, world: int, *, seed: int = 0,
                 weights: dict | None = None, keep_weights: bool = False, options: dict | None = None,
                 expert_parallel: bool = False):
        self.group = group(world, device)
        tdtype = TORCH_DTYPES[dtype]
        index = {name: i for i, name in enumerate(cfg.param_shapes())}

        def source(name):
            if weights is not None:
                return llama_torch.to_device(weights.get(name, weights.get("model.embed_tokens.weight")), device, tdtype)
            seeded = name if name in index else "model.embed_tokens.weight"  # a tied head
            return llama_torch.seeded_tensor(cfg, seed, index[seeded], seeded, tdtype, device)

        spec = {"cfg": cfg, "dtype": dtype, "batch": batch, "max_seq": max_seq, "tensors": tensors(cfg, weights),
                "options": options or {}, "ep": expert_parallel}
        self.expert_parallel = expert_parallel
        self.full = {} if keep_weights else None
        load = guarded(lambda: (self.group.command(LOAD), self.group.send(spec),
                                build(spec, source, 0, world, device, self.full))[-1])
        self.local = load()
        self.params = self.local.params
        how = (f"experts and sequences split over {world} ranks, dispatch and combine by all-to-all ({transport(device)})"
               if expert_parallel else f"tensor parallel over {world} ranks ({transport(device)})")
        local = world // (HOSTS["count"] if HOSTS else 1)
        if HOSTS:
            how += f", {local} on each of {HOSTS['count']} hosts"
        if device.type == "cpu" and local > self.group.cores:
            how += f", sharing {self.group.cores} cores"
        self.launch, self.prefill_launch = f"{self.local.launch}; {how}", f"{self.local.prefill_launch}; {how}"

    def _step(self, local_step, tokens: np.ndarray, prefill: bool, last_only: bool, pos: int):
        def step():
            self.group.command(STEP, int(prefill), *tokens.shape, int(last_only), pos, tokens=tokens)
            return local_step()
        return guarded(step)

    def prefill_step(self, tokens, last_only: bool = True):
        tokens = np.asarray(tokens)
        return self._step(self.local.prefill_step(tokens, last_only), tokens, True, last_only, 0)

    def decode_step(self, tokens, pos: int):
        tokens = np.asarray(tokens)
        return self._step(self.local.decode_step(tokens, pos), tokens, False, False, pos)

    def streamed(self) -> list:
        return self.local.streamed()

    def routes(self):
        return self.local.routes()

    def kv_numpy(self) -> list:
        """Per layer, (keys, values) of the whole model as float64 [batch, kv_heads, seq, hd]: every
        rank's heads gathered here, in the order the sharding table (llama.tp_slices) gives them;
        ranks that share a head (fewer KV heads than ranks) hold the same copy, the first gives it."""
        mine = self.local.kv_numpy()
        world = self.group.world
        if world == 1:
            return mine
        self.group.command(KV_READ)
        parts = [None] * world
        guarded(lambda: dist.gather_object(mine, parts, dst=0))()
        if self.expert_parallel:  # each rank holds its sequences' whole cache
            return [tuple(np.concatenate([parts[r][layer][i] for r in range(world)]) for i in (0, 1))
                    for layer in range(len(mine))]
        cfg, name = self.local.model.cfg, "model.layers.0.self_attn.k_proj.weight"
        first = {}  # first row of a rank's keys -> the first rank holding them
        for r in range(world):
            first.setdefault(llama.tp_slices(cfg, name, cfg.param_shapes()[name], r, world)[0].start, r)
        owners = [first[row] for row in sorted(first)]
        return [tuple(np.concatenate([parts[r][layer][i] for r in owners], axis=1) for i in (0, 1))
                for layer in range(len(mine))]

    def weights_numpy(self) -> dict:
        """float64 weights as the model computes with them (a tied head's copy equals the embedding)."""
        return {k: llama_torch.float64_numpy(v) for k, v in self.full.items()}


# -- collectives ----------------------------------------------------------------------------
class CollectiveState:
    """One rank's buffers for an all-reduce, all-gather or all-to-all: rank i holds i + 1 + j / n at
    element j."""

    def __init__(self, spec: dict, rank: int, world: int, device):
        self.op, per = spec["op"], spec["per"]
        dtype = TORCH_DTYPES[spec["dtype"]]
        self.input = (rank + 1 + torch.arange(per, dtype=torch.float64, device=device) / per).to(dtype)
        self.output = (self.input if self.op == "all-reduce" else
                       torch.empty(per if self.op == "all-to-all" else world * per, dtype=dtype, device=device))
        self.world = world

    def run(self) -> None:
        if self.op == "all-reduce":
            dist.all_reduce(self.input)  # in place, as NCCL's benchmarks may run it
        elif self.op == "all-to-all":  # rank i's j-th chunk goes to rank j, which stacks them by source
            dist.all_to_all_single(self.output, self.input)
        else:
            dist.all_gather_into_tensor(self.output, self.input)

    def gather(self, t: torch.Tensor, rank: int):
        """Every rank's copy of t, stacked on rank 0 (None elsewhere)."""
        out = [torch.empty_like(t) for _ in range(self.world)] if rank == 0 else None
        dist.gather(t, out, dst=0)
        return None if out is None else torch.stack(out)

    def read(self, rank: int):
        """What each rank holds after the op; an all-reduce buffer is then zeroed on every rank, so
        the sums timed after the check stay finite (the same work as any other values)."""
        out = self.gather(self.output, rank)
        if self.op == "all-reduce":
            self.input.zero_()
        return out


class Collective:
    """Rank 0's side: callable once (the check), `repeat(n)` for a timed block of n back-to-back
    ops announced by one command, as nccl-tests times a block."""

    def __init__(self, op: str, per: int, dtype: str, world: int, device, within_host: bool = False):
        self.group = group(world, device, within_host)
        spec = {"op": op, "per": per, "dtype": dtype}
        self.group.command(COLL_SETUP)
        self.group.send(spec)
        self.state = CollectiveState(spec, 0, world, device)
        self.inputs = self.state.gather(self.state.input, 0)  # what every rank holds, read back

    def __call__(self, *_):
        return guarded(self.repeat)(1)

    def repeat(self, number: int):
        self.group.command(COLL_RUN, number)
        for _ in range(number):
            self.state.run()
        return self.state.output

    def read(self, _out=None):
        self.group.command(COLL_READ)
        return self.state.read(0)


# -- ranks 1..n-1 ---------------------------------------------------------------------------
def follow(rank: int, world: int, port: int, device_type: str, threads: int, master: str = "127.0.0.1",
           local_rank: int | None = None) -> None:
    from ..orphans import die_with_parent
    die_with_parent()
    if device_type == "cuda":
        device = torch.device("cuda", rank if local_rank is None else local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(threads)
    init(rank, world, port, device, master)
    header = torch.zeros(WORDS, dtype=torch.long, device=device)
    runner = coll = None
    while True:
        dist.broadcast(header, 0)
        h = header.tolist()
        op = h[0]
        if op == EXIT:
            break
        if op == LOAD:
            runner = None
            box = [None]
            dist.broadcast_object_list(box, 0)
            runner = build(box[0], None, rank, world, device)
        elif op == STEP:
            prefill, b, t, last_only, pos = h[1:6]
            if b * t <= INLINE:
                tokens = np.asarray(h[8:8 + b * t]).reshape(b, t)
            else:
                received = torch.empty((b, t), dtype=torch.long, device=device)
                dist.broadcast(received, 0)
                tokens = received.cpu().numpy()
            (runner.prefill_step(tokens, bool(last_only)) if prefill else runner.decode_step(tokens, pos))()
        elif op == COLL_SETUP:
            box = [None]
            dist.broadcast_object_list(box, 0)
            coll = CollectiveState(box[0], rank, world, device)
            coll.gather(coll.input, rank)
        elif op == COLL_RUN:
            for _ in range(h[1]):
                coll.run()
        elif op == COLL_READ:
            coll.read(rank)
        elif op == KV_READ:
            dist.gather_object(runner.kv_numpy(), None, dst=0)
    dist.destroy_process_group()


def follow_on_host(world: int, device: torch.device, threads: int) -> str | None:
    """A host other than 0, for one case: this host's ranks of host 0's group, run until host 0
    ends the case. Returns why a rank failed, or None."""
    local = world // HOSTS["count"]
    first = HOSTS["rank"] * local
    procs = start_ranks(range(first, first + local), world, CASE_PORT, device, max(1, threads // local),
                        HOSTS["address"], first)
    try:
        codes = [p.wait() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    failed = [f"rank {first + i} exited with status {c}" for i, c in enumerate(codes) if c != 0]
    return "; ".join(failed) or None


if __name__ == "__main__":
    r, n, p, kind, threads = sys.argv[1:6]
    master, local_rank = (sys.argv[6], int(sys.argv[7])) if len(sys.argv) > 7 else ("127.0.0.1", None)
    try:
        follow(int(r), int(n), int(p), kind, int(threads), master, local_rank)
        # Done (host 0 said EXIT): leave without running destructors, where gloo's at times aborts
        # the process (status -6) over collectives the compiled graph never waited on.
        sys.stderr.flush()
        os._exit(0)
    except (KeyboardInterrupt, BrokenPipeError):
        os._exit(130)
    except RuntimeError as e:  # rank 0 went away (its case failed or was stopped): nothing to do
        print(f"rank {r}: {str(e).splitlines()[0][:200]}", file=sys.stderr)
        os._exit(1)

"""Runs over several hosts, with local processes on 127.0.0.1 standing for the hosts, started the
way SkyPilot starts a multi-node task (its variables) or by explicit flags, through the real CLI."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from infercost.bench import hostlink
from infercost.bench.hosts import Hosts, find
from infercost.bench.layout import Layout, across_hosts
from infercost.errors import InputError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SKY = {"SKYPILOT_NUM_NODES": "2", "SKYPILOT_NODE_RANK": "1", "SKYPILOT_NODE_IPS": "10.0.0.5\n10.0.0.6"}


def test_a_host_finds_its_place_from_flags_or_from_skypilots_variables():
    assert find(None, None, None, {}) is None
    assert find(None, None, None, {"SKYPILOT_NUM_NODES": "1"}) is None  # one node: a run on one host
    assert find("10.1.2.3:9000", 4, 3, {}) == Hosts(4, 3, "10.1.2.3", 9000, "flags")
    assert find(None, None, None, SKY) == Hosts(2, 1, "10.0.0.5", 8476, "skypilot")  # host 0 is the first IP
    assert find("127.0.0.1:7000", 2, 1, SKY) == Hosts(2, 1, "127.0.0.1", 7000, "skypilot")


@pytest.mark.parametrize("flags, env, says", [
    (("h:1", 2, None), {}, "together"),
    (("h:1", 2, 2), {}, "out of range"),
    (("h:1", 1, 0), {}, "at least 2 hosts"),
    (("nohost", 2, 0), {}, "HOST:PORT"),
    (("h:99999", 2, 0), {}, "HOST:PORT"),
    ((None, 3, None), SKY, "disagrees with SKYPILOT_NUM_NODES=2"),
    ((None, None, 0), SKY, "disagrees with SKYPILOT_NODE_RANK=1"),
    ((None, None, None), {**SKY, "SKYPILOT_NODE_IPS": "10.0.0.5"}, "lists 1 hosts"),
    ((None, None, None), {**SKY, "SKYPILOT_NODE_RANK": "5"}, "out of range"),
    ((None, None, None), {"SKYPILOT_NUM_NODES": "two"}, "whole number"),
])
def test_inconsistent_host_counts_and_ranks_are_refused_in_one_line(flags, env, says):
    with pytest.raises(InputError, match=says):
        find(*flags, env)


def test_the_axes_crossing_hosts_follow_from_devices_numbered_host_by_host():
    # 2 hosts x 4 devices: tp=4 fills a host, dp=2 goes across; tp=8 must cross.
    assert across_hosts(Layout(tp=4, dp=2), 2) == ["dp"]
    assert across_hosts(Layout(tp=8), 2) == ["tp"]
    assert across_hosts(Layout(tp=2, dp=4), 2) == ["dp"]
    assert across_hosts(Layout(tp=1, dp=2), 2) == ["dp"]
    assert across_hosts(Layout(tp=2, ep=4), 4) == ["ep"]  # 2 devices a host: each tp pair on one host
    assert across_hosts(Layout(tp=4, dp=2), 1) == []


def _hosts(count, rank, port):
    return Hosts(count, rank, "127.0.0.1", port, "flags")


def _hello(rank, count=2, cases="abc"):
    return {"rank": rank, "count": count, "version": "1", "cases": cases}


def _lead_in_thread(hosts, hello, timeout):
    out = {}

    def go():
        try:
            out["link"] = hostlink.lead(hosts, hello, timeout)
        except InputError as e:
            out["error"] = str(e)
    t = threading.Thread(target=go)
    t.start()
    return t, out


def test_hosts_that_run_different_case_lists_are_refused_on_every_host():
    port = free_port()
    t, lead = _lead_in_thread(_hosts(2, 0, port), _hello(0), 10)
    with pytest.raises(InputError, match="different case list") as joined:
        hostlink.join(_hosts(2, 1, port), _hello(1, cases="xyz"), 10)
    t.join()
    assert "different case list" in lead["error"] and lead["error"] == str(joined.value)


def test_two_hosts_with_the_same_rank_are_refused_on_every_host():
    port = free_port()
    t, lead = _lead_in_thread(_hosts(3, 0, port), _hello(0, count=3), 10)
    errors = []

    def second():
        try:
            hostlink.join(_hosts(3, 1, port), _hello(1, count=3), 10)
        except InputError as e:
            errors.append(str(e))
    threads = [threading.Thread(target=second) for _ in range(2)]
    for th in threads:
        th.start()
        time.sleep(0.3)
    for th in threads + [t]:
        th.join()
    assert errors == ["two hosts claim host rank 1"] * 2 and lead["error"] == "two hosts claim host rank 1"


def test_a_host_that_never_joins_and_a_coordinator_nobody_answers_end_in_one_line_within_the_time_out():
    port = free_port()
    start = time.monotonic()
    t, lead = _lead_in_thread(_hosts(3, 0, port), _hello(0, count=3), 2)
    with pytest.raises(InputError) as joined:  # the host that came hears why the run did not start
        hostlink.join(_hosts(3, 1, port), _hello(1, count=3), 2)
    t.join()
    assert lead["error"] == str(joined.value) == f"host 2 of 3 did not join at 127.0.0.1:{port} within 2 s"
    with pytest.raises(InputError, match=f"could not reach host 0 at 127.0.0.1:{free_port()}|could not reach"):
        hostlink.join(_hosts(2, 1, free_port()), _hello(1), 1.5)
    assert time.monotonic() - start < 15


def _cli(args, rank, port, tmp_path, env_extra=None, out=None, min_time=0.05):
    env = {**os.environ, "SKYPILOT_NUM_NODES": "2", "SKYPILOT_NODE_RANK": str(rank),
           "SKYPILOT_NODE_IPS": "127.0.0.1\n127.0.0.1", **(env_extra or {})}
    cmd = [sys.executable, "-m", "infercost.cli", "run", *args, "--coordinator", f"127.0.0.1:{port}",
           "--join-timeout", "60", "--threads", "1", "--min-time", str(min_time), "--warmup", "0.05", "--repeats", "3"]
    if out is not None:
        cmd += ["--out", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


SAME_EXCEPT = {"timestamp", "timing", "stats", "raw_times_s", "metrics", "provenance", "hosts", "warnings", "reasons",
               "status", "valid"}


def _comparable(rec):
    """A record without its timings and host fields (its check's own timing too)."""
    out = {k: v for k, v in rec.items() if k not in SAME_EXCEPT and k != "key"}
    out["case"] = {k: v for k, v in rec["case"].items() if k != "launch"}
    out["case"]["params"] = {k: v for k, v in rec["case"]["params"].items() if k != "hosts"}
    return out


@pytest.mark.slow
def test_two_local_hosts_measure_a_split_model_as_one_process_does(tmp_path):
    args = ["--backend", "jax-cpu,torch-cpu", "--model", "tiny", "--mesh", "tp=2", "--workload", "decode",
            "--tokens", "16"]
    port = free_port()
    one, many = tmp_path / "one.jsonl", tmp_path / "many.jsonl"
    # the one-process run beside the two hosts (no timing is compared here: it saves the test time)
    single = subprocess.Popen([sys.executable, "-m", "infercost.cli", "run", *args, "--threads", "1", "--min-time",
                               "0.05", "--warmup", "0.05", "--repeats", "3", "--out", str(one)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    follower = _cli(args, 1, port, tmp_path)
    leader = _cli(args, 0, port, tmp_path, out=many)
    single_out, _ = single.communicate(timeout=600)
    assert single.returncode == 0, single_out
    by_backend = {r["case"]["backend"]: r for r in _records(one)}
    for r in by_backend.values():  # one process: the layout recorded, the split said in the launch
        assert r["check"]["passed"] and r["case"]["layout"] == "tp=2,dp=1" and r["case"]["devices"] == 2, r
    assert "2 devices" in by_backend["jax-cpu"]["case"]["launch"]
    assert "over 2 ranks (gloo)" in by_backend["torch-cpu"]["case"]["launch"]
    lead_out, _ = leader.communicate(timeout=600)
    follow_out, _ = follower.communicate(timeout=60)
    assert leader.returncode == 0 and follower.returncode == 0, lead_out + follow_out
    assert not (tmp_path / "results").exists()  # host 1 keeps no records
    for rec in _records(many):
        ref = by_backend.pop(rec["case"]["backend"])
        assert rec["check"]["passed"] and rec["check"]["greedy_tokens_agree"] and rec["check"]["error"] < 1e-5, rec
        assert ref["check"]["passed"] and ref["check"]["greedy_tokens_agree"]
        assert rec["hosts"]["count"] == 2 and rec["hosts"]["devices_per_host"] == 1
        assert rec["case"]["params"]["hosts"] == 2 and rec["key"] != ref["key"]  # another configuration
        assert rec["hosts"]["source"] == "skypilot" and rec["hosts"]["across_hosts"] == ["tp"]
        assert set(rec["hosts"]["open_s"]) == {"0", "1"}  # each host's join and start, outside the timing
        assert rec["status"] in ("ok", "invalid") and rec["metrics"]["flops"] == ref["metrics"]["flops"]
        assert rec["metrics"]["bytes"] == ref["metrics"]["bytes"]
        mine, theirs = _comparable(rec), _comparable(ref)
        for side in (mine, theirs):
            side["check"] = {k: v for k, v in side["check"].items() if k not in ("launch", "error")}
        assert mine == theirs
    assert not by_backend  # both backends measured on both hosts
    assert "host 1 of 2" in follow_out and "host 0 keeps the records" in follow_out


def test_by_default_a_run_over_hosts_is_data_parallel_across_them():
    from types import SimpleNamespace
    from infercost.commands.run import planned
    args = SimpleNamespace(devices=None, mesh=None, suite="quick", workload=[], dtype=[], shape=[], model=[["tiny"]],
                           batch=[["2"]], tokens=[["16"]], weights=None, tf32=False, quant=None, kv_cache=None,
                           collective_bytes=[])
    probes = {"jax-cpu": {"available": True, "devices": 1, "unsupported": {}}}
    cases, _ = planned(args, ["jax-cpu"], probes, 1, Hosts(2, 0, "127.0.0.1", 1, "flags"))
    assert {str(c.layout) for c in cases} == {"tp=1,dp=2"} and {c.workload for c in cases} == {"prefill", "decode"}
    gpus = {"jax-gpu": {"available": True, "devices": 8, "unsupported": {}}}  # 8 GPUs a host: tp=8 inside
    cases, _ = planned(args, ["jax-gpu"], gpus, 1, Hosts(2, 0, "127.0.0.1", 1, "flags"))
    assert {str(c.layout) for c in cases} == {"tp=8,dp=2"} and {c.devices for c in cases} == {16}
    moe = SimpleNamespace(**{**vars(args), "model": [["tiny-moe"]]})  # a mixture of experts: ep across hosts
    cases, _ = planned(moe, ["jax-cpu"], probes, 1, Hosts(2, 0, "127.0.0.1", 1, "flags"))
    assert {str(c.layout) for c in cases} == {"tp=1,dp=1,ep=2"}


@pytest.mark.slow
def test_collectives_are_measured_across_the_hosts_and_within_one_host_apart(tmp_path):
    args = ["--backend", "jax-cpu", "--collective-bytes", "64K", "--mesh", "tp=4"]
    port, out = free_port(), tmp_path / "r.jsonl"
    follower = _cli(args, 1, port, tmp_path)
    leader = _cli(args, 0, port, tmp_path, out=out)
    lead_out, _ = leader.communicate(timeout=600)
    follower.communicate(timeout=60)
    assert leader.returncode == 0, lead_out
    recs = _records(out)
    assert len(recs) == 6  # 3 collectives x (across the hosts, within one host)
    for rec in recs:
        assert rec["check"]["passed"], (rec["case"], rec["reasons"])
        within = rec["case"]["params"].get("within_host", False)
        assert rec["case"]["devices"] == (2 if within else 4)
        assert rec["hosts"]["scope"] == ("within one host" if within else "across hosts")
        assert rec["hosts"]["across_hosts"] == ([] if within else ["devices"])
        assert rec["check"]["checked"] == f"every element on all {2 if within else 4} devices against float64"


def _children(pid):
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [(int(line.split(None, 1)[0]), line.split(None, 1)[1]) for line in out.splitlines() if line.strip()]


@pytest.mark.slow
def test_a_host_whose_worker_dies_mid_case_gives_host_0_an_error_record_and_the_next_case_runs(tmp_path):
    # a mixture of experts with its experts split across the two hosts (ep=2)
    args = ["--backend", "jax-cpu", "--model", "tiny-moe", "--mesh", "ep=2", "--batch", "2", "--workload", "decode",
            "--tokens", "16,24", "--case-timeout", "120"]
    port, out = free_port(), tmp_path / "r.jsonl"
    follower = _cli(args, 1, port, tmp_path, min_time=4)
    leader = _cli(args, 0, port, tmp_path, out=out, min_time=4)  # 4 s of timing: the kill lands mid-case
    seen = []
    for line in follower.stdout:
        seen.append(line)
        if "started" in line:
            break
    time.sleep(2.5)
    workers = [pid for pid, cmd in _children(follower.pid) if "infercost.bench.worker" in cmd]
    assert workers, "".join(seen)
    os.kill(workers[0], signal.SIGKILL)
    lead_out, _ = leader.communicate(timeout=600)
    rest, _ = follower.communicate(timeout=60)
    assert leader.returncode == 0, lead_out
    first, second = _records(out)
    assert first["status"] == "error" and first["reasons"][0].startswith("host 1: worker killed by SIGKILL"), first
    assert first["case"]["params"]["tokens"] == 16 and first["hosts"]["count"] == 2
    assert second["case"]["params"]["tokens"] == 24 and second["check"]["passed"], second
    assert second["hosts"]["across_hosts"] == ["ep"] and second["case"]["layout"] == "tp=1,dp=1,ep=2"
    # --resume: host 0 decides what is left (the case that failed); this time host 1's infercost
    # itself is killed mid-case: host 0 records the case as an error and ends the run in one line
    follower = _cli(args + ["--resume"], 1, port, tmp_path, min_time=4)
    leader = _cli(args + ["--resume"], 0, port, tmp_path, out=out, min_time=4)
    for line in follower.stdout:
        if "started" in line:
            break
    time.sleep(2.5)
    follower.kill()
    lead_out, _ = leader.communicate(timeout=600)
    follower.communicate(timeout=60)
    assert leader.returncode == 1 and "1 cases (1 already recorded)" in lead_out, lead_out
    assert "host 1 left the run" in lead_out and "--resume" in lead_out and "Traceback" not in lead_out
    third = _records(out)[2]
    assert third["case"]["params"]["tokens"] == 16 and third["status"] == "error"
    assert third["reasons"] == ["host 1: left the run"]


def test_hosts_running_different_infercost_versions_are_refused():
    assert "different infercost version" in hostlink.admit(_hello(0), {**_hello(1), "version": "2"}, 1,
                                                           _hosts(2, 0, 1), {})
    assert hostlink.admit(_hello(0), _hello(1), 1, _hosts(2, 0, 1), {}) is None


def test_a_layout_that_does_not_split_evenly_over_the_hosts_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "infercost.cli", "run", "--backend", "jax-cpu", "--model", "tiny",
                           "--mesh", "tp=3", "--workload", "decode", "--coordinator", f"127.0.0.1:{free_port()}",
                           "--num-hosts", "2", "--host-rank", "0"], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 2 and "not a whole number of 2 hosts' devices" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "results").exists()

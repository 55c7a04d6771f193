"""Reports: figures and tables from real result files, escaped HTML, checked in a real browser."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

FIXTURES = Path(__file__).parent / "fixtures"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A real run: matmul and transformer cases on torch-cpu, with a hostile string in a record."""
    out = tmp_path_factory.mktemp("run") / "run.jsonl"
    proc = subprocess.run([sys.executable, "-m", "infercost.cli", "run", "--backend", "torch-cpu",
                           "--shape", "256x256x256", "--shape", "1024x1024x1024", "--model", "tiny",
                           "--batch", "1,2", "--tokens", "16", "--dtype", "float32",
                           "--min-time", "0.1", "--warmup", "0.05", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = out.read_text().splitlines()
    evil = json.loads(lines[0])
    evil["case"]["device"] = '<script>document.title="pwned"</script><img src=x onerror=alert(1)>'
    evil["provenance"]["command"] = "</td><b>not bold</b>"
    out.write_text("\n".join([json.dumps(evil), *lines[1:]]) + "\n")
    return out


def make_report(results, out, *price):
    proc = subprocess.run([sys.executable, "-m", "infercost.cli", "report", str(results), "--out", str(out), *price],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


def figures_listed(proc) -> list[str]:
    return proc.stdout.split("figures: ")[1].split(")")[0].split(", ")


def figures_expected(results) -> set[str]:
    """What the records can support: a cost figure needs a valid token case, the frontier a valid
    decode case (a tiny model's case can be too noisy to count on a busy machine)."""
    ok = [json.loads(l) for l in results.read_text().splitlines() if json.loads(l)["status"] == "ok"]
    kinds = {r["case"]["workload"] for r in ok}
    return {"roofline", "matmul"} | ({"cost"} if kinds & {"prefill", "decode"} else set()) \
        | ({"frontier"} if "decode" in kinds else set())


@pytest.mark.slow
def test_report_writes_markdown_html_csv_and_parquet(results, tmp_path):
    proc = make_report(results, tmp_path, "--price-per-hour", "0.357")  # CPU results: the whole machine's price
    figures = figures_listed(proc)
    assert set(figures) == figures_expected(results)
    for name in ("report.md", "report.html", "results.csv", "results.parquet", *(f"{f}.png" for f in figures)):
        assert (tmp_path / name).stat().st_size > 0, name
    csv, parquet = pd.read_csv(tmp_path / "results.csv"), pd.read_parquet(tmp_path / "results.parquet")
    assert len(csv) == len(parquet) == len(results.read_text().splitlines())
    assert list(parquet["backend"].unique()) == ["torch-cpu"]
    md = (tmp_path / "report.md").read_text()
    assert "--price-per-hour 0.357" in md and "records from 1 file(s): run.jsonl" in md
    assert md.count("![") == len(figures) and "| backend | device |" in md


@pytest.mark.slow
def test_text_from_result_files_is_escaped_in_html(results, tmp_path):
    make_report(results, tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert "<script>document.title" not in page and "<img src=x" not in page and "<b>not bold</b>" not in page
    assert "&lt;script&gt;document.title" in page


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM and not os.environ.get("CI"), reason="Debian's chromium is not installed")
def test_the_html_report_loads_in_a_real_browser_with_every_figure_shown(results, tmp_path):
    assert CHROMIUM, "CI must install chromium (.ci/run does)"
    figures = figures_listed(make_report(results, tmp_path, "--price-per-hour", "0.357", "--accelerators", "0"))
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
                           "--dump-dom", (tmp_path / "report.html").as_uri()],
                          capture_output=True, text=True, timeout=120)
    dom = proc.stdout
    assert f'data-figures-expected="{len(figures)}"' in dom, dom[:500]
    assert f'data-figures-shown="{len(figures)}"' in dom  # every image decoded with a real size
    assert "data-errors" not in dom          # no script or resource error
    assert "<title>infercost report</title>" in dom  # the injected script never ran


@pytest.mark.slow
def test_the_python_api_prices_and_draws_from_a_notebook(results):
    import infercost
    df = infercost.price_results(results, price_per_hour=0.357, accelerators=0)
    assert len(df) and (df["price"].str.contains("0.357")).all()
    matmul = df[df["workload"] == "matmul"]
    assert len(matmul) and (matmul["usd_per_pflop"] > 0).all()
    figs = infercost.figures(results, price_per_hour=0.357, accelerators=0)
    assert set(figs) == figures_expected(results)


def test_estimates_beside_measurements_give_each_cell_its_ratio_and_each_device_kind_its_error(results, tmp_path):
    from infercost.report import accuracy
    ours = [json.loads(l) for l in Path(results).read_text().splitlines()]
    assert accuracy.cells(ours) == []  # CPU runs: no catalog ceilings to estimate from
    # An H100 decode of llama-3.1-8b in bf16 at batch 1 measured at 100 and at 200 tok/s. By hand:
    # it streams ~15.3 GB a token (7.5B weights but the embedding, 2 bytes each, and ~0.27 GB of cache)
    # at 3.35 TB/s: ~219 tok/s at most, so the estimate is ~2.2x the first and ~1.1x the second.
    gpu = []
    for tps in (100.0, 200.0):
        # (a decode record of the run as the template: on a busy host it may be invalid, so made valid here)
        rec = json.loads(json.dumps(next(r for r in ours if r["case"]["workload"] == "decode")))
        rec.update(status="ok", valid=True, reasons=[])
        rec["case"].update(device="NVIDIA H100 80GB HBM3", device_kind="gpu", devices=1, dtype="bfloat16",
                           params={"model": "llama-3.1-8b", "batch": 1, "tokens": 2048})
        rec["metrics"].update(output_tokens_per_s=tps, output_tokens_per_s_per_chip=tps, tpot_s=1 / tps,
                              per_user_tokens_per_s=tps, output_tokens_per_s_ci95_low=tps, output_tokens_per_s_ci95_high=tps)
        gpu.append(rec)
    found = accuracy.cells(ours + gpu)
    assert [f["measured"] for f in found] == [100.0, 200.0] and all(f["kind"] == "gpu" for f in found)
    assert 2.0 < found[0]["ratio"] < 2.4 and found[1]["ratio"] == pytest.approx(found[0]["ratio"] / 2)
    (err, n), = accuracy.errors_by_kind(found).values()
    assert n == 2 and err == pytest.approx((found[0]["ratio"] - 1 + abs(found[1]["ratio"] - 1)) / 2)
    path = tmp_path / "with-gpu.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ours + gpu) + "\n")
    proc = make_report(str(path), tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Estimates against measurements" in md and "gpu: mean absolute error" in md


@pytest.mark.slow
def test_a_large_folder_reports_its_first_rows_and_keeps_every_row_in_parquet(results, tmp_path, monkeypatch):
    # The real run's records copied 40 times under new keys, over the readers' pool; the table and
    # CSV thresholds lowered so that these few hundred records take the large folder's path.
    from infercost.bench import reading
    from infercost.report import render
    folder = tmp_path / "many"
    folder.mkdir()
    lines = results.read_text().splitlines()
    for part in range(4):
        copies = []
        for i in range(10):
            for line in lines:
                rec = json.loads(line)
                rec["key"] += f"#{part}-{i}"
                copies.append(json.dumps(rec))
        (folder / f"part-{part}.jsonl").write_text("\n".join(copies) + "\n")
    monkeypatch.setattr(reading, "POOL_BYTES", 0)
    monkeypatch.setattr(reading, "CHUNK_BYTES", 50_000)
    monkeypatch.setattr(render, "TABLE_ROWS", 5)
    monkeypatch.setattr(render, "CSV_ROWS", 100)
    from infercost.cli import main
    assert main(["report", str(folder), "--out", str(tmp_path / "out"), "--price-per-hour", "0.357"]) == 0
    total = 40 * len(lines)
    assert len(pd.read_parquet(tmp_path / "out" / "results.parquet")) == total
    assert not (tmp_path / "out" / "results.csv").exists()
    md = (tmp_path / "out" / "report.md").read_text()
    ok = sum(json.loads(l)["status"] == "ok" for l in lines) * 40
    assert f"{ok - 5:,} more rows in results.parquet" in md and "results.csv is not written above 100 rows" in md
    assert f"{total} records from 4 file(s)" in md

"""bench/gpu.py on CPU with its tiny shapes: every branch's workload runs one real training step of the
library's model and the table reports samples/s, FLOPs and the LLM-CTR phase-1 projection (a smoke test of
the script a GPU machine runs; no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_gpu_bench_runs_every_workload_on_cpu(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--device", "cpu", "--steps", "2",
                        "--warmup", "1", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    results = json.loads((tmp_path / "gpu.json").read_text())
    assert set(results) == {"deepfm", "llm_ctr", "fastformer", "sasrec"}
    for w, res in results.items():
        assert res["step_s"] > 0 and res["flops_per_step"] > 0, (w, res)   # FlopCounterMode saw the GEMMs
        assert res["timed_steps"] >= 1
    assert results["llm_ctr"]["step_s_nocache"] > 0 and results["llm_ctr"]["step_s_cache"] > 0
    table = (tmp_path / "gpu.md").read_text()
    for needle in ("| deepfm |", "| llm_ctr |", "| fastformer |", "| sasrec |", "phase 1 over 11,500,000 rows",
                   "tiny shapes"):
        assert needle in table, table


def test_peak_table_matches_device_names():
    sys.path.insert(0, str(ROOT))
    from bench.gpu import peak_tflops

    assert peak_tflops("NVIDIA H200", "bfloat16") == pytest.approx(989.4)
    assert peak_tflops("NVIDIA H100 PCIe", "float32") == pytest.approx(51.2)
    assert peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16") == pytest.approx(989.4)
    assert peak_tflops("cpu", "float32") is None

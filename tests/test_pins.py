"""recdag check-metrics' rules (pipeline/core/pins.py): exact counts, float tolerances, trained counts."""

from __future__ import annotations

import pytest

from pipeline.core.errors import ConfigError
from pipeline.core.pins import PinRules, judge


def rules(tmp_path, text: str) -> PinRules:
    (tmp_path / "r.yaml").write_text(text)
    return PinRules.load(tmp_path / "r.yaml")


def test_counts_are_exact_unless_a_training_run_chooses_them(tmp_path):
    r = rules(tmp_path, 'float_abs_tol: 1.0e-6\ntolerances: {"*:*auc*": 0.01}\n'
                        'trained_counts: {"*:*best_step": 25}\nignore: ["*seconds*"]\n')
    assert judge("a.json:rows", 100, 101, r) == ("drift", "exact (count)")
    assert judge("a.json:x.best_step", 57, 50, r) == ("ok", "abs tol 25 (trained count)")
    assert judge("a.json:x.best_step", 57, 25, r)[0] == "drift"
    assert judge("a.json:x.auc", 0.7754, 0.7741, r)[0] == "ok" and judge("a.json:x.ctr", 0.17, 0.1701, r)[0] == "drift"
    assert judge("a.json:wall_seconds", 1, 2, r) == ("ignored", "ignored")


def test_the_repo_rules_load_and_unknown_keys_are_refused(tmp_path):
    r = PinRules.load("conf/check_metrics.yaml")
    assert r.count_tolerance("reports/avazu/llm_phase1-seed.json:metrics.x2_sample20.best_step") > 0
    assert r.count_tolerance("reports/avazu/leakage.json:train.x1/train.excluded_rows") == 0
    with pytest.raises(ConfigError, match="unknown key 'trained'"):
        rules(tmp_path, "float_abs_tol: 1.0e-6\ntrained: {}\n")

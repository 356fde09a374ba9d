"""The report's training section shows the held-out scores a trainer logged (model/eval.py)."""

from __future__ import annotations

import json
import re

from pipeline.report import build_report


def test_held_out_scores_are_a_table_row_per_measured_step(tmp_path):
    records = [{"step": s, "loss": 5.0 - s * 0.1, "lr": 1e-3, "grad_norm": 1.0, "tokens_per_s": 1000.0,
                "mfu": None, "tokens": 512 * s} for s in range(1, 7)]
    records[2].update({"bpb/plays": 3.25, "acc/cloze": 0.3, "acc_norm/cloze": 0.35})
    records[5].update({"bpb/plays": 2.5, "acc/cloze": 0.5, "acc_norm/cloze": 0.45})
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    html = build_report(tmp_path, trainer_log="log.jsonl").read_text()
    assert "Held-out evaluation" in html
    header = re.search(r"Held-out evaluation.*?</tr>", html, re.S).group(0)
    # Sorted by set name, then bpb, acc, acc_norm.
    assert [h for h in ("acc/cloze", "acc_norm/cloze", "bpb/plays") if h in header] == [
        "acc/cloze", "acc_norm/cloze", "bpb/plays"]
    cells = re.findall(r"<td>([^<]*)</td>", html[html.index("Held-out evaluation"):])
    assert cells[:10] == [tmp_path.name, "3", "0.3000", "0.3500", "3.2500",
                          tmp_path.name, "6", "0.5000", "0.4500", "2.5000"]

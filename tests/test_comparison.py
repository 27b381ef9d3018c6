"""The paper's comparison end to end at a small size (cnnxfer.transfer.comparison and
`cnnxfer compare`): generation -> pretraining -> features -> training -> AP for every row."""
from __future__ import annotations

import json

import pytest

from cnnxfer.cli import main
from cnnxfer.transfer.comparison import ROWS


@pytest.mark.slow
def test_compare_runs_every_row_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    args = ["compare", "--out", str(out), "--images", "24", "--size", "96x72",
            "--source-images", "300", "--pretrain-epochs", "1", "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert all(row in printed for row in ROWS) and "patches/s" in printed
    results = json.loads((out / "results.json").read_text())
    assert list(results["rows"]) == list(ROWS)
    for row in results["rows"].values():
        assert set(row["ap"]) == set(results["classes"]) and 0 <= row["map"] <= 1
    assert {"world", "pretrain", "transfer_patches", "scratch", "transfer_whole_image",
            "total"} <= set(results["seconds"])
    assert "| transfer_patches |" in (out / "report.md").read_text()
    assert list((out / "transfer" / "maps").glob("*.png"))
    # a rerun reuses the world, the cached network, the features and the head
    assert main(args) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["notes"]["world"] == "reused" and again["notes"]["pretrain"].startswith(
        "reused")
    assert again["notes"]["scratch"] == "network reused"
    assert again["rows"] == results["rows"]


def test_weights_and_voc_go_together(tmp_path, capsys):
    assert main(["compare", "--out", str(tmp_path), "--weights", "w.safetensors"]) == 2
    assert "--weights and --voc go together" in capsys.readouterr().err

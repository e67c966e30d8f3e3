"""The shipped Hugging Face `evaluate` module loads offline and gives exactly `peftrun eval`'s numbers."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, require
from typer.testing import CliRunner

from peftrun.cli import app
from peftrun.metrics import evaluate_module_path
from peftrun.metrics.e2e import java_available

# Run in a fresh process so the offline switches are read when evaluate is imported, and its
# module cache is a fresh folder (nothing cached from an earlier load).
LOAD_AND_COMPUTE = """
import json, sys
import evaluate
from peftrun.metrics import evaluate_module_path

assert evaluate.config.HF_EVALUATE_OFFLINE
cases = json.loads(open(sys.argv[1], encoding="utf-8").read())
metric = evaluate.load(evaluate_module_path())
print(json.dumps([metric.compute(**case) for case in cases]))
print(evaluate.config.HF_MODULES_CACHE)
"""


def compute_offline(tmp_path: Path, cases: list[dict]) -> list[dict]:
    require(importlib.util.find_spec("evaluate") is not None, "evaluate is not installed (the dev extra)")
    inputs = tmp_path / "cases.json"
    inputs.write_text(json.dumps(cases), encoding="utf-8")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", LOAD_AND_COMPUTE, str(inputs)], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    *_, scores, cache = out.stdout.splitlines()
    assert Path(cache) == tmp_path / "modules" and any(Path(cache).rglob("peftrun_metrics.py"))
    return json.loads(scores)


def peftrun_eval(predictions: Path, references: Path, dataset: str) -> dict:
    result = CliRunner().invoke(
        app,
        ["eval", "--predictions", str(predictions), "--references", str(references), "--dataset", dataset]
        + ["--json"],
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["test"]


def test_the_module_is_a_folder_with_a_script_of_its_name():
    folder = Path(evaluate_module_path())
    assert (folder / f"{folder.name}.py").is_file()
    assert folder.is_relative_to(ROOT / "peftrun")  # inside the package: shipped as package data


def test_e2e_scores_equal_peftrun_eval(tmp_path):
    from peftrun.data import e2e

    instances = e2e.load_instances("dev")[:30]
    references = [list(i.references) for i in instances]
    # Real references, another instance's reference, a truncated one, an empty output.
    outputs = [
        refs[0]
        if i % 3 == 0
        else references[(i + 1) % 30][-1]
        if i % 3 == 1
        else refs[0][: len(refs[0]) // 2]
        for i, refs in enumerate(references)
    ]
    outputs[7] = ""
    predictions = tmp_path / "out.txt"
    predictions.write_text("".join(o + "\n" for o in outputs), encoding="utf-8")
    refs_file = tmp_path / "refs.jsonl"
    refs_file.write_text("".join(json.dumps({"references": r}) + "\n" for r in references), encoding="utf-8")

    expected = peftrun_eval(predictions, refs_file, "e2e")
    (module,) = compute_offline(
        tmp_path, [{"predictions": outputs, "references": references, "dataset": "e2e"}]
    )
    assert module == expected  # exactly: same names, same raw scale, same floats
    assert set(module) == {"BLEU", "NIST", "BLEU_py", "NIST_py", "METEOR", "ROUGE_L", "CIDEr"}
    assert 0 < module["BLEU"] < 1
    assert (module["METEOR"] is not None) == java_available()  # with Java, METEOR is compared too


def test_xsum_scores_equal_peftrun_eval(tmp_path):
    records = [json.loads(line) for line in (ROOT / "data/xsum-synthetic/dev.jsonl").open(encoding="utf-8")]
    summaries = [r["summary"] for r in records]
    outputs = [s if i % 2 else " ".join(s.split()[: 1 + i % 7]) for i, s in enumerate(summaries)]
    predictions = tmp_path / "out.txt"
    predictions.write_text("".join(o + "\n" for o in outputs), encoding="utf-8")
    gold = tmp_path / "dev.target"  # one summary per line, as summarisation gold files are
    gold.write_text("".join(s + "\n" for s in summaries), encoding="utf-8")

    expected = peftrun_eval(predictions, gold, "xsum")
    as_strings, as_lists = compute_offline(
        tmp_path,
        [
            {"predictions": outputs, "references": summaries, "dataset": "xsum"},
            {"predictions": outputs, "references": [[s] for s in summaries], "dataset": "xsum"},
        ],
    )
    assert as_strings == as_lists == expected
    assert set(expected) == {"ROUGE-1", "ROUGE-2", "ROUGE-L"} and 0 < expected["ROUGE-L"] < 100

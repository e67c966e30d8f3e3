"""The shipped sweeps (configs/sweeps/): each expands to its pinned run count and validates every
point against its model's architecture (offline: no weights, no data); each tiny twin has its
full-size sweep's shape; one twin runs end to end. The laptop studies (configs/sweeps/smollm2/) are
their own size: no twin; they share one budget and one script instead."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import ROOT

from peftrun.studies import sweep as sweeps
from peftrun.studies import sweep_file

SWEEPS = ROOT / "configs" / "sweeps"
TINY = SWEEPS / "tiny"
LAPTOP = SWEEPS / "smollm2"

# Run counts, as `peftrun sweep FILE --dry-run` lists them.
EXPECTED_RUNS = {
    "table1-e2e.yaml": 11,  # 11 method rows, seed 101
    "table2-xsum.yaml": 11,
    "lowdata-e2e.yaml": 4 * 2 * 5 * 2,  # sizes x methods x subsets x seeds
    "lowdata-xsum.yaml": 4 * 2 * 5 * 2,
    "prefix-length-e2e.yaml": 5,
    "prefix-length-xsum.yaml": 5,
    "embedding-vs-infix-e2e.yaml": 1 + 3 + 3,  # every-layer, EMB-1/10/20, INFIX-1/10/20
    "init-phrases-e2e.yaml": 9 * 5 * 2,  # 7 phrases + 2 random inits x subsets x seeds
    "extrapolation-xsum.yaml": 2 * 2,  # splits x {prefix, FT}
    "tiny/table1-e2e.yaml": 11,
    "tiny/table2-xsum.yaml": 11,
    "tiny/lowdata-e2e.yaml": 2 * 2,
    "tiny/lowdata-xsum.yaml": 2 * 2,
    "tiny/prefix-length-e2e.yaml": 3,
    "tiny/prefix-length-xsum.yaml": 3,
    "tiny/embedding-vs-infix-e2e.yaml": 7,
    "tiny/init-phrases-e2e.yaml": 5,
    "tiny/extrapolation-xsum.yaml": 4,
    "tiny/smoke.yaml": 8,
    "tiny/select.yaml": 5,  # the grid: 2 methods x 2 lrs + the frozen base (winners' seeds come later)
    "smollm2/methods-e2e.yaml": 9 * 2,  # frozen, icl, prompt, EMB, prefix, LoRA, adapter, top-2, full x 2
    "smollm2/lowdata-e2e.yaml": 3 * 3 * 3,  # methods x sizes x subsets
    "smollm2/prefix-length-e2e.yaml": 3,  # L=1, 5, 20 (L=10: the methods study's prefix run)
    "smollm2/init-e2e.yaml": 3 * 2,  # random L=6, "elephant", random L=1 x subsets (+ lowdata's phrase)
}
FULL_SIZE = sorted(name for name in EXPECTED_RUNS if not name.startswith(("tiny/", "smollm2/")))
LAPTOP_STUDIES = sorted(name for name in EXPECTED_RUNS if name.startswith("smollm2/"))


def _is_sweep(path) -> bool:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return isinstance(data, dict) and bool({"base", "grid", "cases"} & data.keys())


def test_every_shipped_sweep_has_a_pinned_run_count_and_a_tiny_twin_or_is_a_laptop_study():
    shipped = {str(p.relative_to(SWEEPS)) for p in SWEEPS.rglob("*.yaml") if _is_sweep(p)}
    assert shipped == set(EXPECTED_RUNS)
    for name in FULL_SIZE:
        assert (TINY / name).is_file(), f"{name} has no tiny twin in configs/sweeps/tiny/"
        assert (ROOT / "scripts" / f"reproduce_{name.removesuffix('.yaml').replace('-', '_')}.sh").is_file()
    script = (ROOT / "scripts" / "reproduce_smollm2_study.sh").read_text(encoding="utf-8")
    loop = next(line for line in script.splitlines() if line.startswith("for study in "))
    assert sorted(loop.removeprefix("for study in ").removesuffix("; do").split()) == [
        name.removeprefix("smollm2/").removesuffix(".yaml") for name in LAPTOP_STUDIES
    ]
    assert 'peftrun sweep "configs/sweeps/smollm2/$study.yaml"' in script


# What the user must give on the command line (the extrapolation split needs the URL list; no file
# is read while validating).
USER_OVERRIDES = {"extrapolation-xsum.yaml": ["data.url_file=XSum-WebArxiveUrls.txt"]}


@pytest.mark.parametrize("name", sorted(EXPECTED_RUNS))
def test_shipped_sweep_expands_and_validates_every_point(name, tmp_path):
    summary = sweeps.run(SWEEPS / name, root=tmp_path, overrides=USER_OVERRIDES.get(name), dry_run=True)
    assert len(summary["runs"]) == EXPECTED_RUNS[name]
    assert {r["state"] for r in summary["runs"]} == {"new"}
    assert not (tmp_path / summary["name"]).exists(), "a dry run creates nothing"


def test_the_extrapolation_sweep_validates_with_the_users_data_overrides(tmp_path):
    overrides = ["data.url_file=XSum-WebArxiveUrls.txt", "data.files.train=train.jsonl"]
    summary = sweeps.run(SWEEPS / "extrapolation-xsum.yaml", root=tmp_path, overrides=overrides, dry_run=True)
    assert all(r["overrides"][-2:] == overrides for r in summary["runs"])


def _shape(path, overrides=None) -> dict:
    """What a twin must share with its full-size sweep: grid keys, whether seeds vary, and the
    methods, variants and data splits its runs resolve to."""
    sweep = sweep_file.load(path, "unused", overrides)
    configs = [sweeps.resolved_config(point) for point in sweep.points]
    return {
        "grid keys": sorted(sweep.spec.grid),
        "several seeds": len(sweep.spec.seeds) > 1,
        "methods": sorted({(c.method.kind, getattr(c.method, "variant", None)) for c in configs}),
        "inits": sorted({getattr(c.method, "init_phrase", None) is not None for c in configs}),
        "extrapolation": sorted({str(c.data.extrapolation) for c in configs}),
        "datasets": sorted({c.data.dataset for c in configs}),
    }


@pytest.mark.parametrize("name", FULL_SIZE)
def test_tiny_twin_has_the_shape_of_its_full_size_sweep(name):
    full, twin = _shape(SWEEPS / name, USER_OVERRIDES.get(name)), _shape(TINY / name)
    full["several seeds"] = twin["several seeds"]  # twins run one seed
    assert twin == full
    twin_configs = [sweeps.resolved_config(p) for p in sweep_file.load(TINY / name, "unused").points]
    assert {c.model.name for c in twin_configs} <= {"tiny-gpt2", "tiny-bart"}
    assert all(c.decode.num_beams == 1 for c in twin_configs)


@pytest.mark.parametrize("name", LAPTOP_STUDIES)
def test_laptop_study_compares_on_the_fixed_dev_subset_of_the_pretrained_model(name):
    """Every laptop run: SmolLM2-135M, E2E, greedy decoding of the same first 128 dev MRs, a training
    budget of at most 150 updates of batch 8 (the CPU budget), the checkpoint chosen on dev loss;
    only the methods study reads the test split (its final table)."""
    configs = [sweeps.resolved_config(p) for p in sweep_file.load(SWEEPS / name, "unused").points]
    assert {c.model.name for c in configs} == {"smollm2-135m"}
    assert {c.data.dataset for c in configs} == {"e2e"}
    assert {(c.decode.num_beams, c.decode.limit) for c in configs} == {(1, 128)}
    assert all("dev" in c.decode.splits for c in configs)
    assert any("test" in c.decode.splits for c in configs) == (name == "smollm2/methods-e2e.yaml")
    trained = [c for c in configs if c.train.epochs]
    assert trained and all(c.train.max_steps <= 150 and c.train.batch_size == 8 for c in trained)
    assert all(c.train.select == "best" and c.train.eval_every for c in trained)


def test_the_laptop_methods_study_gives_every_trained_method_the_same_budget_and_two_seeds():
    sweep = sweep_file.load(LAPTOP / "methods-e2e.yaml", "unused")
    configs = [sweeps.resolved_config(p) for p in sweep.points]
    trained = [c for c in configs if c.train.epochs]
    budgets = {
        (c.train.max_steps, c.train.batch_size, c.data.train_size, c.data.subset_seed) for c in trained
    }
    assert len(budgets) == 1
    rows = {(c.method.kind, getattr(c.method, "variant", None)) for c in configs}
    assert rows == {
        ("full", None),  # twice: frozen (epochs 0) and fine-tuned
        ("icl", None),
        ("prompt", None),
        ("prefix", "embedding-only"),
        ("prefix", "every-layer"),
        ("lora", None),
        ("adapter", None),
        ("top-k", None),
    }
    assert any(c.method.kind == "full" and not c.train.epochs for c in configs), "no frozen-base row"
    assert len(sweep.spec.seeds) >= 2


def _laptop_configs(name: str) -> list[dict]:
    sweep = sweep_file.load(LAPTOP / name, "unused")
    return [sweeps.resolved_config(p).model_dump(mode="json") for p in sweep.points]


def _without(config: dict, *keys: str) -> dict:
    """The config with the dotted keys removed (what two runs are allowed to differ in)."""
    out = json.loads(json.dumps(config))
    for key in keys:
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node[part]
        node.pop(leaf)
    return out


def test_the_points_a_laptop_study_borrows_are_run_by_another_study_with_the_same_settings():
    """The length study's L=10 is the methods study's prefix run (seed 101), and the init study's
    "table-to-text:" point is the low-data prefix at 50 pairs: the report reads those runs, so they
    must differ from the borrowing study's own points only in what the study varies."""
    lengths = _laptop_configs("prefix-length-e2e.yaml")
    assert sorted(c["method"]["prefix_len"] for c in lengths) == [1, 5, 20]
    methods_prefix = [
        c
        for c in _laptop_configs("methods-e2e.yaml")
        if c["method"]["kind"] == "prefix"
        and c["method"]["variant"] == "every-layer"
        and c["train"]["seed"] == 101
    ]
    assert len(methods_prefix) == 1 and methods_prefix[0]["method"]["prefix_len"] == 10
    allowed = ("method.prefix_len", "decode.splits", "output")  # the methods run also decodes test
    assert _without(methods_prefix[0], *allowed) == _without(lengths[0], *allowed)

    inits = _laptop_configs("init-e2e.yaml")
    assert {c["method"]["init_phrase"] for c in inits} == {None, "elephant"}
    lowdata_prefix = [
        c
        for c in _laptop_configs("lowdata-e2e.yaml")
        if c["method"]["kind"] == "prefix" and c["data"]["train_size"] == 50
    ]
    assert {c["method"]["init_phrase"] for c in lowdata_prefix} == {"table-to-text:"}
    elephant = {c["data"]["subset_seed"]: c for c in inits if c["method"]["init_phrase"] == "elephant"}
    assert sorted(elephant) == [0, 1]  # the report borrows these two of the low-data subsets
    assert {c["data"]["subset_seed"] for c in lowdata_prefix} >= set(elephant)
    for borrowed in (c for c in lowdata_prefix if c["data"]["subset_seed"] in elephant):
        own = elephant[borrowed["data"]["subset_seed"]]
        differ = ("method.init_phrase", "output")
        assert _without(borrowed, *differ) == _without(own, *differ)


def test_a_tiny_twin_runs_end_to_end(tmp_path):
    """The low-data XSum twin (4 runs, ROUGE only: no JVM start per run) on 2 worker processes."""
    summary = sweeps.run(TINY / "lowdata-xsum.yaml", root=tmp_path, workers=2)
    assert summary["counts"] == {"done": 4}
    manifest = json.loads((tmp_path / "tiny-lowdata-xsum" / "sweep.json").read_text(encoding="utf-8"))
    assert [p["state"] for p in manifest["points"]] == ["done"] * 4
    for run in summary["runs"]:
        run_dir = tmp_path / "tiny-lowdata-xsum" / run["name"]
        assert (run_dir / "DONE").is_file()
        metrics = json.loads((run_dir / "metrics" / "dev.json").read_text(encoding="utf-8"))
        assert set(metrics["scores"]) == {"ROUGE-1", "ROUGE-2", "ROUGE-L"}

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
    # the laptop study (the grid: tuned settings run on dev only, winners' seeds come later)
    "smollm2/methods-e2e.yaml": 8 * 3 + 2,  # 8 tuned groups x 3 lrs + frozen base and ICL
    "smollm2/lowdata-e2e.yaml": 2 * 3 * 3,  # methods x sizes x subsets
    "smollm2/lowdata-lr-e2e.yaml": 2 * 3,  # methods x alternative lrs
    "smollm2/init-e2e.yaml": 3 * 3,  # random L=6, "elephant", random L=1 x subsets (+ lowdata's phrase)
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
    studies = [line.removeprefix("study ") for line in script.splitlines() if line.startswith("study ")]
    assert sorted(studies) == [name.removeprefix("smollm2/").removesuffix(".yaml") for name in LAPTOP_STUDIES]
    assert studies[0] == "methods-e2e"  # the first priority
    assert 'peftrun sweep "configs/sweeps/smollm2/$1.yaml"' in script


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
def test_laptop_study_compares_on_random_samples_of_the_pretrained_model(name):
    """Every laptop run: SmolLM2-135M, E2E, plain shuffled batches, greedy decoding of the same 256
    MRs drawn at random (seed 0) from each split it decodes, the checkpoint chosen on dev loss, and
    claims declared in the sweep file but for the learning-rate choice."""
    sweep = sweep_file.load(SWEEPS / name, "unused")
    configs = [sweeps.resolved_config(p) for p in sweep.points]
    assert {c.model.name for c in configs} == {"smollm2-135m"}
    assert {c.data.dataset for c in configs} == {"e2e"}
    assert {(c.decode.num_beams, c.decode.limit, c.decode.sample, c.decode.sample_seed) for c in configs} == {
        (1, None, 256, 0)
    }
    assert not any(c.data.group_by_length for c in configs)  # the token-mean loss: plain batches
    trained = [c for c in configs if c.train.epochs]
    assert trained and all(c.train.select == "best" and c.train.eval_every for c in trained)
    assert bool(sweep.spec.claims) == (name != "smollm2/lowdata-lr-e2e.yaml")


def test_the_laptop_methods_study_tunes_every_trained_method_on_the_same_budget_and_three_seeds():
    sweep = sweep_file.load(LAPTOP / "methods-e2e.yaml", "unused")
    points = [(p, sweeps.resolved_config(p)) for p in sweep.points]
    trained = [c for _, c in points if c.train.epochs]
    assert {
        (c.train.max_steps, c.train.batch_size, c.data.train_size, c.data.subset_seed) for c in trained
    } == {(150, 8, 2000, 0)}
    groups: dict[tuple, list[float]] = {}
    for point, c in points:
        if point.tuned and not point.selected_seed:
            key = (
                c.method.kind,
                getattr(c.method, "variant", None),
                getattr(c.method, "train_embeddings", None),
            )
            groups.setdefault(key, []).append(c.train.lr)
    assert set(groups) == {
        ("prompt", None, None),
        ("prefix", "embedding-only", None),
        ("prefix", "every-layer", None),
        ("lora", None, None),
        ("adapter", None, None),
        ("top-k", None, True),
        ("top-k", None, False),
        ("full", None, None),
    }
    for key, lrs in groups.items():  # 3 rates, about x3 apart, the usual one in the middle
        low, mid, high = sorted(lrs)
        assert len(lrs) == 3 and 2.9 < mid / low < 3.4 and 2.9 < high / mid < 3.4, key
    baselines = [c for p, c in points if not p.tuned and not p.selected_seed]
    assert sorted(c.method.kind for c in baselines) == ["full", "icl"]
    assert all(c.data.format == "chat" and not c.train.epochs for c in baselines)
    assert [c.method.draw for c in baselines if c.method.kind == "icl"] == ["per-seed"]
    assert len(sweep.spec.seeds) + len(sweep.spec.select.seeds) == 3


def test_the_low_data_studies_follow_the_papers_protocol():
    """Li & Liang's low-data settings: batch 10, warmup 100, dev loss every 50 updates on a dev set
    of 30% of the training size with early stopping, at most 200 updates for the prefix and
    100/100/200 for fine-tuning; the prefix from "table-to-text:", fine-tuning given the phrase as
    text; lr 5e-5 in the main study (the alternative study's rates are chosen on dev)."""
    for name in ("lowdata-e2e.yaml", "lowdata-lr-e2e.yaml", "init-e2e.yaml"):
        for c in (sweeps.resolved_config(p) for p in sweep_file.load(LAPTOP / name, "unused").points):
            assert (c.train.batch_size, c.train.warmup_steps, c.train.eval_every) == (10, 100, 50), name
            assert c.train.early_stopping_patience and c.data.dev_loss_size == round(0.3 * c.data.train_size)
            steps = {50: 100, 100: 100, 200: 200}[c.data.train_size] if c.method.kind == "full" else 200
            assert c.train.max_steps == steps, name
            if c.method.kind == "full":
                assert c.data.source_prefix == "table-to-text:"
            if name == "lowdata-e2e.yaml":
                assert c.train.lr == 5e-5
                assert c.method.kind == "full" or c.method.init_phrase == "table-to-text:"
    lowdata = [
        sweeps.resolved_config(p) for p in sweep_file.load(LAPTOP / "lowdata-e2e.yaml", "unused").points
    ]
    assert sorted({c.data.train_size for c in lowdata}) == [50, 100, 200]
    assert sorted({c.data.subset_seed for c in lowdata}) == [0, 1, 2]
    assert all("test" in c.decode.splits for c in lowdata)


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


def test_the_point_a_laptop_study_borrows_is_run_by_another_study_with_the_same_settings():
    """The init study's "table-to-text:" point is the low-data prefix at 50 pairs: the report reads
    those runs, so they must differ from the init study's own points only in the initialisation."""
    inits = _laptop_configs("init-e2e.yaml")
    assert {c["method"]["init_phrase"] for c in inits} == {None, "elephant"}
    lowdata_prefix = [
        c
        for c in _laptop_configs("lowdata-e2e.yaml")
        if c["method"]["kind"] == "prefix" and c["data"]["train_size"] == 50
    ]
    assert {c["method"]["init_phrase"] for c in lowdata_prefix} == {"table-to-text:"}
    elephant = {c["data"]["subset_seed"]: c for c in inits if c["method"]["init_phrase"] == "elephant"}
    assert sorted(elephant) == [0, 1, 2]
    assert {c["data"]["subset_seed"] for c in lowdata_prefix} == set(elephant)
    for borrowed in lowdata_prefix:
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

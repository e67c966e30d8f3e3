"""Config: typed, validated, overridable; shipped configs all validate; errors are one line."""

from __future__ import annotations

import pytest
import yaml
from conftest import ROOT, write_config

from peftrun import config
from peftrun.errors import PeftrunError

SWEEP_KEYS = {"base", "grid", "cases"}  # a sweep file (configs/sweeps/), not a run config


def _is_sweep(path) -> bool:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return isinstance(data, dict) and bool(SWEEP_KEYS & data.keys())


# Run configs only: sweep files are tested in tests/studies/test_shipped_sweeps.py; the tiny bases
# they name (configs/sweeps/tiny/base-*.yaml, configs/sweeps/smollm2/base-e2e.yaml) are run configs
# and stay here.
SHIPPED = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if not _is_sweep(p))


# Each dataset's paper-setting folder: the base model and dataset every config there uses.
PAPER_FOLDERS = {
    "configs/e2e/gpt2-medium": ("gpt2-medium", "e2e"),
    "configs/xsum/bart-large": ("facebook/bart-large", "xsum"),
}
# Every shipped run config, listed: adding or removing one is a deliberate edit here, and a file
# that stops being found (a glob or the sweep test gone wrong) is no longer validated in silence.
OTHER_RUN_CONFIGS = {
    "configs/quickstart.yaml",
    "configs/quickstart-no-prefix.yaml",
    "configs/quickstart-tiny.yaml",
    "configs/demo/base-lm.yaml",
    "configs/demo/no-prefix.yaml",
    "configs/demo/prefix.yaml",
    "configs/e2e/gpt2-medium/prefix-embedding-only.yaml",
    "configs/e2e/gpt2-medium/prefix-infix.yaml",
    "configs/e2e/gpt2-medium/prefix-lowdata.yaml",
    "configs/xsum/bart-large/prefix-len200.yaml",
    "configs/xsum/bart-large/prefix-lowdata.yaml",
    "configs/xsum/bart-large/prefix-src1024.yaml",
    "configs/xsum/tiny-bart-smoke.yaml",
    "configs/sweeps/tiny/base-e2e.yaml",
    "configs/sweeps/tiny/base-xsum.yaml",
    "configs/sweeps/smollm2/base-e2e.yaml",
}


def test_shipped_run_configs_are_the_listed_set_with_one_paper_config_per_method():
    from peftrun.methods import METHOD_KINDS

    paper = {f"{folder}/{kind}.yaml" for folder in PAPER_FOLDERS for kind in METHOD_KINDS}
    assert {p.relative_to(ROOT).as_posix() for p in SHIPPED} == paper | OTHER_RUN_CONFIGS
    for folder, (model, dataset) in PAPER_FOLDERS.items():
        for path in sorted((ROOT / folder).glob("*.yaml")):
            cfg = config.load(path)
            assert (cfg.model.name, cfg.data.dataset) == (model, dataset), path.name
            if path.relative_to(ROOT).as_posix() in paper:  # <kind>.yaml is that method
                assert cfg.method.kind == path.stem, path.name
    # Every other YAML file under configs/ is a sweep file, in configs/sweeps/.
    others = set((ROOT / "configs").rglob("*.yaml")) - set(SHIPPED)
    assert others and all(p.relative_to(ROOT).as_posix().startswith("configs/sweeps/") for p in others)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_config_validates_in_both_phases(path):
    from peftrun.models import BUILTIN, KNOWN_CONFIGS
    from peftrun.validation import check_against_model

    cfg = config.load(path)
    if cfg.model.name in BUILTIN or cfg.model.name in KNOWN_CONFIGS:  # demos name an earlier run's model
        check_against_model(cfg)
    assert cfg.train.loss_reduction in ("sequence_sum", "token_mean")
    assert "loss_reduction" in path.read_text(), "shipped configs set the loss reduction explicitly"


def test_yaml_scientific_notation_is_a_float(tmp_path):
    cfg = config.load(write_config(tmp_path, "train:\n  lr: 5e-5\n"))
    assert isinstance(cfg.train.lr, float) and cfg.train.lr == 5e-5


def test_overrides_apply_with_yaml_types(tmp_path):
    path = write_config(tmp_path, "method:\n  kind: prefix\n")
    cfg = config.load(
        path, ["train.lr=1e-4", "method.prefix_len=7", "decode.splits=[dev]", "train.precision=bf16"]
    )
    assert cfg.train.lr == 1e-4 and cfg.method.prefix_len == 7
    assert cfg.decode.splits == ("dev",) and cfg.train.precision == "bf16"


def test_run_dir_hash_changes_with_the_config(tmp_path):
    path = write_config(tmp_path, "name: demo\n")
    first, second = config.load(path), config.load(path, ["train.lr=1e-4"])
    assert first.run_dir() != second.run_dir()
    assert first.run_dir() == config.load(path).run_dir()
    assert config.load(path, ["output.root=elsewhere"]).run_dir().name == first.run_dir().name


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train:\n  lrr: 1\n", "unknown key 'train.lrr' (did you mean 'train.lr'?)"),
        ("trian:\n  lr: 1\n", "unknown key 'trian' (did you mean 'train'?)"),
        ("method:\n  kind: prefix\n  prefix_lenn: 3\n", "did you mean 'method.prefix_len'?"),
        ("method:\n  kind: prefx\n", "choose one of: full, prefix"),
        ("data:\n  dataset: wmt\n", "choose one of: e2e, xsum"),
        ("train:\n  lr: fast\n", "train.lr"),
        ("train:\n  epochs: 2.5\n", "train.epochs"),
        ("method:\n  kind: prefix\n  prefix_len: 0\n", "method.prefix_len"),
        ("train: [1, 2\n", "YAML syntax error"),
        ("- a\n- b\n", "must be a YAML mapping"),
    ],
)
def test_bad_configs_give_one_line_errors(tmp_path, text, message):
    with pytest.raises(PeftrunError) as err:
        config.load(write_config(tmp_path, text))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_yaml_syntax_error_names_the_line(tmp_path):
    with pytest.raises(PeftrunError, match="line 3"):
        config.load(write_config(tmp_path, "train:\n  lr: 1\n  epochs: x: 2\n"))


def test_missing_config_file(tmp_path):
    with pytest.raises(PeftrunError, match="config file not found"):
        config.load(tmp_path / "nope.yaml")


def test_bad_override_syntax(tmp_path):
    with pytest.raises(PeftrunError, match="key=value"):
        config.load(write_config(tmp_path, "model: {name: tiny-gpt2}\n"), ["train.lr"])


def test_phase_two_rejects_what_the_model_cannot_take(tmp_path):
    from peftrun.validation import check_against_model

    cfg = config.load(
        write_config(tmp_path, "model:\n  name: tiny-gpt2\nmethod:\n  kind: prefix\n  prefix_len: 600\n")
    )
    with pytest.raises(PeftrunError, match="positions"):
        check_against_model(cfg)
    cfg = config.load(
        write_config(
            tmp_path, "model:\n  name: tiny-bart\nmethod:\n  kind: prefix\n  position_offset: true\n"
        )
    )
    with pytest.raises(PeftrunError, match="GPT-2 prefixes only"):
        check_against_model(cfg)


def test_unloadable_model_suggests_local_path_or_builtin(tmp_path):
    from peftrun.validation import check_against_model

    cfg = config.load(write_config(tmp_path, "model:\n  name: no-such-org/no-such-model\n"))
    with pytest.raises(PeftrunError, match="tiny-gpt2") as err:
        check_against_model(cfg)
    assert "local copy" in str(err.value)


def test_docs_config_reference_is_current():
    import importlib.util

    script = ROOT / "scripts" / "config_reference.py"
    spec = importlib.util.spec_from_file_location("config_reference", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    page = (ROOT / "docs" / "configs.md").read_text(encoding="utf-8")
    assert module.spliced(page) == page, "run: python scripts/config_reference.py --write"


def test_shipped_configs_scripts_and_readme_use_only_what_the_project_ships():
    """../shared exists only on development machines: a user's clone has none of it."""
    docs = sorted((ROOT / "docs").glob("*.md"))  # the user guide's pages beside the README
    shipped = [*SHIPPED, ROOT / "README.md", *docs, *sorted((ROOT / "scripts").glob("*"))]
    offenders = [str(p.relative_to(ROOT)) for p in shipped if p.is_file() and "../shared" in p.read_text()]
    assert offenders == []
    for path in SHIPPED:
        cfg = config.load(path)
        for file in [*cfg.data.files.values(), cfg.data.url_file, cfg.data.data_dir]:
            if file and not file.startswith(("runs/", "/")):
                assert (ROOT / file).exists(), f"{path.name} names {file}, which the project does not ship"

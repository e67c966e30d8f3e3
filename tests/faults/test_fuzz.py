"""Bad input, generated: mutations of the shipped configs, of overrides, of data files and of paths.
Every case must end with exit code 2, exactly one `peftrun: error:` line, no traceback, and nothing
half-made (no run directory, no temporary file). Each mutation is bad by construction (it does not
rely on our validator to say so), and a guard fails the test if one ever reaches model loading."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import yaml
from annotated_types import Ge, Gt
from conftest import ROOT
from pydantic import BaseModel
from typer.testing import CliRunner

from peftrun import experiment
from peftrun.cli import app
from peftrun.config import Config
from peftrun.methods import REGISTRY

CONFIGS = [
    ROOT / "configs" / "quickstart.yaml",
    ROOT / "configs" / "xsum" / "tiny-bart-smoke.yaml",
    ROOT / "configs" / "demo" / "base-lm.yaml",
    ROOT / "configs" / "sweeps" / "tiny" / "base-e2e.yaml",
]
SYNTHETIC = ROOT / "data" / "xsum-synthetic"


class ReachedModelLoading(AssertionError):
    pass


@pytest.fixture
def guarded(monkeypatch):
    """No case may get as far as loading a model: that would mean the bad input was accepted."""

    def refuse(*_args, **_kwargs):
        raise ReachedModelLoading("a bad input was accepted and the run went on to load its model")

    monkeypatch.setattr(experiment, "Session", refuse)


def section_models() -> dict[str, type[BaseModel]]:
    return {
        name: field.annotation
        for name, field in Config.model_fields.items()
        if name not in ("name", "method")
    }


def constrained_fields(model: type[BaseModel]) -> list[str]:
    """Numeric fields that must be > 0 or >= 0."""
    return [
        name
        for name, field in model.model_fields.items()
        if any(isinstance(m, (Gt, Ge)) for m in field.metadata)
    ]


def leaf_keys(data: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    keys = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            keys += leaf_keys(value, (*prefix, key))
        else:
            keys.append((*prefix, key))
    return keys


def valid_names(section: str, data: dict) -> set[str]:
    if section == "method":
        return set(REGISTRY[data["method"]["kind"]].options.model_fields)
    model = section_models().get(section)
    return set(model.model_fields) if model else set()


def typo(word: str, rng: random.Random, forbidden: set[str]) -> str:
    for _ in range(50):
        chars = list(word)
        i = rng.randrange(len(chars))
        choice = rng.choice(["insert", "delete", "swap", "replace"])
        if choice == "insert":
            chars.insert(i, rng.choice("abcdefghijklmnopqrstuvwxyz_"))
        elif choice == "delete" and len(chars) > 1:
            del chars[i]
        elif choice == "swap" and i + 1 < len(chars) and chars[i] != chars[i + 1]:
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        else:
            chars[i] = "q" if chars[i] != "q" else "z"
        candidate = "".join(chars)
        if candidate and candidate not in forbidden:
            return candidate
    return word + "_x"


def set_key(data: dict, path: tuple[str, ...], value) -> None:
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def config_mutations(rng: random.Random, count: int) -> list[tuple[str, bytes]]:
    """(what, file bytes) pairs, each a config that cannot be valid."""
    cases = []
    for i in range(count):
        source = CONFIGS[i % len(CONFIGS)]
        text = source.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
        kind = rng.choice(["typo", "type", "range", "duplicate", "tab", "utf8", "utf16", "shape", "section"])
        if kind == "typo":
            path = rng.choice([k for k in leaf_keys(data) if len(k) == 2])
            bad = typo(path[1], rng, valid_names(path[0], data))
            section = data[path[0]]
            section[bad] = section.pop(path[1])
            cases.append((f"unknown key {path[0]}.{bad}", yaml.safe_dump(data).encode()))
        elif kind == "type":
            path = rng.choice(
                [k for k in leaf_keys(data) if len(k) == 2 and k[0] in ("train", "decode", "data")]
            )
            value = data[path[0]][path[1]]
            wrong = {"a": 1} if not isinstance(value, dict) else "text"
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                wrong = rng.choice(["many", [1, 2], {"a": 1}])
            elif isinstance(value, str):
                wrong = rng.choice([[1, 2], {"a": 1}])
            set_key(data, path, wrong)
            cases.append((f"wrong type {'.'.join(path)}={wrong!r}", yaml.safe_dump(data).encode()))
        elif kind == "range":
            section = rng.choice(["train", "decode", "data"])
            name = rng.choice(constrained_fields(section_models()[section]))
            data.setdefault(section, {})[name] = -1
            cases.append((f"out of range {section}.{name}=-1", yaml.safe_dump(data).encode()))
        elif kind == "duplicate":
            lines = text.splitlines(keepends=True)
            candidates = [j for j, line in enumerate(lines) if line.startswith("  ") and ":" in line]
            j = rng.choice(candidates)
            cases.append(
                (f"duplicated line {j + 1}", "".join(lines[: j + 1] + [lines[j]] + lines[j + 1 :]).encode())
            )
        elif kind == "tab":
            lines = text.splitlines(keepends=True)
            j = rng.choice([j for j, line in enumerate(lines) if line.startswith("  ")])
            lines[j] = "\t" + lines[j].lstrip(" ")
            cases.append((f"tab at line {j + 1}", "".join(lines).encode()))
        elif kind == "utf8":
            raw = text.encode()
            at = rng.randrange(len(raw))
            cases.append((f"byte 0xff at {at}", raw[:at] + b"\xff" + raw[at:]))
        elif kind == "utf16":
            cases.append(("UTF-16 file", text.encode("utf-16")))
        elif kind == "shape":
            shape = rng.choice(["", "- model\n- data\n", "just a string\n", "42\n", "# only a comment\n"])
            cases.append((f"top level {shape.strip()!r}", shape.encode()))
        else:  # a section that is not a mapping
            section = rng.choice(["model", "data", "train", "decode", "method"])
            data[section] = rng.choice([["a", "b"], "text", 3])
            cases.append((f"section {section} is {data[section]!r}", yaml.safe_dump(data).encode()))
    return cases


UNPARSABLE = ["[1,", "{a: 1", '"unterminated', "@x"]


def override_mutations(rng: random.Random, count: int) -> list[tuple[str, list[str]]]:
    keys = ["train.lr", "train.batch_size", "decode.num_beams", "data.train_size", "model.name", "train.seed"]
    cases = []
    for _ in range(count):
        kind = rng.choice(["no-equals", "unknown", "yaml", "type", "range", "into-scalar", "empty-key"])
        key = rng.choice(keys)
        section, name = key.split(".")
        if kind == "no-equals":
            cases.append((kind, [key.replace(".", "_") + "5"]))
        elif kind == "unknown":
            cases.append((kind, [f"{section}.{typo(name, rng, valid_names(section, {}))}=1"]))
        elif kind == "yaml":
            value = rng.choice(UNPARSABLE)
            cases.append((kind, [f"{key}={value}"]))
        elif kind == "type":
            cases.append((kind, [f"{key}={rng.choice(['[1, 2]', '{a: 1}'])}"]))
        elif kind == "range":
            name = rng.choice(constrained_fields(section_models()["train"]))
            cases.append((kind, [f"train.{name}=-3"]))
        elif kind == "into-scalar":
            cases.append((kind, [f"{key}.deeper=1"]))
        else:
            cases.append((kind, ["=3"]))
    return cases


def xsum_mutations(rng: random.Random, count: int) -> list[tuple[str, bytes]]:
    lines = (SYNTHETIC / "train.jsonl").read_bytes().splitlines(keepends=True)[:30]
    cases = []
    for _ in range(count):
        kind = rng.choice(["truncate", "not-object", "missing", "type", "empty", "utf8", "brace"])
        body = list(lines)
        j = rng.randrange(len(body))
        record = json.loads(body[j])
        if kind == "truncate":
            cut = rng.randrange(1, len(body[j]) - 2)
            body[j] = body[j][:cut] + b"\n"
        elif kind == "not-object":
            body[j] = rng.choice([b"[1, 2]\n", b'"text"\n', b"3\n", b"null\n"])
        elif kind == "missing":
            record.pop(rng.choice(["document", "summary", "id"]))
            body[j] = (json.dumps(record) + "\n").encode()
        elif kind == "type":
            record[rng.choice(["document", "summary"])] = rng.choice([3, [1], None, {"a": 1}])
            body[j] = (json.dumps(record) + "\n").encode()
        elif kind == "empty":
            body = []
        elif kind == "utf8":
            body[j] = body[j][:10] + b"\xc3\x28" + body[j][10:]
        else:
            body[j] = body[j].replace(b"{", b"", 1)
        cases.append((f"xsum {kind} (line {j + 1})", b"".join(body)))
    return cases


def e2e_mutations(rng: random.Random, count: int) -> list[tuple[str, str, bytes]]:
    """(what, which file, its bytes) for an E2E data_dir whose other files are fine."""
    from peftrun.data import e2e

    rows = e2e.read_rows("dev")[:40]
    good = "mr,ref\n" + "".join(f'"{mr}","{ref}"\n' for mr, ref in rows)
    cases = []
    for _ in range(count):
        kind = rng.choice(["header", "empty", "quote", "utf8", "mr", "columns"])
        target = rng.choice(["trainset.csv", "devset.csv"])
        lines = good.splitlines(keepends=True)
        j = rng.randrange(1, len(lines))
        if kind == "header":
            lines[0] = "meaning,text\n"
        elif kind == "empty":
            lines = []
        elif kind == "quote":
            lines[j] = lines[j].replace('","', ",", 1)[:-2] + "\n"  # an opened quote never closed
        elif kind == "utf8":
            lines[j] = lines[j][:5] + "\udcff" + lines[j][5:]
        elif kind == "mr":
            lines[j] = '"name[Aromi, area[city centre]","A ref."\n'
        else:
            lines[j] = '"name[Aromi]"\n'
        raw = "".join(lines).encode("utf-8", "surrogateescape")
        cases.append((f"e2e {target} {kind} (line {j + 1})", target, raw))
    return cases


def check_one_line_error(result, what: str, tmp_path: Path) -> None:
    assert not isinstance(result.exception, ReachedModelLoading), what
    assert result.exit_code == 2, f"{what}: exit {result.exit_code}: {result.output[-500:]}"
    assert "Traceback" not in result.output, what
    errors = [line for line in result.output.splitlines() if line.startswith("peftrun: error:")]
    assert len(errors) == 1, f"{what}: {result.output[-500:]}"
    assert not (tmp_path / "run").exists(), f"{what}: a run directory was left behind"
    assert not [p for p in tmp_path.rglob("*.tmp")], f"{what}: a temporary file was left behind"


def test_generated_bad_inputs_each_give_one_line_and_leave_nothing(tmp_path, guarded, large):
    rng = random.Random(1234)
    runner = CliRunner()
    scale = 4 if large else 1
    tried = 0
    run_dir = str(tmp_path / "run")
    for what, raw in config_mutations(rng, 110 * scale):
        path = tmp_path / "config.yaml"
        path.write_bytes(raw)
        check_one_line_error(runner.invoke(app, ["train", str(path), "--run-dir", run_dir]), what, tmp_path)
        tried += 1
    base = str(CONFIGS[0])
    for what, overrides in override_mutations(rng, 40 * scale):
        result = runner.invoke(app, ["train", base, *overrides, "--run-dir", run_dir])
        check_one_line_error(result, f"override {what}: {overrides}", tmp_path)
        tried += 1
    xsum = [f"data.files.{s}={SYNTHETIC / (s + '.jsonl')}" for s in ("dev", "test")]
    for what, raw in xsum_mutations(rng, 35 * scale):
        bad = tmp_path / "train.jsonl"
        bad.write_bytes(raw)
        result = runner.invoke(
            app, ["train", str(CONFIGS[1]), f"data.files.train={bad}", *xsum, "--run-dir", run_dir]
        )
        check_one_line_error(result, what, tmp_path)
        tried += 1
    for what, target, raw in e2e_mutations(rng, 25 * scale):
        folder = tmp_path / "e2e"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        from peftrun.data import e2e

        for name, split in (("trainset.csv", "train"), ("devset.csv", "dev"), ("testset_w_refs.csv", "test")):
            rows = e2e.read_rows(split)[:40]
            (folder / name).write_text(
                "mr,ref\n" + "".join(f'"{m}","{r}"\n' for m, r in rows), encoding="utf-8"
            )
        (folder / target).write_bytes(raw)
        result = runner.invoke(app, ["train", base, f"data.data_dir={folder}", "--run-dir", run_dir])
        check_one_line_error(result, what, tmp_path)
        tried += 1
    assert tried >= (200 if not large else 800)


def test_bad_paths_give_one_line_and_leave_nothing(tmp_path, guarded, monkeypatch):
    runner = CliRunner()
    base = str(CONFIGS[0])
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = {
        "missing config": ["train", str(tmp_path / "nope.yaml")],
        "config is a folder": ["train", str(tmp_path)],
        "run dir under a file": ["train", base, "--run-dir", str(a_file / "run")],
        "run dir is a file": ["train", base, "--run-dir", str(a_file)],
        "data file is a folder": [
            "train",
            str(CONFIGS[1]),
            f"data.files.train={tmp_path}",
            "--run-dir",
            str(tmp_path / "run"),
        ],
        "missing data folder": [
            "train",
            base,
            f"data.data_dir={tmp_path / 'nothing'}",
            "--run-dir",
            str(tmp_path / "run"),
        ],
        "missing data file": [
            "train",
            str(CONFIGS[1]),
            "data.files.train=nope.jsonl",
            "--run-dir",
            str(tmp_path / "run"),
        ],
    }
    for what, args in cases.items():
        check_one_line_error(runner.invoke(app, args), what, tmp_path)
    # Unwritable parent (as root permissions are not enforced, so the check itself is exercised).
    monkeypatch.setattr("peftrun.runs._writable", lambda _folder: False)
    check_one_line_error(
        runner.invoke(app, ["train", base, "--run-dir", str(tmp_path / "run")]), "unwritable", tmp_path
    )

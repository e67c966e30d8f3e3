"""The pure-Python PTB tokenizer against CoreNLP's Java PTBTokenizer (as COCO runs it)."""

from __future__ import annotations

import importlib.util
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from _e2e_testdata import (
    E2E,
    FIXTURES,
    load_dev_refs,
    load_test_refs,
    load_tokenized_test_refs,
    read_outputs,
    require,
    require_shared,
)

from peftrun.metrics.ptb_tokenizer import tokenize, tokenize_text

# Expected strings are what the Java tokenizer printed for these inputs.
CASES = [
    (
        "The Eagle is a family-friendly coffee shop. It's in the city centre.",
        "the eagle is a family-friendly coffee shop . it 's in the city centre .",
    ),
    ("Prices are £20-25, and it's rated 5 out of 5!", "prices are # 20-25 , and it 's rated 5 out of 5 !"),
    ("In the city center., near Café Rouge.", "in the city center. , near café rouge ."),
    (
        'I cannot say; they don\'t serve "fast food" (really).',
        "i can not say ; they do n't serve `` fast food '' -lrb- really -rrb- .",
    ),
    (
        "Rated 3.5 -- average... at 5,000 feet & 1/2 price.",
        "rated 3.5 -- average ... at 5,000 feet & 1/2 price .",
    ),
    ("Located on St. John's Rd. near the U.S. Embassy", "located on st. john 's rd. near the u.s. embassy"),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_known_java_outputs(text: str, expected: str) -> None:
    assert tokenize_text(text) == expected


def test_coco_punctuation_removal() -> None:
    # COCO drops ". , ; ! `` ''" etc. but not "-lrb-": it lists "-LRB-" in upper case.
    assert tokenize(['I cannot say; they don\'t serve "fast food" (really).']) == [
        "i can not say they do n't serve fast food -lrb- really -rrb-"
    ]


def test_context_crosses_caption_boundary() -> None:
    # COCO tokenises all captions as one text: "A." before a line starting with "The" is
    # split by the lexer's sentence-end rule, otherwise kept as an abbreviation.
    assert tokenize_text("It is rated A.") == "it is rated a."
    assert tokenize_text("It is rated A.\nThe end") == "it is rated a .\nthe end"
    assert tokenize(["It is rated A.", "The end"]) == ["it is rated a", "the end"]
    assert tokenize(["It is rated A."]) == ["it is rated a."]


def test_one_output_line_per_caption() -> None:
    assert tokenize(["", "a\nb", ""]) == ["", "a b", ""]


def _java_tokenize(text: str, tmp_path: Path) -> str:
    spec = importlib.util.find_spec("pycocoevalcap")
    jars = [Path(p) / "tokenizer" / "stanford-corenlp-3.4.1.jar" for p in spec.submodule_search_locations]
    jar = next(j for j in jars if j.is_file())
    path = tmp_path / "captions.txt"
    path.write_bytes(text.encode("utf-8"))
    cmd = ["java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase"]
    return subprocess.run([*cmd, str(path)], capture_output=True, check=True).stdout.decode("utf-8")


def _assert_same(text: str, tmp_path: Path) -> None:
    expected = _java_tokenize(text, tmp_path).split("\n")
    got = tokenize_text(text).split("\n")
    assert len(got) == len(expected)
    bad = [(i, e, g) for i, (e, g) in enumerate(zip(expected, got, strict=True)) if e != g]
    assert not bad, f"{len(bad)} lines differ, first: {bad[:3]}"


def _e2e_texts() -> list[str]:
    refs = [r for rs in load_dev_refs() + load_test_refs() + load_tokenized_test_refs() for r in rs]
    outputs = read_outputs(E2E / "system_outputs" / "tgen_baseline_dev.txt")
    outputs += read_outputs(FIXTURES / "template_test.txt") + read_outputs(FIXTURES / "perturbed_test.txt")
    return [t.replace("\n", " ") for t in refs + outputs]


def test_matches_java_on_all_e2e_text(tmp_path: Path) -> None:
    require(shutil.which("java") is not None, "Java is needed to run the reference tokenizer")
    require_shared()
    _assert_same("\n".join(_e2e_texts()), tmp_path)


FRAGMENTS = (
    "etc. St. Mr. U.S. e.g. i.e. Inc. Co. Ltd a.k.a. No. 5 cannot gonna it's 'tis rock'n'roll o'clock "
    "y'all don't can't won't I'm we've they'll d'oeuvre O'Brian www.x.com http://x.org/a a@b.com #tag "
    "555-1234 (555) 123-4567 1 1/2 12/25/2016 3:30 1,000 -5 +5 :-) <b> </b> <unk> &amp; &quot; C++ "
    "x/y A&W AT&T '90s 5' I. A. Rd. Ave. 20.00 £20-25 20-25£ €20 $20 US$20 3-star it’s ‘q’ “dq” ... "
    ". . . -- --- – — … ½ ° × ca. 5 fig. 3 pty. ltd Ph.D Jan. Calif. Ill. Pa. PTY. Dunkin' 'em "
    "'cause n't 's 're c'mon cont'd pro- anti- -LRB- '99 file.txt centre.It The He It About However "
    "&lt; &gt; << >> ** @@ ## __ & % + = ~ ^ | [ ] { } ( ) é É Café naïve ß ¢ ¥ « » soft\u00adhyphen"
).split(" ")
PUNCT = list(".,;:!?'\"-()&/$£") + ["'s", "n't", "\u00a0", "\t"]


def _fuzz_lines(base: list[str], count: int, seed: int) -> list[str]:
    """E2E sentences with inserted abbreviations, contractions, symbols and glued tokens."""
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        words = rng.choice(base).split(" ")
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(len(words) + 1)
            roll = rng.random()
            if roll < 0.45:
                words.insert(i, rng.choice(FRAGMENTS))
            elif roll < 0.7:
                words.insert(i, rng.choice(PUNCT))
            elif roll < 0.85 and i < len(words):
                words[i] += rng.choice(PUNCT + FRAGMENTS)
            elif i < len(words) - 1:
                words[i : i + 2] = [words[i] + words[i + 1]]
        lines.append(" ".join(words))
    return lines


def test_matches_java_on_fuzzed_e2e_text(tmp_path: Path) -> None:
    require(shutil.which("java") is not None, "Java is needed to run the reference tokenizer")
    require_shared()
    base = [r for rs in load_test_refs() for r in rs]
    _assert_same("\n".join(_fuzz_lines(base, 4000, seed=7)), tmp_path)

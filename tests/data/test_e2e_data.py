"""The E2E loader: packaged official CSVs, the paper's linearisation, official instance order."""

from __future__ import annotations

import hashlib
import lzma
from importlib import resources
from pathlib import Path

import pytest
from conftest import SHARED
from conftest import shared_path as _shared

from peftrun.data import e2e
from peftrun.data.examples import Instance, Pair
from peftrun.errors import PeftrunError

E2E = SHARED / "data" / "e2e"
TRAIN_SHA256 = "f27d48df45815288ab15619d47a79028c300fbb7f42e373668aba0b98c1d57c6"


def _packaged(name: str) -> bytes:
    return lzma.decompress(resources.files("peftrun").joinpath("assets", "e2e", name + ".xz").read_bytes())


# --- packaged data only ----------------------------------------------------------------------


def test_packaged_train_is_the_official_file() -> None:
    assert hashlib.sha256(_packaged("trainset.csv")).hexdigest() == TRAIN_SHA256


def test_train_pairs() -> None:
    pairs = e2e.load_pairs("train")
    assert len(pairs) == 42_061
    assert len({pair.source for pair in pairs}) == 4_862
    assert pairs[0] == Pair(
        "name : The Vaults | Type : pub | price : more than £ 30 | customer rating : 5 out of 5"
        " | near : Café Adriatic",
        "The Vaults pub near Café Adriatic has a 5 star rating.  Prices start at £30.",
    )
    tokenized = e2e.load_pairs("train", "tokenized")
    assert (
        tokenized[0].target
        == "The Vaults pub near Café Adriatic has a 5 star rating . Prices start at £ 30 . "
    )
    # The two refs with a CRLF inside their quoted field come through whole.
    assert sum("\r\n" in pair.target for pair in pairs) == 2
    train = e2e.load_instances("train")
    assert len(train) == 4_862 and sum(len(i.references) for i in train) == 42_061


@pytest.mark.parametrize(
    ("split", "count", "refs", "first", "first_refs", "last", "last_refs"),
    [
        (
            "dev",
            547,
            4_672,
            "name[Alimentum], area[city centre], familyFriendly[no]",
            None,
            "name[Wildwood], eatType[coffee shop], food[English], priceRange[moderate], "
            "customer rating[3 out of 5], near[Ranch]",
            None,
        ),
        (
            "test",
            630,
            4_693,
            "name[Blue Spice], eatType[coffee shop], area[city centre]",
            2,
            "name[Zizzi], eatType[pub], near[The Sorrento]",
            None,
        ),
    ],
)
def test_instances_in_official_order(split, count, refs, first, first_refs, last, last_refs) -> None:
    instances = e2e.load_instances(split)
    assert len(instances) == count
    assert sum(len(instance.references) for instance in instances) == refs
    assert len({instance.id for instance in instances}) == count  # consecutive groups = distinct MRs
    assert instances[0].id == first and instances[-1].id == last
    if first_refs is not None:
        assert len(instances[0].references) == first_refs
    # Instances hold the rows' references in file order.
    pairs = e2e.load_pairs(split)
    assert [ref for instance in instances for ref in instance.references] == [p.target for p in pairs]


def test_test_first_instance() -> None:
    assert e2e.load_instances("test", "tokenized")[0] == Instance(
        "name : Blue Spice | Type : coffee shop | area : city centre",
        (
            "A coffee shop in the city centre area called Blue Spice . ",
            "Blue Spice is a coffee shop in city centre . ",
        ),
        id="name[Blue Spice], eatType[coffee shop], area[city centre]",
    )


def test_linearize_mr() -> None:
    assert (
        e2e.linearize_mr("name[Blue Spice], eatType[coffee shop], area[city centre]")
        == "name : Blue Spice | Type : coffee shop | area : city centre"
    )
    assert (
        e2e.linearize_mr("name[Cocum], priceRange[£20-25], customer rating[high], familyFriendly[no]")
        == "name : Cocum | price : £ 20 - 25 | customer rating : high | family friendly : no"
    )
    for bad in ("name Blue Spice", "name[Blue Spice] eatType[pub]", "name[Blue Spice], "):
        with pytest.raises(PeftrunError, match="malformed E2E MR"):
            e2e.linearize_mr(bad)


def test_callers_get_their_own_lists() -> None:
    first = e2e.load_pairs("dev")
    first.clear()
    assert len(e2e.load_pairs("dev")) == 4_672


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: e2e.load_pairs("validation"), "train, dev, test"),
        (lambda: e2e.load_instances("valid"), "train, dev, test"),
        (lambda: e2e.load_pairs("dev", "detokenized"), "raw, tokenized"),
    ],
)
def test_bad_arguments(call, message: str) -> None:
    with pytest.raises(PeftrunError, match=message):
        call()


# --- a user folder of plain CSVs -------------------------------------------------------------


def test_user_folder(tmp_path: Path) -> None:
    (tmp_path / "devset.csv").write_bytes(
        b'"mr","ref"\r\n"name[A], eatType[pub]","A is a pub."\r\n'
        b'"name[A], eatType[pub]","A pub,\r\nnice."\r\n'
        b'"name[B], area[riverside]","B isn\'t far."\r\n'
    )
    instances = e2e.load_instances("dev", "tokenized", tmp_path)
    assert instances == [
        Instance("name : A | Type : pub", ("A is a pub . ", "A pub , nice . "), id="name[A], eatType[pub]"),
        Instance("name : B | area : riverside", ("B isn 't far . ",), id="name[B], area[riverside]"),
    ]
    assert e2e.load_pairs("dev", data_dir=tmp_path)[1].target == "A pub,\r\nnice."


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PeftrunError, match="testset_w_refs.csv") as error:
        e2e.load_pairs("test", data_dir=tmp_path)
    assert "\n" not in str(error.value)
    with pytest.raises(PeftrunError, match=r"trainset.part1of3.csv"):
        e2e.load_pairs("train", data_dir=tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"meaning,text\r\nname[A],A.\r\n", "'mr' and 'ref' columns"),
        (b"", "'mr' and 'ref' columns"),
        (b"mr,ref\r\nname[A]\r\n", "no 'mr' or 'ref' field"),
        (b"mr,ref\r\n\xff\xfe,x\r\n", "UTF-8 CSV"),
    ],
)
def test_malformed_csv(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "devset.csv").write_bytes(content)
    with pytest.raises(PeftrunError, match=message):
        e2e.load_pairs("dev", data_dir=tmp_path)


# --- against the shared data folder ----------------------------------------------------------


def test_packaged_files_equal_shared_ones() -> None:
    original = _shared(E2E / "original")
    parts = [(original / f"trainset.part{i}of3.csv").read_bytes() for i in (1, 2, 3)]
    # Rebuild as the data README says: part 1 whole, then 2 and 3 without their header line.
    rebuilt = parts[0] + b"".join(part.split(b"\r\n", 1)[1] for part in parts[1:])
    assert hashlib.sha256(rebuilt).hexdigest() == TRAIN_SHA256
    assert _packaged("trainset.csv") == rebuilt
    for name in ("devset.csv", "testset_w_refs.csv"):
        assert _packaged(name) == (original / name).read_bytes()


def test_shared_folder_with_train_parts_loads_the_same() -> None:
    original = _shared(E2E / "original")
    for split in e2e.SPLITS:
        assert e2e.load_pairs(split, data_dir=original) == e2e.load_pairs(split)


@pytest.mark.parametrize(("split", "name"), [("test", "src1_test.txt"), ("dev", "src1_valid.txt")])
def test_matches_paper_files_line_for_line(split: str, name: str) -> None:
    text = _shared(E2E / "prefix_tuning_format" / name).read_text(encoding="utf-8")
    lines = [line.split("||", 1) for line in text.split("\n")[:-1]]
    pairs = e2e.load_pairs(split, "tokenized")
    assert [pair.source for pair in pairs] == [source for source, _ in lines]
    assert [pair.target for pair in pairs] == [reference for _, reference in lines]

"""Word tokenisation of E2E references, as in the files Prefix-Tuning trained and scored on.

Prefix-Tuning (Li & Liang, 2021) read E2E from ``src1_{train,valid,test}.txt``: one line per
reference, ``table||tokenised reference``, the reference ending in one space (see
docs/paper.md#tokenised-e2e-references). The raw text is the ``ref`` column of the
official CSVs. The tokenised text only adds spaces: no character is changed, added or dropped.

The references of those files were not all made by one tokeniser:

* **train and dev**: ``src1_valid.txt`` equals, line for line, ``valid.txt`` of
  harvardnlp/neural-template-gen (``data/e2e_aligned.tar.gz``; Wiseman et al., 2018), whose
  README says it took the preprocessing of Gehrmann et al.'s E2E system; its ``train.txt``
  aligns one to one with the 42,061 rows of ``trainset.csv`` (``src1_train.txt`` itself is
  not in any snapshot). Those references were split into sentences NLTK-Punkt style, then
  each sentence went through the Moses ``tokenizer.perl`` (English, aggressive hyphen
  splitting, ``@-@`` written back as ``-``, no XML escaping). :func:`tokenize_moses_style`
  rebuilds it byte for byte: 4,672/4,672 lines of ``src1_valid.txt`` (tested), and
  42,061/42,061 lines of that ``train.txt`` (checked once by hand; the file is not shipped).
* **test**: ``src1_test.txt`` follows spaCy's English tokeniser in its 2.0 form (prefix,
  suffix and infix rules plus contraction exceptions; spaCy 2.1 began to split digit-hyphen-letter,
  as in ``5-star``, and this file does not). :func:`tokenize_spacy_style` rebuilds it:
  4,693/4,693 lines.

The two conventions differ on 1.5-3% of lines (``is n't`` vs ``isn 't``; ``£ 20-£25`` vs
``£ 20- £ 25``; ``rating. it``), so :func:`tokenize_reference` takes the split whose
convention to follow. Both are written here as rules, without spaCy, sacremoses or NLTK data.
"""

from __future__ import annotations

import re
from functools import lru_cache

from peftrun.errors import PeftrunError

# Which convention the paper's file for each split follows (see the module docstring).
SPLIT_STYLE = {"train": "moses", "dev": "moses", "test": "spacy"}


def tokenize_reference(text: str, split: str = "train") -> str:
    """Tokenise one raw E2E reference the way the paper's file for ``split`` did.

    Returns the tokens joined by single spaces, with the trailing space the src1 files have
    (``"A pub ."`` comes back as ``"A pub . "``); empty text gives ``""``.
    """
    style = SPLIT_STYLE.get(split)
    if style is None:
        raise PeftrunError(f"unknown E2E split {split!r}: use one of {', '.join(SPLIT_STYLE)}")
    tokens = _moses_tokens(text) if style == "moses" else _spacy_tokens(text)
    return " ".join(tokens) + " " if tokens else ""


def tokenize_moses_style(text: str) -> str:
    """The train/dev convention (Punkt-like sentences, then Moses); same output format."""
    return tokenize_reference(text, "train")


def tokenize_spacy_style(text: str) -> str:
    """The test convention (spaCy 2.0 English rules); same output format."""
    return tokenize_reference(text, "test")


# --- train/dev: sentence split, then Moses tokenizer.perl (English) on each sentence ----------

# Punkt's "number" token type, without the final period: "5", "20-25", "1,000".
_NUMBER = re.compile(r"-?[.,]?\d[\d,.\-]*")
_SENTENCE_END = re.compile(r"[.!?]+['\"]*(?=\s+(\S+))")
# Moses nonbreaking_prefix.en: a period after these is not split off ...
_NONBREAKING = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ") | set(
    "Adj Adm Adv Asst Bart Bldg Brig Bros Capt Cmdr Col Comdr Con Corp Cpl DR Dr Drs Ens Gen Gov "
    "Hon Hr Hosp Insp Lt MM MR MRS MS Maj Messrs Mlle Mme Mr Mrs Ms Msgr Op Ord Pfc Ph Prof Pvt "
    "Rep Reps Res Rev Rt Sen Sens Sfc Sgt Sr St Supt Surg v vs i.e rev e.g".split()
)
# ... and after these only when a number follows ("No. 5").
_NONBREAKING_NUMERIC = {"No", "Nos", "Art", "Nr", "pp"}
_HAS_LETTER = re.compile(r"[^\W\d_]")


# Moses' substitutions in order, each with a character it needs (None: always run).
# ``[^\W_]`` is Perl's ``\p{IsAlnum}``, ``[^\W\d_]`` its ``\p{IsAlpha}``.
_MOSES_STEPS: list[tuple[str | None, re.Pattern[str], str]] = [
    # Every character other than letters, digits, space, . ' ` , - becomes a token.
    (None, re.compile(r"([^\w\s.'`,\-]|_)"), r" \1 "),
    # -a: a hyphen between letters/digits is a token ("family - friendly", "20 - 25").
    ("-", re.compile(r"([^\W_])-(?=[^\W_])"), r"\1 - "),
    # Runs of dots are one token ("friendly ..").
    ("..", re.compile(r"\.{2,}"), r" \g<0> "),
    # A comma is a token unless it sits between two digits ("1,000").
    (",", re.compile(r"(\D),"), r"\1 , "),
    (",", re.compile(r",(\D)"), r" , \1"),
    # English apostrophes: a clitic keeps its apostrophe ("isn 't", "it 's", "d 'oeuvre").
    ("'", re.compile(r"([\W\d_])'([\W\d_])"), r"\1 ' \2"),
    ("'", re.compile(r"([\W_])'([^\W\d_])"), r"\1 ' \2"),
    ("'", re.compile(r"([^\W\d_])'([\W\d_])"), r"\1 ' \2"),
    ("'", re.compile(r"([^\W\d_])'([^\W\d_])"), r"\1 '\2"),
    ("'", re.compile(r"(\d)'(s)"), r"\1 '\2"),
]


def _sentences(text: str) -> list[str]:
    """Split at ``.!?`` (plus closing quotes) before whitespace, as Punkt does on this data.

    Punkt's one exception that matters here: a number followed by a period and a lower-case word
    is not a sentence end ("rated 5. it is ..."), so Moses then keeps that period attached.
    Punkt's learned abbreviations are not modelled (none is followed by a lower-case word in E2E).
    """
    pieces, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        before = text[start : match.start()].rsplit(maxsplit=1)
        if (
            match.group().startswith(".")
            and before
            and _NUMBER.fullmatch(before[-1])
            and match.group(1)[0].islower()
        ):
            continue
        pieces.append(text[start : match.end()])
        start = match.end()
    pieces.append(text[start:])
    return [piece for piece in pieces if piece.strip()]


def _moses_tokens(text: str) -> list[str]:
    return [token for sentence in _sentences(text) for token in _moses_sentence(sentence)]


@lru_cache(maxsize=1 << 16)  # E2E repeats many sentences ("It is family friendly.")
def _moses_sentence(text: str) -> tuple[str, ...]:
    """Moses ``tokenizer.perl -l en -a -no-escape`` on one sentence, step by step.

    The text is not padded with spaces (older Moses), so a quote opening the sentence stays on
    its word (``'Strada '``), as in the training file.
    """
    text = " ".join(text.split())
    for trigger, pattern, replacement in _MOSES_STEPS:
        if trigger is None or trigger in text:  # skipping absent characters saves most of the time
            text = pattern.sub(replacement, text)
    words = text.split()
    tokens: list[str] = []
    for i, word in enumerate(words):
        following = words[i + 1] if i + 1 < len(words) else ""
        if _split_final_period(word, following):
            tokens += [word[:-1], "."]
        else:
            tokens.append(word)
    return tuple(tokens)


def _split_final_period(word: str, following: str) -> bool:
    """Moses' rule for a word ending in one period (the last word of a sentence always splits)."""
    if not word.endswith(".") or len(word) < 2 or not word.strip("."):
        return False
    stem = word[:-1]
    if "." in stem and _HAS_LETTER.search(stem):  # "e.g.", "U.K."
        return False
    if stem in _NONBREAKING or (following and following[0].islower()):
        return False
    return not (stem in _NONBREAKING_NUMERIC and following[:1].isdigit())


# --- test: spaCy 2.0 English tokenizer rules -------------------------------------------------

_ALPHA = r"[^\W\d_]"
_LOWER = r"[a-zß-öø-ÿ]"
_UPPER = r"[A-ZÀ-ÖØ-Þ]"
_PUNCT = [re.escape(c) for c in "…,:;!?¿¡()[]{}<>_#*&"]
_QUOTES = [re.escape(c) for c in "'\"”“`‘´’‚„»«"]
_CURRENCY = [r"US\$", r"C\$", r"A\$", r"\$", "£", "€", "¥", "฿"]
_ELLIPSES = [r"\.\.+", "…"]
_HYPHENS = r"(?:---|--|-|–|—)"
_UNITS = "km cm mm dm m ha nm yd in ft kg mg g t lb oz mph kmh hPa Pa mbar mb MB kb KB gb GB tb TB T G M K %"

# Stripped from the start of a chunk, one at a time ("£20" -> "£" "20", "'The" -> "'" "The").
_PREFIX = re.compile(
    "^(?:" + "|".join(["§", "%", "=", r"\+(?![0-9])", *_PUNCT, *_ELLIPSES, *_QUOTES, *_CURRENCY]) + ")"
)
# Stripped from the end. A period only goes after a digit, a lower-case letter, a quote or
# bracket, or two capitals: ".Blue" and "5-star" stay whole, "Cuisine'." gives "Cuisine ' .".
_SUFFIX = re.compile(
    "(?:"
    + "|".join(
        [
            *_PUNCT,
            *_ELLIPSES,
            *_QUOTES,
            "'s",
            "'S",
            "’s",
            "’S",
            r"(?<=[0-9])\+",
            r"(?<=[0-9])(?:" + "|".join(_CURRENCY) + ")",
            r"(?<=[0-9])(?:" + "|".join(re.escape(u) for u in _UNITS.split()) + ")",
            rf"(?<=[0-9%²\-)\]+'\"”“`‘´’‚„»«]|{_LOWER})\.",
            rf"(?<={_UPPER}{_UPPER})\.",
        ]
    )
    + ")$"
)
# Split inside what is left: "20-25" -> "20 - 25", "family-friendly" -> "family - friendly",
# "Phoenix,has" -> "Phoenix , has"; but not "5-star" or "E20-E25" (digit before the hyphen).
_INFIX = re.compile(
    "|".join(
        [
            *_ELLIPSES,
            r"(?<=[0-9])[+\-*^](?=[0-9-])",
            rf"(?<={_LOWER})\.(?={_UPPER})",
            rf"(?<={_ALPHA}),(?={_ALPHA})",
            rf"(?<={_ALPHA})[?\";:=,.]*{_HYPHENS}(?={_ALPHA})",
            rf"(?<={_ALPHA}|\")[:<>=/](?={_ALPHA})",
        ]
    )
)
# spaCy lists contractions one by one ("isn't" -> "is" "n't", "won't" -> "wo" "n't",
# "you're" -> "you" "'re"); one rule covers the same ground for any word.
_CLITIC = re.compile(rf"^({_ALPHA}+?)((?i:n['’]t|['’](?:s|re|ll|ve|d|m)))$")
# spaCy's apostrophe-less forms that occur in E2E ("thats" -> "that" "s").
_NO_APOSTROPHE = {"thats", "theres", "whats"}


def _special(chunk: str) -> list[str] | None:
    """spaCy's special cases (contractions): checked before and between affix steps."""
    match = _CLITIC.match(chunk)
    if match:
        return [match.group(1), match.group(2)]
    if chunk.lower() in _NO_APOSTROPHE:
        return [chunk[:-1], chunk[-1]]
    return None


def _spacy_tokens(text: str) -> list[str]:
    return [token for chunk in text.split() for token in _spacy_chunk(chunk)]


@lru_cache(maxsize=1 << 16)  # words repeat a lot: the cache makes a whole split 5x faster
def _spacy_chunk(chunk: str) -> tuple[str, ...]:
    """spaCy's ``Tokenizer._split_affixes`` then ``_attach_tokens`` on one whitespace chunk."""
    prefixes: list[str] = []
    suffixes: list[str] = []
    last_length = -1
    while chunk and len(chunk) != last_length and _special(chunk) is None:
        last_length = len(chunk)
        match = _PREFIX.search(chunk)
        pre = match.end() if match else 0
        if pre and len(chunk) > pre and _special(chunk[pre:]) is not None:
            prefixes.append(chunk[:pre])
            chunk = chunk[pre:]
            break
        match = _SUFFIX.search(chunk[pre:])
        suf = match.end() - match.start() if match else 0
        if suf and len(chunk) > suf and _special(chunk[:-suf]) is not None:
            suffixes.append(chunk[-suf:])
            chunk = chunk[:-suf]
            break
        if pre and suf and pre + suf <= len(chunk):
            prefixes.append(chunk[:pre])
            suffixes.append(chunk[-suf:])
            chunk = chunk[pre:-suf]
        elif pre:
            prefixes.append(chunk[:pre])
            chunk = chunk[pre:]
        elif suf:
            suffixes.append(chunk[-suf:])
            chunk = chunk[:-suf]
    return (*prefixes, *_spacy_middle(chunk), *suffixes[::-1])


def _spacy_middle(chunk: str) -> list[str]:
    if not chunk:
        return []
    special = _special(chunk)
    if special is not None:
        return special
    tokens, start = [], 0
    for match in _INFIX.finditer(chunk):
        if match.start() == 0:  # an infix never starts a token
            continue
        if match.start() > start:
            tokens.append(chunk[start : match.start()])
        if match.group():
            tokens.append(match.group())
        start = match.end()
    if chunk[start:]:
        tokens.append(chunk[start:])
    return tokens

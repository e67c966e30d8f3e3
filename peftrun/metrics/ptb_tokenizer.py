"""Pure-Python re-implementation of the tokenizer the COCO caption code runs before
METEOR, ROUGE-L and CIDEr.

pycocoevalcap (and the E2E scorer's copy of it) pipes all captions, joined by newlines,
through Stanford CoreNLP 3.4.1's ``PTBTokenizer -preserveLines -lowerCase`` (Java), then
drops punctuation tokens.  This module reproduces that without Java: a longest-match
scanner over the token rules of ``PTBLexer.flex`` (CoreNLP v3.4.1, JFlex: the longest
match wins, trailing context ``r1/r2`` counts towards the length, ties go to the earlier
rule), with the lexer's default options (``ptb3Escaping``: ``(`` -> ``-LRB-``, ``"`` ->
`````/``''``, ``£`` -> ``#``; untokenizable characters deleted; no americanisation).

Rules are translated from the lexer definition, not copied code; plain words and
punctuation before white space take a fast path that yields what the full scan yields.
Scope: the BMP text seen in E2E (letters incl. accents, digits, ``.,;:!?'"-£$&()/``);
equality with the Java tokenizer is tested on every E2E reference and system output we
have plus a fuzz corpus.  Known gaps: characters outside the BMP (Java sees UTF-16 halves) and
Unicode-version differences between Java 7's character tables and Python's.

Two COCO quirks are kept on purpose because the official scores depend on them:
* The whole caption list is tokenised as one text, so lexer context can cross a line
  end (e.g. ``U.`` at the end of one caption followed by ``The`` on the next).
* Only ``\\n`` inside a caption is replaced by a space; other line breaks (``\\r``,
  U+2028, ...) become new lines and shift the following captions, as in the original.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence

# Tokens pycocoevalcap removes after tokenisation (ptbtokenizer.py, PUNCTUATIONS).  Note
# "-LRB-" etc. are upper case but the tokens were lower-cased already, so "-lrb-" stays.
PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--"]
    + ["...", ";"]
)

_NL = "\n"  # marker for PTBLexer's newline token (printed as a line break)


def _class_of(predicate: Callable[[str], bool]) -> str:
    """Regex character-class body for the BMP characters satisfying ``predicate``."""
    ranges: list[tuple[int, int]] = []
    for cp in range(0x10000):
        if predicate(chr(cp)):
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    return "".join(
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges
    )


# JFlex [:letter:] / [:uppercase:] are Java's Character.isLetter / isUpperCase.
_JLETTER = "[" + _class_of(lambda c: unicodedata.category(c).startswith("L")) + "]"
_UPPER = "[" + _class_of(lambda c: unicodedata.category(c) == "Lu") + "]"


def ci(s: str) -> str:
    """Caseless literal: the lexer is %caseless, which affects literals but not classes."""
    return f"(?i:{s})"


# --- macros of PTBLexer.flex (3.4.1), in Python syntax --------------------------------
M: dict[str, str] = {}
M["SPLET"] = "&[aeiouAEIOU]" + ci("acute|grave|uml") + ";"
M["LETTER"] = (
    "(?:"
    + _JLETTER[:-1]
    + r"\u00AD\u0237-\u024F\u02C2-\u02C5\u02D2-\u02DF\u02E5-\u02FF\u0300-\u036F"
    + r"\u0370-\u037D\u0384\u0385\u03CF\u03F6\u03FC-\u03FF\u0483-\u0487\u04CF\u04F6-\u04FF"
    + r"\u0510-\u0525\u055A-\u055F\u0591-\u05BD\u05BF\u05C1\u05C2\u05C4\u05C5\u05C7"
    + r"\u0615-\u061A\u063B-\u063F\u064B-\u065E\u0670\u06D6-\u06EF\u06FA-\u06FF\u070F"
    + r"\u0711\u0730-\u074F\u0750-\u077F\u07A6-\u07B1\u07CA-\u07F5\u07FA\u0900-\u0903"
    + r"\u093C\u093E-\u094E\u0951-\u0955\u0962-\u0963\u0981-\u0983\u09BC-\u09C4\u09C7"
    + r"\u09C8\u09CB-\u09CD\u09D7\u09E2\u09E3\u0A01-\u0A03\u0A3C\u0A3E-\u0A4F\u0A81-\u0A83"
    + r"\u0ABC-\u0ACF\u0B82\u0BBE-\u0BC2\u0BC6-\u0BC8\u0BCA-\u0BCD\u0C01-\u0C03\u0C3E-\u0C56"
    + r"\u0D3E-\u0D44\u0D46-\u0D48\u0E30-\u0E3A\u0E47-\u0E4E\u0EB1-\u0EBC\u0EC8-\u0ECD]"
    + "|"
    + M["SPLET"]
    + ")"
)
M["LD"] = f"(?:{_JLETTER}|\\d)"  # ([:letter:]|[:digit:])
M["LETDIG"] = f"(?:{M['LETTER']}|\\d)"
M["SPACE"] = r"[ \t\u00A0\u2000-\u200A\u3000]"
M["NEWLINE"] = r"(?:\r?\n|\r|\u2028|\u2029|\u000B|\u000C|\u0085)"
M["SPACENL"] = f"(?:{M['SPACE']}|{M['NEWLINE']})"
M["SGML"] = (
    r"<(?:[!?][A-Za-z\-][^>\r\n]*|[A-Za-z][A-Za-z0-9_:.\-]*(?:[ ]+(?:[A-Za-z][A-Za-z0-9_:.\-]*"
    r"[ ]*=[ ]*(?:'[^']*'|\"[^\"]*\")|[A-Za-z][A-Za-z0-9_:.\-]*))*[ ]*/?"
    r"|/[A-Za-z][A-Za-z0-9_:.\-]*)[ ]*>"
)
M["APOS"] = "(?:['\u0092\u2019]|" + ci("&apos;") + ")"
M["APOSETC"] = f"(?:{M['APOS']}|[`\u0091\u2018\u201b])"
M["WORD"] = f"{M['LETTER']}{M['LETDIG']}*(?:[.!?]{M['LETTER']}{M['LETDIG']}*)*"
M["NUM"] = r"\d*(?:[.:,\u00AD\u066B\u066C]\d+)+|\d+"
M["ACRO"] = (
    r"(?:[A-Za-z](?:\.[A-Za-z])*|"
    + ci(r"(?:canada|sino|korean|eu|japan|non)-u\.s|u\.s\.-(?:u\.k|u\.s\.s\.r)")
    + ")"
)
M["ACRO2"] = (
    r"(?:[A-Za-z](?:\.[A-Za-z])+|"
    + ci(r"(?:canada|sino|korean|eu|japan|non)-u\.s|u\.s\.-(?:u\.k|u\.s\.s\.r)")
    + ")"
)
M["THING"] = (
    f"(?:[dDoOlL]{M['APOSETC']}{M['LD']})?{M['LD']}+"
    f"(?:[-_\u058a\u2010\u2011](?:[dDoOlL]{M['APOSETC']}{M['LD']})?{M['LD']}+)*"
)
M["THINGA"] = r"[A-Z]+(?:(?:[+&]|" + ci("&amp;") + r")[A-Z]+)+"
M["HTHING"] = r"[A-Za-z0-9][A-Za-z0-9.,\u00AD]*(?:-(?:" + M["ACRO2"] + r"\.|[A-Za-z0-9\u00AD]+))+"
M["REDAUX"] = M["APOS"] + "(?:[msdMSD]|" + ci("re|ve|ll") + ")"
M["SREDAUX"] = ci("n") + M["APOSETC"] + ci("t")
M["INSENTP"] = "[,;:\u3001]"

# Abbreviation lists.  "[A]z" in the lexer = upper-case A (a class), then caseless "z".
_ABSTATE = (
    "Ala|Ariz|[A]z|[A]rk|Calif|Colo|Conn|Ct|Dak|[D]el|Fla|Ga|[I]ll|Ind|Kans?|Ky|[L]a|[M]ass|"
    "Md|Mich|Minn|[M]iss|Mo|Mont|Neb|Nev|Okla|[O]re|[P]a|Penn|Tenn|[T]ex|Va|Vt|[W]ash|Wisc?|Wyo"
)


def _words(alts: str) -> str:
    """Translate a lexer alternation of words: letters caseless, ``[..]`` classes not.

    E.g. ``[A]z`` matches "Az"/"AZ" but not "az"; ``Pp?t[ye]`` matches "PTy" not "PTY".
    """
    out = []
    for part in re.findall(r"\[[^\]]*\]|\\.|.", alts):
        if part.isalpha() and len(part) == 1 and part.lower() != part.upper():
            part = f"[{part.lower()}{part.upper()}]"
        out.append(part)
    return "(?:" + "".join(out) + ")"


_ABBREV1_WORDS = "|".join(
    [
        "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec",
        "Mon|Tue|Tues|Wed|Thu|Thurs|Fri",
        _ABSTATE,
        "Inc|Cos?|Corp|Pp?t[ye]s?|Ltd|Plc|Rt|Bancorp|Bhd|Assn|Univ|Intl|Sys",
        "tel|est|ext|sq",
        r"Jr|Sr|Bros|Ed\.D|Ph\.D|Blvd|Rd|Esq",
        "etc|al|seq|Bldg",
    ]
)
M["ABBREV1"] = _words(_ABBREV1_WORDS) + r"\."
_ABTITLE = (
    "Mr|Mrs|Ms|[M]iss|Drs?|Profs?|Sens?|Reps?|Attys?|Lt|Col|Gen|Messrs|Govs?|Adm|Rev|Maj|Sgt|"
    "Cpl|Pvt|Capt|Ste?|Ave|Pres|Lieut|Hon|Brig|Co?mdr|Pfc|Spc|Supts?|Det|Mt|Ft|Adj|Adv|Asst|"
    "Assoc|Ens|Insp|Mlle|Mme|Msgr|Sfc"
)
M["ABBREV4"] = (
    "(?:"
    + _words(_ABTITLE + r"|vs|Alex|Wm|Jos|Cie|a\.k\.a|cf|TREAS|Ph|Invt|Elec|Natl|M[ft]g|Dept")
    + "|"
    + M["ACRO"]
    + ")"
)
M["ACRONYM"] = M["ACRO"] + r"\."
_ACRONYM_NEXT = _words(
    "[A]bout|[A]ccording|[A]dditionally|[A]fter|[A]n|[A]|[A]s|[A]t|[B]ut|[E]arlier|[H]e|[H]er|"
    "[H]ere|[H]owever|[I]f|[I]n|[I]t|[L]ast|[M]any|[M]ore|[M]r\\.|[M]s\\.|[N]ow|[O]nce|[O]ne|"
    "[O]ther|[O]ur|[S]he|[S]ince|[S]o|[S]ome|[S]uch|[T]hat|[T]he|[T]heir|[T]hen|[T]here|"
    "[T]hese|[T]hey|[T]his|[W]e|[W]hen|[W]hile|[W]hat|[Y]et|[Y]ou"
)
_FILENAME_EXT = ci(
    "bat|bmp|c|class|cgi|cpp|dll|doc|docx|exe|gif|gz|h|htm|html|jar|java|jpeg|jpg|mov|mp3|pdf|"
    "php|pl|png|ppt|ps|py|sql|tar|txt|wav|x|xml|zip"
)
# APOWORD's alternatives are separate regexes: several are prefixes of others ("J'" of
# "J'ai"), and the lexer takes the longest.
_APOWORD = [
    f"{M['APOS']}{ci('n')}{M['APOS']}?",
    f"[lLdDjJ]{M['APOS']}",
    f"(?:{ci('dunkin|somethin|ol')}){M['APOS']}",
    f"{M['APOS']}{ci('em')}",
    f"[A-HJ-XZn]{M['APOSETC']}{_JLETTER}{{2,}}",
    f"{M['APOS']}[2-9]{ci('0s')}",
    f"{M['APOS']}{ci('till?')}",
    f"{_JLETTER}+[aeiouyAEIOUY]{M['APOSETC']}[aeiouA-Z]{_JLETTER}*",
    f"{M['APOS']}{ci('cause')}",
    ci(r"cont'd\.?"),
    ci("'twas|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l"),
    f"{ci('o')}{M['APOSETC']}{ci('o')}",
]
_PHONE = (
    r"(?:\([0-9]{2,3}\)[ \u00A0]?|(?:\+\+?)?(?:[0-9]{2,4}[\- \u00A0])?[0-9]{2,4}[\- \u00A0])"
    r"[0-9]{3,4}[\- \u00A0]?[0-9]{3,5}|(?:(?:\+\+?)?[0-9]{2,4}\.)?[0-9]{2,4}\.[0-9]{3,4}\.[0-9]{3,5}"
)
_LIKELYURL = (
    r"(?:(?:" + ci("www") + r"\.(?:[^ \t\n\f\r\"<>|.!?(){},]+\.)+[a-zA-Z]{2,4})"
    # ",-_" below is a character *range* in the lexer (it excludes digits and capitals).
    r"|(?:(?:[^ \t\n\f\r\"`'<>|.!?(){}\,-_$]+\.)+" + ci("com|net|org|edu") + "))"
    r"(?:/[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},\-])?"
)
_EMAIL = (
    r"(?:" + ci("&lt;") + r"|<)?[a-zA-Z0-9][^ \t\n\f\r\"<>|()\u00A0{}]*@"
    r"(?:[^ \t\n\f\r\"<>|(){}.\u00A0]+\.)*[^ \t\n\f\r\"<>|(){}.\u00A0]+(?:" + ci("&gt;") + "|>)?"
)
_MISCSYMBOL = (
    "[+%&~^|\\\\\u00a6\u00a7\u00a8\u00a9\u00ac\u00ae\u00af\u00b0-\u00b3\u00b4-\u00ba\u00d7\u00f7"
    "\u0387\u05be\u05c0\u05c3\u05c6\u05f3\u05f4\u0600-\u0603\u0606-\u060a\u060c\u0614\u061b"
    "\u061e\u066a\u066d\u0703-\u070d\u07f6\u07f7\u07f8\u0964\u0965\u0e4f\u1fbd\u2016\u2017"
    "\u2020-\u2023\u2030-\u2038\u203b\u203e-\u2042\u2044\u207a-\u207f\u208a-\u208e\u2100-\u214f"
    "\u2190-\u21ff\u2200-\u2bff\u3012\u30fb\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65]"
)


# --- token actions (what the lexer returns for a match) -------------------------------
def _soft(s: str) -> str:
    """removeSoftHyphens: drop U+00AD, but never return an empty token."""
    return (s.replace("\u00ad", "") or "-") if "\u00ad" in s else s


_AMP = re.compile("(?i:&amp;)")


def _amp(s: str) -> str:
    return _AMP.sub("&", s)


def _quotes(s: str, left: bool) -> str:
    """latexQuotes: ' and " become ` `` (probably opening) or ' '' (closing)."""
    s = re.sub("&apos;|'", "`" if left else "'", s)
    s = re.sub('"|&quot;', "``" if left else "''", s)
    s = re.sub("[\u0091\u2018\u201b\u2039]", "`", s)
    s = re.sub("[\u0092\u2019\u203a]", "'", s)
    s = re.sub("[\u0093\u201c\u00ab]", "``", s)
    return re.sub("[\u0094\u201d\u00bb]", "''", s)


def _parens(s: str) -> str:
    return s.replace("(", "-LRB-").replace(")", "-RRB-")


def _currency(s: str) -> str:
    s = s.replace("\u00a2", "cents").replace("\u00a3", "#")  # PTB3 used # for pounds
    return re.sub("[\u0080\u00a4\u20a0\u20ac]", "$", s)


_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3"}


def _keep(s: str) -> str:
    return s


def _nbsp(s: str) -> str:
    return s.replace(" ", "\u00a0")


_SKIP = None  # action for white space and deleted characters: no token


def _rule(main: str, trail: str | None = None, action=_keep, consumed=None, truncate=True):
    """One lexer rule: main regex, optional trailing context, action, pushback.

    ``consumed(text)`` is how many characters of the main match the lexer keeps (the rest
    is pushed back and scanned again); by default all.  ``truncate=False`` when the rule
    returns its full text although it pushes back (abbreviations re-scan their period).
    """
    pattern = f"(?P<t>{main})" + (f"(?:{trail})" if trail else "")
    return re.compile(pattern), action, consumed, truncate


def _keep_n(n: int):
    return lambda text: n


def _minus(n: int):
    return lambda text: len(text) - n


def _opening(s: str) -> str:
    return _quotes(s, True)


def _closing(s: str) -> str:
    return _quotes(s, False)


def _const(token: str):
    return lambda text: token


# Remaining macros, kept here so that each rule below fits on one line.
M["SPMDASH"] = "&" + ci("md|mdash|ndash") + ";|[\u0096\u0097\u2013\u2014\u2015]"
M["SPPUNC"] = "&" + ci("ht|tl|ur|lr|qc|ql|qr|odq|cdq") + ";|&#[0-9]+;"
M["FULLURL"] = ci("https?") + r"://[^ \t\n\f\r\"<>|(){}]+[^ \t\n\f\r\"<>|.!?(){},\-]"
M["TWITTER"] = r"@[a-zA-Z_][a-zA-Z_0-9]*|#" + M["LETTER"] + "+"
M["SUBSUPNUM"] = "[\u207a\u207b\u208a\u208b]?(?:[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+|[\u2080-\u2089]+)"
M["FRAC"] = r"(?:\d{1,4}[- \u00A0])?\d{1,4}(?:\\?/|\u2044)\d{1,4}"
M["TBSPEC"] = (
    ci(r"-(?:rrb|lrb|rcb|lcb|rsb|lsb)-|c\.d\.s|pro-|anti-|s(?:&|&amp;)p-500|s(?:&|&amp;)ls")
    + f"|{ci('cap')}{M['APOS']}{ci('n')}|{ci('c')}{M['APOS']}{ci('est')}"
)
M["THING3"] = r"[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}"
M["DOLSIGN2"] = "[\u00a2\u00a3\u00a4\u00a5\u0080\u20a0\u20ac\u060b\u0e3f\u20a4\uffe0\uffe1\uffe5\uffe6]"
M["ACRONYM_NEXT"] = f"{M['SPACENL']}+(?:{_ACRONYM_NEXT}|{M['SGML']}){M['SPACENL']}"
M["ABBREV3"] = ci(r"(?:ca|figs?|prop|nos?|art|bldg|prop|pp|op)\.")
M["PTY"] = r"(?:" + ci("pt") + "[eyEY]|" + ci("co") + r")\."
M["SENTEND"] = f"{M['SPACENL']}(?:{M['SPACENL']}|{_UPPER}|{M['SGML']})"
M["FILENAME"] = f"{M['LETDIG']}+(?:[.]{M['LETDIG']}+)*[.]{_FILENAME_EXT}"
M["SMILEY"] = r"[<>]?[:;=][\-o*']?[()DPdpO\\{@|\[\]]"
M["ASIANSMILEY"] = (
    r"[\^x=~<>]\.\[\^x=~<>]|[\-\^x=~<>']_[\-\^x=~<>']|\([\-\^x=~<>'][_.]?[\-\^x=~<>']\)"
    r"|\([\^x=~<>']-[\^x=~<>'`]\)"
)
M["LDOTS"] = r"\.{3,5}|(?:\.[ \u00A0]){2,4}\.|[\u0085\u2026]"
M["QUOTECHARS"] = (
    "[`\u2018\u2019\u201a\u201b\u201c\u201d\u0091\u0092\u0093\u0094\u201e\u201f\u2039\u203a\u00ab\u00bb]{1,2}"
)
M["IGNORED"] = f"\0|{M['SPACE']}+|[\u200b\u200e\u200f\ufeff]"
M["DBLQUOT"] = '"|' + ci("&quot;")

# The rules in the order of PTBLexer.flex; ties between equally long matches go to the
# earlier one.  Each entry may list several alternatives (longest one is used) where
# Python's first-match alternation would not give JFlex's longest match.
RULES = [
    [_rule(ci("c") + r"\+\+")],
    [_rule(ci("[cf]") + "#")],
    [_rule(ci("cannot"), consumed=_keep_n(3))],  # "cannot" -> "can" "not"
    [_rule("'" + ci("twas"), consumed=_keep_n(2))],
    [_rule("'" + ci("tis"), consumed=_keep_n(2))],
    [_rule(ci("gonna|gotta|lemme|gimme|wanna"), consumed=_minus(2))],
    [_rule(M["SGML"], action=_nbsp)],
    [_rule(M["SPMDASH"], action=_const("--"))],
    [_rule(ci("&amp;"), action=_amp)],
    [_rule(M["SPPUNC"])],
    [_rule(M["WORD"], M["REDAUX"], _soft)],
    [_rule("[A-Za-z\u00ad]*[A-MO-Za-mo-z]\u00ad*", M["SREDAUX"], _soft)],  # SWORD/SREDAUX
    [_rule(M["WORD"], None, _soft)],
    [_rule(alt) for alt in _APOWORD],
    [_rule(ci("y") + M["APOS"], _JLETTER)],
    [_rule(M["FULLURL"])],
    [_rule(_LIKELYURL)],
    [_rule(_EMAIL)],
    [_rule(M["TWITTER"])],
    [_rule(M["REDAUX"], "[^A-Za-z]", _closing)],
    [_rule(M["SREDAUX"], "[^A-Za-z]", _closing)],
    [_rule(r"\d{1,2}[\-/]\d{1,2}[\-/]\d{2,4}")],  # DATE
    [_rule(r"[\-+]?(?:" + M["NUM"] + ")", None, _soft)],  # NUMBER
    [_rule(M["SUBSUPNUM"])],
    [_rule(M["FRAC"], None, _nbsp)],
    [_rule("[\u00bc\u00bd\u00be\u2153-\u215e]", None, lambda s: _FRACTIONS.get(s, s))],
    [_rule(M["TBSPEC"], None, _amp)],
    [_rule(M["THING3"])],
    [_rule(r"[A-Z]*\$|#")],  # DOLSIGN
    [_rule(M["DOLSIGN2"], None, _currency)],
    [_rule(M["ACRONYM"], M["ACRONYM_NEXT"], "acronym")],
    [_rule(M["ABBREV3"], f"{M['SPACENL']}?\\d")],
    [_rule(M["PTY"], M["SPACE"] + ci("ltd|lim"))],
    [_rule(M["ABBREV1"], M["SENTEND"], _keep, _minus(1), truncate=False)],
    [_rule(M["ABBREV1"], "(?s:..)")],
    [_rule(M["ABBREV1"], None, _keep, _minus(1), truncate=False)],
    [_rule(M["ABBREV4"] + r"\.")],  # ABBREV2
    [_rule(M["ABBREV4"], M["SPACE"])],
    [_rule(M["ACRO"], M["SPACENL"])],
    [_rule(M["APOS"] + "[0-9][0-9]", M["SPACENL"])],  # TBSPEC2
    [_rule(M["FILENAME"], f"{M['SPACENL']}|[.?!,]")],
    [_rule(M["WORD"] + r"\.", M["INSENTP"], _soft)],
    [_rule(_PHONE, None, lambda s: _parens(_nbsp(s)))],
    [_rule(M["DBLQUOT"], "[A-Za-z0-9$]", _opening)],
    [_rule(M["DBLQUOT"], None, _closing)],
    [_rule("\x7f", None, _SKIP)],
    [_rule("<|" + ci("&lt;"), None, _const("<"))],
    [_rule(">|" + ci("&gt;"), None, _const(">"))],
    [_rule(M["SMILEY"], "[^A-Za-z0-9]", _parens)],
    [_rule(M["ASIANSMILEY"], None, _parens)],
    [_rule(r"\{", None, _const("-LCB-"))],
    [_rule(r"\}", None, _const("-RCB-"))],
    [_rule(r"\[", None, _const("-LSB-"))],
    [_rule(r"\]", None, _const("-RSB-"))],
    [_rule(r"\(", None, _const("-LRB-"))],
    [_rule(r"\)", None, _const("-RRB-"))],
    [_rule(r"-+", None, lambda s: "--" if 3 <= len(s) <= 4 else s)],
    [_rule(M["LDOTS"], None, _const("..."))],
    [_rule(r"@+|#+|_+")],
    [_rule(r"\*+|(?:\\\*){1,3}")],
    [_rule(M["INSENTP"])],
    [_rule(r"[?!]+")],
    [_rule("[.\u00a1\u00bf\u037e\u0589\u061f\u06d4\u0700-\u0702\u07fa\u3002]")],
    [_rule("=")],
    [_rule("/")],
    [_rule(M["HTHING"] + r"\.", M["INSENTP"], _soft)],
    [_rule(M["HTHING"], None, _soft)],
    [_rule(M["THING"] + r"\.", M["INSENTP"])],
    [_rule(M["THING"])],
    [_rule(M["THINGA"] + r"\.", M["INSENTP"], _amp)],
    [_rule(M["THINGA"], None, _amp)],
    [_rule("'", "[A-Za-z][^ \t\n\r\u00a0]", _opening)],
    [_rule(M["REDAUX"], None, _closing)],
    [_rule(M["SREDAUX"], None, _closing)],
    [_rule(M["APOS"], None, _closing), _rule("''", None, _closing), _rule(M["QUOTECHARS"], None, _closing)],
    [_rule("<<|>>")],
    [_rule(_MISCSYMBOL)],
    [_rule(M["IGNORED"], None, _SKIP)],
    [_rule(M["NEWLINE"], None, _const(_NL))],
    [_rule(ci("&nbsp;"), None, _SKIP)],
    [_rule("(?s:.)", None, _SKIP)],  # untokenizable: deleted (the lexer's default)
]

# Fast paths for the shapes most E2E tokens have; each gives what the full scan gives.
# A run of letters followed by white space, or by one of .,;:!? and white space, can only
# be a WORD (or rules returning the same text), unless it is one of the literal words the
# lexer splits or an abbreviation that keeps its period.
_FAST_WORD = re.compile(r"([A-Za-z\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u00FF]+)(?=([.,;:!?])?(?:[ \t\n]|\Z))")
_SPLIT_WORDS = frozenset(["cannot", "gonna", "gotta", "lemme", "gimme", "wanna"])
_ABBREVIATION = re.compile(
    "|".join(f"(?:{m})" for m in (M["ABBREV1"], M["ABBREV4"] + r"\.", M["ABBREV3"], M["PTY"], M["ACRONYM"]))
)
# , ; : or a run of ?! before white space; a period too, unless ". ." starts an ellipsis.
_FAST_PUNCT = re.compile(r"(?:[,;:]|[?!]+|\.(?! \.))(?=[ \t\n]|\Z)")
_SPACES = re.compile(M["SPACE"] + "+")  # one skipped run: a NBSP after a space joins it
_SPACENL_END = re.compile(f"{M['SPACENL']}+$")


def _acronym(text: str) -> tuple[str, int]:
    """Action of the ACRONYM-before-sentence-start rule: the period is re-scanned."""
    text = _SPACENL_END.sub("", text)  # the lexer's work-around for a JFlex length bug
    if len(text) == 2:  # "I." -> "I" "."
        return text[:1], 1
    return text, len(text) - 1  # "U.S." -> "U.S." "."


def _scan(text: str, pos: int) -> tuple[str | None, int]:
    """Longest match at ``pos``: (token or None, number of characters consumed)."""
    best_len, best = 0, None
    for alternatives in RULES:
        for regex, action, consumed, truncate in alternatives:
            m = regex.match(text, pos)
            if m and m.end() - pos > best_len:
                best_len, best = m.end() - pos, (m.group("t"), action, consumed, truncate)
    tok, action, consumed, truncate = best
    if action == "acronym":
        return _acronym(tok)
    n = consumed(tok) if consumed else len(tok)
    if action is _SKIP:
        return None, n
    if truncate and n != len(tok):
        return tok[:n], n
    return action(tok), n


def tokenize_text(text: str) -> str:
    """Return exactly what ``PTBTokenizer -preserveLines -lowerCase`` prints for ``text``."""
    out: list[str] = []
    line: list[str] = []
    pos, end = 0, len(text)
    while pos < end:
        ch = text[pos]
        if ch == " " or ch == "\t":
            pos = _SPACES.match(text, pos).end()
            continue
        m = _FAST_WORD.match(text, pos) or _FAST_PUNCT.match(text, pos)
        if m and not (
            m.lastindex and (m[1].lower() in _SPLIT_WORDS or (m[2] == "." and _ABBREVIATION.match(text, pos)))
        ):
            line.append(m[0].lower() if m.lastindex is None else m[1].lower())
            pos = m.end() if m.lastindex is None else m.end(1)
            continue
        tok, n = _scan(text, pos)
        pos += n
        if tok is None:
            continue
        if tok == _NL:
            out.append(" ".join(line))
            line = []
        else:
            line.append(tok.lower())
    out.append(" ".join(line))
    return "\n".join(out)


def tokenize(captions: Sequence[str]) -> list[str]:
    """COCO's ``PTBTokenizer.tokenize`` for a flat list of captions, in order.

    Joins the captions with newlines (each caption's own ``\\n`` replaced by a space),
    tokenises the whole text, splits the output into lines, drops punctuation tokens.
    """
    joined = "\n".join(c.replace("\n", " ") for c in captions)
    lines = tokenize_text(joined).split("\n")
    lines += [""] * (len(captions) - len(lines))  # cannot happen, but never misalign
    return [
        " ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS)
        for line in lines[: len(captions)]
    ]

"""Parameter counts of every shipped method config on GPT-2-medium (E2E) and BART-large (XSum).

python scripts/method_table.py    markdown table; models are built on the meta device (no weights,
                                  no downloads), so this runs anywhere in seconds.
"""

from __future__ import annotations

from pathlib import Path

from peftrun.experiment import parameter_counts

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
# Phrase-initialised prefixes take the phrase's token count, which needs the real tokenizer;
# offline we give the count (GPT-2 BPE, which BART shares: "table-to-text:" 6, "summarize" 1).
PHRASE_LENGTHS = {"prefix-lowdata": "method.prefix_len={}"}
LENGTH = {"e2e/gpt2-medium": 6, "xsum/bart-large": 1}


def main() -> None:
    print("| config | gpt2-medium trainable | stored | bart-large trainable | stored |")
    print("|---|---|---|---|---|")
    names = sorted({p.stem for d in LENGTH for p in (CONFIGS / d).glob("*.yaml")})
    for name in names:
        cells = []
        for folder, length in LENGTH.items():
            path = CONFIGS / folder / f"{name}.yaml"
            if not path.is_file():
                cells += ["—", "—"]
                continue
            overrides = [PHRASE_LENGTHS[name].format(length)] if name in PHRASE_LENGTHS else []
            c = parameter_counts(path, overrides)
            cells += [
                f"{c['trainable']:,} ({c['trainable_pct']:.3f}%)",
                f"{c['stored']:,} ({c['stored_pct']:.3f}%)",
            ]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

"""Build the byte-level BPE tokenizer shipped for the built-in tiny models (tiny-gpt2, tiny-bart).

The tiny models exist so tests and the quickstart run offline. Their tokenizer is a real HF
byte-level BPE (the same algorithm as GPT-2's and BART's), trained here on the E2E training
references and tables, so it covers any text (byte fallback) but is small (2,048 tokens).

    python scripts/build_tiny_tokenizer.py [E2E_DIR]   (default: the packaged official E2E files)

writes peftrun/assets/tiny/gpt2-tokenizer.json and bart-tokenizer.json (same vocabulary; the BART
one adds <s> … </s> around every text, as BART's tokenizer does).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from peftrun.data import e2e

VOCAB_SIZE = 2048
SPECIAL_TOKENS = ["<|endoftext|>", "<pad>", "<s>", "</s>", "<unk>", "<mask>"]
OUT = Path(__file__).resolve().parents[1] / "peftrun" / "assets" / "tiny"


def e2e_texts(e2e_dir: Path | None) -> list[str]:
    texts = []
    for mr, ref in e2e.read_rows("train", e2e_dir):
        # A rough table linearisation is enough to learn the table's sub-words.
        table = re.sub(r"\[(.*?)\]", r" : \1 |", mr).replace(",", "")
        texts.extend([" " + ref, " " + table])
    return texts


def main(e2e_dir: Path | None) -> None:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(e2e_texts(e2e_dir), trainer=trainer)
    OUT.mkdir(parents=True, exist_ok=True)
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.save(str(OUT / "gpt2-tokenizer.json"))
    bos, eos = tokenizer.token_to_id("<s>"), tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    tokenizer.save(str(OUT / "bart-tokenizer.json"))
    print(f"wrote {OUT} (vocabulary {tokenizer.get_vocab_size()})")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else None)

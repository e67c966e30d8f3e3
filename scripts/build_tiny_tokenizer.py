"""Build the byte-level BPE tokenizer shipped for the built-in tiny models (tiny-gpt2, tiny-bart).

The tiny models exist so tests and the quickstart run offline. Their tokenizer is a real HF
byte-level BPE (the same algorithm as GPT-2's and BART's), trained here on the E2E training
references and tables, so it covers any text (byte fallback) but is small (2,048 tokens).

    python scripts/build_tiny_tokenizer.py [E2E_DIR]   (default: the packaged official E2E files)

writes peftrun/assets/tiny/gpt2-tokenizer.json and bart-tokenizer.json (same vocabulary; the BART
one adds <s> … </s> around every text, as BART's tokenizer does), and llama-tokenizer.json: the same
vocabulary and merges with SmolLM2's special tokens in place of ids 1 and 2 (`<|im_start|>`,
`<|im_end|>`: the Llama family's tiny model follows SmolLM2's conventions, eos = pad = `<|im_end|>`,
no BOS added). `python scripts/build_tiny_tokenizer.py --llama` writes only that one, from the
shipped GPT-2 file.
"""

from __future__ import annotations

import json
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
    write_llama_tokenizer()
    print(f"wrote {OUT} (vocabulary {tokenizer.get_vocab_size()})")


# SmolLM2's own special tokens (ids 0-2 there as here); the other ids keep the tiny vocabulary's.
LLAMA_RENAMED = {"<pad>": "<|im_start|>", "<s>": "<|im_end|>"}


def write_llama_tokenizer() -> None:
    """The GPT-2 tiny tokenizer with SmolLM2's special tokens: byte-level, no prefix space, and a
    post-processor that adds nothing (SmolLM2 adds no BOS)."""
    spec = json.loads((OUT / "gpt2-tokenizer.json").read_text())
    for token in spec["added_tokens"]:
        token["content"] = LLAMA_RENAMED.get(token["content"], token["content"])
    vocab = spec["model"]["vocab"]
    spec["model"]["vocab"] = {LLAMA_RENAMED.get(k, k): i for k, i in vocab.items()}
    (OUT / "llama-tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False, indent=2) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["--llama"]:
        write_llama_tokenizer()
    else:
        main(Path(sys.argv[1]) if len(sys.argv) > 1 else None)

"""Token layouts a config chooses beside the model family (issue 25 section 5): a plain-text source
prefix (`data.source_prefix`) in every family, and the chat layout (`data.format: chat`) through
the tokenizer's own chat template, for every method, refused in one line where there is no template."""

from __future__ import annotations

import pytest
import torch
from conftest import write_config

from peftrun import models, validation
from peftrun.assembly import attach_method
from peftrun.config import Config, DataConfig, DecodeConfig
from peftrun.data.chat import INSTRUCTIONS, chat_turns
from peftrun.data.examples import Pair
from peftrun.data.formats import IGNORE, text_format
from peftrun.decode import generate
from peftrun.errors import PeftrunError
from peftrun.methods import ICLOptions

SOURCE, TARGET = "name : Aromi | area : city centre", "Aromi is in the city centre."
PREFIX = "table-to-text:"

# A ChatML template written for these tests, shaped as SmolLM2's: a default system line when the
# conversation has no system message, then one block per message, then the assistant's opening.
CHATML = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a tiny test model.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def chat_llama():
    """tiny-llama (SmolLM2's special tokens: eos = <|im_end|>) with the test template."""
    loaded = models.load("tiny-llama", seed=0)
    loaded.tokenizer.chat_template = CHATML
    return loaded


def template_ids(tokenizer, messages, generation: bool) -> list[int]:
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=generation, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def user(source: str, instruction: str = INSTRUCTIONS["e2e"]) -> dict[str, str]:
    return {"role": "user", "content": f"{instruction}\n\n{source}"}


# --------------------------------------------------------------------------- source prefix


def test_source_prefix_gpt2_token_ids_and_masked_loss():
    """GPT-2: " table-to-text: name : ..." " " EOS; the prefix is part of the prompt (no loss on
    it); max_source_tokens counts the source's own tokens only."""
    gpt2 = models.load("tiny-gpt2", seed=0)
    fmt = text_format(gpt2, DataConfig(source_prefix=PREFIX))
    plain = text_format(gpt2, DataConfig())
    prompt = fmt.prompt_ids("name : Aromi")
    assert prompt == [291, 850, 18, 525, 18, 89, 838, 31, 305, 262, 691, 226, 0]
    assert gpt2.tokenizer.decode(prompt) == " table-to-text: name : Aromi <|endoftext|>"
    assert plain.prompt_ids("name : Aromi") == [305, 262, 691, 226, 0]  # unset: the old layout
    batch = fmt.training_batch([Pair(SOURCE, TARGET)])
    labels = [t for t in batch["labels"][0].tolist() if t != IGNORE]
    assert labels == fmt.target_ids(TARGET) == plain.target_ids(TARGET)
    short = text_format(gpt2, DataConfig(source_prefix=PREFIX, max_source_tokens=2))
    assert short.prompt_ids("name : Aromi") == [291, 850, 18, 525, 18, 89, 838, 31, 305, 262, 226, 0]
    # In-context demonstrations are written as training examples: with the prefix too.
    assert fmt.demonstration_ids(Pair("name : Aromi", "x"))[:13] == prompt


def test_source_prefix_bart_and_tiny_llama_token_ids():
    """BART's encoder reads <s> "table-to-text: name : ..." </s> (also in demonstrations);
    tiny-llama (SmolLM2's conventions) the GPT-2 text before its <|im_end|>."""
    bart = models.load("tiny-bart", seed=0)
    fmt = text_format(bart, DataConfig(source_prefix=PREFIX))
    assert fmt.prompt_ids("name : Aromi") == [2, 89, 850, 18, 525, 18, 89, 838, 31, 305, 262, 691, 3]
    assert text_format(bart, DataConfig()).prompt_ids("name : Aromi") == [2, 83, 304, 262, 691, 3]
    short = text_format(bart, DataConfig(source_prefix=PREFIX, max_source_tokens=4))
    assert short.prompt_ids("name : Aromi | area : riverside") == [
        2,
        89,
        850,
        18,
        525,
        18,
        89,
        838,
        31,
        305,
        262,
        3,
    ]
    assert fmt.demonstration_ids(Pair("name : Aromi", "x"))[:11] == [
        89,
        850,
        18,
        525,
        18,
        89,
        838,
        31,
        305,
        262,
        691,
    ]
    llama = models.load("tiny-llama", seed=0)
    prompt = text_format(llama, DataConfig(source_prefix=PREFIX)).prompt_ids("name : Aromi")
    assert prompt == [291, 850, 18, 525, 18, 89, 838, 31, 305, 262, 691, 226, 2]


# --------------------------------------------------------------------------- chat layout


def test_chat_prompt_and_training_ids_are_the_templates_with_loss_on_the_reply_only():
    loaded = chat_llama()
    tok = loaded.tokenizer
    fmt = text_format(loaded, DataConfig(format="chat"))
    prompt = fmt.prompt_ids(SOURCE)
    assert prompt == template_ids(tok, [user(SOURCE)], generation=True)
    assert tok.decode(prompt) == (
        "<|im_start|>system\nYou are a tiny test model.<|im_end|>\n<|im_start|>user\n"
        f"{INSTRUCTIONS['e2e']}\n\n{SOURCE}<|im_end|>\n<|im_start|>assistant\n"
    )
    head = [1, 88, 94, 278, 74, 82, 204, 62, 405, 323, 274, 291, 277, 94, 291, 791, 369, 279, 583, 19, 2, 204]
    assert prompt[: len(head) + 4] == head + [
        1,
        1582,
        265,
        204,
    ]  # <|im_start|>system\n…<|im_end|>\n<|im_start|>user\n
    assert prompt[-7:] == [2, 204, 1, 1906, 1654, 375, 204]  # <|im_end|>\n<|im_start|>assistant\n
    batch = fmt.training_batch([Pair(SOURCE, TARGET)])
    ids, labels = batch["inputs"]["input_ids"][0].tolist(), batch["labels"][0].tolist()
    reply = template_ids(tok, [user(SOURCE), {"role": "assistant", "content": TARGET}], generation=False)
    assert ids == reply[:-1]  # the template's conversation up to the reply's <|im_end|> (the EOS)
    target = [38, 87, 301, 78, 293, 371, 335, 386, 391, 19, 2]  # "Aromi is in the city centre." EOS
    assert ids[len(prompt) :] == target and target[-1] == tok.eos_token_id
    # Position i predicts token i+1: everything up to the assistant's reply is masked.
    assert labels == [IGNORE] * (len(prompt) - 1) + target + [IGNORE]


def test_chat_instruction_source_prefix_and_truncation():
    loaded = chat_llama()
    fmt = text_format(
        loaded, DataConfig(dataset="xsum", format="chat", source_prefix="summarize:", max_source_tokens=3)
    )
    text = loaded.tokenizer.decode(fmt.prompt_ids("The council said the road would close."))
    assert f"<|im_start|>user\n{INSTRUCTIONS['xsum']}\n\nsummarize: The coun<|im_end|>" in text  # 3 tokens
    own = text_format(loaded, DataConfig(format="chat", instruction="Describe it."))
    assert "<|im_start|>user\nDescribe it.\n\nname : Aromi<|im_end|>" in loaded.tokenizer.decode(
        own.prompt_ids("name : Aromi")
    )


def test_chat_in_context_demonstrations_are_earlier_turns_of_the_conversation():
    """ICL under the chat layout is few-shot chat: the template's own rendering of the earlier
    user/assistant turns, then the input, after the system line."""
    loaded = chat_llama()
    cfg = Config(data=DataConfig(format="chat"), method=ICLOptions(k=2))
    method, fmt = attach_method(loaded, cfg)
    demos = [
        Pair("name : Cocum", "Cocum is a pub."),
        Pair("name : Zizzi | area : riverside", "Zizzi is by the river."),
    ]
    method.initialize(demos)
    conversation = []
    for demo in method.demonstrations:
        conversation += [user(demo.source), {"role": "assistant", "content": demo.target}]
    ids = fmt.prompt_ids(SOURCE)
    assert ids == template_ids(loaded.tokenizer, [*conversation, user(SOURCE)], generation=True)
    assert method.take_notes() == ["icl: demonstrations per input (k=2, fewer if too long): 2 for 1 inputs"]


@pytest.mark.parametrize(
    "method",
    [
        "{kind: prefix, prefix_len: 3, mlp_hidden: 16}",
        "{kind: prompt, prompt_len: 3}",
        "{kind: lora, rank: 2}",
        "{kind: full}",
        "{kind: icl, k: 1}",
    ],
)
def test_every_method_takes_the_chat_layout(tmp_path, method):
    """A data layout, not a method option: each method trains (a loss on the reply) and decodes."""
    from peftrun.config import build, parse_yaml

    loaded = chat_llama()
    cfg = build(parse_yaml(f"model: {{name: tiny-llama}}\ndata: {{format: chat}}\nmethod: {method}", "test"))
    torch.manual_seed(0)
    session_method, fmt = attach_method(loaded, cfg)
    session_method.initialize([Pair(SOURCE, TARGET)])
    batch = fmt.training_batch([Pair(SOURCE, TARGET), Pair("name : Cocum", "Cocum is a pub.")])
    with session_method.active(2):
        logits = loaded.model(**batch["inputs"]).logits
    loss = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE
    )
    assert torch.isfinite(loss)
    outputs = generate(
        loaded.model,
        session_method,
        fmt,
        [SOURCE],
        DecodeConfig(num_beams=1, max_new_tokens=3),
        torch.device("cpu"),
    )
    assert len(outputs) == 1


CONFIG = """
model: {name: MODEL}
data: {dataset: e2e, format: chat}
method: METHOD
decode: {splits: [dev], limit: 2}
"""


@pytest.mark.parametrize(
    ("model", "method", "message"),
    [
        (
            "tiny-gpt2",
            "{kind: full}",
            "data.format=chat needs a chat template, and the tokenizer of tiny-gpt2 has none",
        ),
        (
            "tiny-llama",
            "{kind: lora}",
            "data.format=chat needs a chat template, and the tokenizer of tiny-llama has none",
        ),
        (
            "tiny-bart",
            "{kind: full}",
            "data.format=chat lays out one conversation for a decoder-only model; tiny-bart",
        ),
        (
            "tiny-gpt2",
            "{kind: prefix, variant: infix}",
            "method.variant=infix sits between the source and the separator",
        ),
    ],
)
def test_chat_without_a_template_or_on_an_encoder_decoder_is_refused_in_one_line(
    tmp_path, model, method, message
):
    path = write_config(tmp_path, CONFIG.replace("MODEL", model).replace("METHOD", method))
    with pytest.raises(PeftrunError) as caught:
        validation.resolve(path, [], None)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_chat_refused_when_the_run_builds_its_format(tmp_path):
    """A tokenizer validation could not load (a hub model offline) is checked when the run builds
    its format, before any training: the same line."""
    gpt2 = models.load("tiny-gpt2", seed=0)
    with pytest.raises(PeftrunError, match="^config error: data.format=chat needs a chat template"):
        text_format(gpt2, DataConfig(format="chat"))
    with pytest.raises(PeftrunError, match="encoder-decoder"):
        text_format(models.load("tiny-bart", seed=0), DataConfig(format="chat"))


def test_a_template_whose_reply_does_not_end_with_the_eos_is_refused():
    loaded = chat_llama()
    loaded.tokenizer.chat_template = CHATML.replace("<|im_end|>", "<|endoftext|>")
    with pytest.raises(PeftrunError, match="does not end with the EOS '<\\|im_end\\|>'"):
        chat_turns(loaded.tokenizer, "tiny-llama")


def test_chat_with_smollm2s_own_template_keeps_its_system_line(smollm2_env):
    """The real SmolLM2-135M-Instruct tokenizer: its template's default system line stays (no
    system message of ours); token ids pinned."""
    tok = models.load_tokenizer("smollm2-135m")
    loaded = models.load("tiny-llama", seed=0)
    loaded.tokenizer = tok  # the format only reads the tokenizer and the positions
    fmt = text_format(loaded, DataConfig(format="chat"))
    prompt = fmt.prompt_ids("name : Aromi")
    assert prompt == template_ids(tok, [user("name : Aromi")], generation=True)
    assert tok.decode(prompt).startswith(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    )
    assert prompt[:3] == [1, 9690, 198] and prompt[-4:] == [2, 198, 1, 520, 9531, 198][-4:]
    assert fmt.target_ids("Aromi is nice.")[-1] == tok.eos_token_id == 2

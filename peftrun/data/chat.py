"""The chat layout (`data.format: chat`) read off a tokenizer's own chat template (no torch here, so
config validation can check a tokenizer without loading a model).

A template is rendered with stand-in messages and cut into the fixed texts around them:

    [user]            head + user_open + USER + reply_open                        (generation prompt)
    [user, assistant] head + user_open + USER + reply_open + REPLY + reply_close
    [u, a, user]      head + user_open + U + reply_open + A + reply_close + user_open + USER + reply_open

SmolLM2 (ChatML): head = "<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by
Hugging Face<|im_end|>\\n" (its default system line, added when no system message is given),
user_open = "<|im_start|>user\\n", reply_open = "<|im_end|>\\n<|im_start|>assistant\\n",
reply_close = "<|im_end|>\\n". A template is usable when it renders that way (the turns are fixed
text around each message, the generation prompt is the start of an assistant reply) and the reply's
end of turn is the tokenizer's EOS (generation stops there); otherwise it is refused in one line.
"""

from __future__ import annotations

from dataclasses import dataclass

from peftrun.errors import PeftrunError

# The user instruction before the source, per dataset (`data.instruction` overrides it).
INSTRUCTIONS = {
    "e2e": "Write a one-sentence restaurant description from this table.",
    "xsum": "Summarize this article in one sentence.",
}

_USER, _REPLY, _NEXT = "PEFTRUN-USER-MESSAGE", "PEFTRUN-ASSISTANT-REPLY", "PEFTRUN-NEXT-MESSAGE"


@dataclass(frozen=True)
class ChatTurns:
    """The fixed texts a chat template writes around the messages (see the module docstring)."""

    head: str
    user_open: str
    reply_open: str
    reply_close: str


def needs_decoder_only(name: str) -> PeftrunError:
    """The refusal of data.format=chat on an encoder-decoder model."""
    return PeftrunError(
        f"config error: data.format=chat lays out one conversation for a decoder-only model; {name} "
        "is an encoder-decoder: use data.format=plain"
    )


def user_content(instruction: str, source: str) -> str:
    """The user message: the instruction, a blank line, the source (the instruction alone for an
    empty source)."""
    return f"{instruction}\n\n{source}" if source else instruction


def render(tokenizer, messages: list[dict[str, str]], generation: bool) -> str:
    """`messages` through the tokenizer's own chat template, as text (no system message is added:
    the template's default, if it has one, stays)."""
    return tokenizer.apply_chat_template(messages, add_generation_prompt=generation, tokenize=False)


def chat_turns(tokenizer, name: str) -> ChatTurns:
    """The template's turns; a one-line PeftrunError when the tokenizer has no chat template or its
    template does not render as fixed turns ending with the EOS."""
    if not getattr(tokenizer, "chat_template", None):
        raise PeftrunError(
            f"config error: data.format=chat needs a chat template, and the tokenizer of {name} has "
            "none (an instruct model's has one); use data.format=plain"
        )

    def refused(why: str) -> PeftrunError:
        return PeftrunError(f"config error: data.format=chat cannot use the chat template of {name}: {why}")

    user, reply, following = (
        {"role": "user", "content": _USER},
        {"role": "assistant", "content": _REPLY},
        {"role": "user", "content": _NEXT},
    )
    try:
        one = render(tokenizer, [user], True)
        two = render(tokenizer, [user, reply], False)
        three = render(tokenizer, [user, reply, following], True)
    except Exception as err:  # a template error (jinja, a template that raises on its own terms)
        raise refused(f"rendering a conversation failed ({type(err).__name__}: {err})") from None
    if one.count(_USER) != 1 or two.count(_REPLY) != 1 or not three.startswith(two):
        raise refused("it does not write each message once, in order")
    before, generation_prompt = one.split(_USER)
    before_two, after_user = two.split(_USER)
    reply_open, reply_close = after_user.split(_REPLY)
    user_open, after_next = three[len(two) :].partition(_NEXT)[::2]
    if before_two != before or after_next != generation_prompt or not before.endswith(user_open):
        raise refused("its turns are not the same text around every message")
    if generation_prompt != reply_open:
        raise refused("its generation prompt is not the start of an assistant reply")
    eos = tokenizer.eos_token
    if not eos or not reply_close.startswith(eos):
        raise refused(f"an assistant reply does not end with the EOS {eos!r}, where generation stops")
    return ChatTurns(before[: len(before) - len(user_open)], user_open, reply_open, reply_close)

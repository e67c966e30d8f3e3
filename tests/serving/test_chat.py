"""`POST /v1/chat/completions`: for runs trained with `data.format: chat`, the last user message is
the source, laid out as the run's own chat prompt, answered on the same engine as /v1/completions;
OpenAI's chat shapes (choices[].message; streamed choices[].delta); a run of another format gets a
clear 400 in OpenAI's error shape."""

from __future__ import annotations

import openai
import pytest
from conftest import write_config
from serve_helpers import SOURCES, LiveServer, make_run

from peftrun import experiment
from peftrun.serving.requests import BadRequest, parse_chat

CHAT_RUN = """
model: {name: smollm2-135m, seed: 0}
data: {dataset: e2e, format: chat, train_size: 4, dev_loss_size: 2}
method: {kind: lora, rank: 2}
train: {lr: 1e-3, epochs: 1, max_steps: 1, batch_size: 2, seed: 3, precision: bf16-frozen}
decode: {splits: [], num_beams: 1, max_new_tokens: 12}
"""


def test_the_last_user_message_is_the_source_and_bad_conversations_are_refused():
    body = parse_chat(
        b'{"model": "m", "messages": [{"role": "system", "content": "Be brief."},'
        b' {"role": "user", "content": "earlier"}, {"role": "assistant", "content": "ok"},'
        b' {"role": "user", "content": [{"type": "text", "text": "name[Aromi]"}]}],'
        b' "max_completion_tokens": 7}'
    )
    assert (body.prompt, body.max_tokens, body.model) == ("name[Aromi]", 7, "m")
    user = b'{"role": "user", "content": "a"}'
    bad = {
        b'{"model": "m", "messages": []}': "'messages' is empty",
        b'{"model": "m", "messages": [' + user + b', {"role": "assistant", "content": "b"}]}':
            "the last message must be the user's",
        b'{"model": "m", "messages": [{"role": "robot", "content": "a"}]}': "'robot' is not one of",
        b'{"model": "m", "messages": [' + user + b'], "tools": [{"type": "function"}]}':
            "'tools' is not supported",
        b'{"model": "m", "messages": [' + user + b'], "promt": 1}': "unknown field 'promt'",
    }  # fmt: skip
    for raw, words in bad.items():
        with pytest.raises(BadRequest, match=words):
            parse_chat(raw)


def test_a_plain_run_answers_chat_with_a_400_in_openais_shape(tmp_path):
    run = make_run(tmp_path / "lora", "tiny-gpt2", "lora")
    server = LiveServer("--adapter", f"lora={run}")
    try:
        client = openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0, timeout=60)
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="lora", messages=[{"role": "user", "content": SOURCES[0]}])
        error = caught.value.body
        assert error["type"] == "invalid_request_error" and error["code"] == 400
        assert "trained with data.format=plain, not chat" in error["message"]
        assert "/v1/completions" in error["message"]
    finally:
        assert server.stop() == 0


def test_a_chat_run_answers_chat_completions_as_its_completions(smollm2_env, tmp_path):
    """The chat answer is the completion of the same source (one engine, one layout); streamed
    chat chunks add up to it; a system message and earlier turns do not change it."""
    run, _ = experiment.train(write_config(tmp_path, CHAT_RUN), [], str(tmp_path / "run"))
    server = LiveServer("--adapter", f"chat={run}", timeout=300)
    try:
        client = openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0, timeout=300)
        expected = client.completions.create(model="chat", prompt=SOURCES[0], max_tokens=12).choices[0]
        messages = [{"role": "user", "content": SOURCES[0]}]
        answer = client.chat.completions.create(model="chat", messages=messages, max_tokens=12)
        assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
        choice = answer.choices[0]
        assert choice.message.role == "assistant"
        assert (choice.message.content, choice.finish_reason) == (expected.text, expected.finish_reason)
        assert answer.usage.completion_tokens > 0
        chunks = list(
            client.chat.completions.create(model="chat", messages=messages, max_tokens=12, stream=True)
        )
        assert all(c.object == "chat.completion.chunk" for c in chunks)
        assert chunks[0].choices[0].delta.role == "assistant"
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected.text
        assert chunks[-1].choices[0].finish_reason == expected.finish_reason
        longer = [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "hi"},
                  {"role": "assistant", "content": "salut"}, *messages]  # fmt: skip
        again = client.chat.completions.create(model="chat", messages=longer, max_tokens=12)
        assert again.choices[0].message.content == expected.text
    finally:
        assert server.stop() == 0

"""Prompt templates: the official Alpaca strings and chat rendering of each CUT context."""

from __future__ import annotations

import copy
import re

import pytest

from cutalign.data.templates import (
    ALPACA_JUDGED,
    ALPACA_PLAIN,
    JUDGE_PROMPT,
    LLAMA2_CHAT_TEMPLATE,
    AlpacaTemplate,
    ChatTemplate,
    PromptTemplate,
    get_template,
)


@pytest.fixture(scope="module")
def chat_tokenizer(llama2_tokenizer):
    tokenizer = copy.deepcopy(llama2_tokenizer)
    tokenizer.chat_template = LLAMA2_CHAT_TEMPLATE
    return tokenizer


def test_alpaca_constants_match_the_method_doc_verbatim(shared_dir):
    doc = (shared_dir / "docs" / "cut-method.md").read_text()
    quoted = [s.replace("\\n", "\n") for s in re.findall(r"`(Below is an instruction[^`]*)`", doc)]
    assert quoted == [ALPACA_PLAIN, ALPACA_JUDGED]
    flat_doc = " ".join(doc.split())
    judge_header = JUDGE_PROMPT.split("\n\n")[0]
    assert judge_header in flat_doc
    assert JUDGE_PROMPT.endswith(
        "### Instruction:\n{instruction}\n\n### Response:\n{response}\n\n### Judgment:\n"
    )


def test_alpaca_renders_each_context():
    template = AlpacaTemplate()
    assert isinstance(template, PromptTemplate)
    assert template.plain("Name {a} color.\nred") == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nName {a} color.\nred\n\n### Response:\n"
    )
    judged = template.judged("Add 2+2.", "The answer 5 is wrong.")
    assert judged.endswith(
        "### Instruction:\nAdd 2+2.\n\n### Judgment:\nThe answer 5 is wrong.\n\n### Response:\n"
    )
    critique = template.critique("Add 2+2.", "5")
    assert critique.startswith("Below is an instruction-response pair.")
    assert critique.endswith("### Instruction:\nAdd 2+2.\n\n### Response:\n5\n\n### Judgment:\n")


def test_alpaca_rejects_conversational_prompts_with_a_hint():
    with pytest.raises(ValueError, match="chat template"):
        AlpacaTemplate().plain([{"role": "user", "content": "hi"}])
    with pytest.raises(TypeError, match="judgment must be a string"):
        AlpacaTemplate().judged("hi", None)


def test_chat_template_requires_a_chat_template(llama2_tokenizer):
    assert not llama2_tokenizer.chat_template
    with pytest.raises(ValueError, match="has no chat_template"):
        ChatTemplate(llama2_tokenizer)
    explicit = ChatTemplate(llama2_tokenizer, chat_template=LLAMA2_CHAT_TEMPLATE)
    assert explicit.plain("hi") == "<s>[INST] hi [/INST]"


def test_chat_plain_and_user_placed_judgment(chat_tokenizer):
    template = ChatTemplate(chat_tokenizer, user_judgment_format="{content}\n[J] {judgment}")
    assert template.plain("What is 2+2?") == "<s>[INST] What is 2+2? [/INST]"
    conversation = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "What is 2+2?"},
    ]
    assert template.judged(conversation, "Wrong sum.") == (
        "<s>[INST] Hi [/INST] Hello! </s><s>[INST] What is 2+2?\n[J] Wrong sum. [/INST]"
    )
    assert conversation[-1]["content"] == "What is 2+2?", "the caller's messages must not be modified"


def test_chat_system_placed_judgment_merges_with_the_system_turn(chat_tokenizer):
    template = ChatTemplate(chat_tokenizer, "system", system_judgment_format="Judgment: {judgment}")
    with_system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"}]
    assert template.judged(with_system, "Too long.") == (
        "<s>[INST] <<SYS>>\nBe brief.\n\nJudgment: Too long.\n<</SYS>>\n\nQ [/INST]"
    )
    assert (
        template.judged("Q", "Too long.") == "<s>[INST] <<SYS>>\nJudgment: Too long.\n<</SYS>>\n\nQ [/INST]"
    )


def test_chat_default_system_prompt_and_critique(chat_tokenizer):
    template = ChatTemplate(chat_tokenizer, system_prompt="Be kind.", critique_request="Judge it.")
    assert template.plain("Q") == "<s>[INST] <<SYS>>\nBe kind.\n<</SYS>>\n\nQ [/INST]"
    assert (
        template.critique("Q", "A")
        == "<s>[INST] <<SYS>>\nBe kind.\n<</SYS>>\n\nQ [/INST] A </s><s>[INST] Judge it. [/INST]"
    )


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ([], "ending with a user turn"),
        (
            [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
            "ending with a user turn",
        ),
        ([{"role": "user"}], "string 'content'"),
        (["hello"], "string 'role'"),
    ],
)
def test_chat_rejects_malformed_conversations(chat_tokenizer, prompt, message):
    with pytest.raises(ValueError, match=message):
        ChatTemplate(chat_tokenizer).plain(prompt)


def test_get_template(chat_tokenizer):
    assert isinstance(get_template("alpaca"), AlpacaTemplate)
    chat = get_template("chat", chat_tokenizer, judgment_placement="system")
    assert isinstance(chat, ChatTemplate) and chat.judgment_placement == "system"
    with pytest.raises(ValueError, match="unknown template 'vicuna'"):
        get_template("vicuna", chat_tokenizer)
    with pytest.raises(ValueError, match="needs the tokenizer"):
        get_template("chat")
    with pytest.raises(ValueError, match="judgment_placement"):
        get_template("chat", chat_tokenizer, judgment_placement="assistant")

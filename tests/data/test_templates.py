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
    RUN_CONFIG_NAME,
    AlpacaTemplate,
    ChatTemplate,
    PromptTemplate,
    get_template,
    load_chat_template,
    render_chat,
    resolve_template,
    resolve_template_settings,
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
    with pytest.raises(ValueError, match=r"has no chat_template.*--chat_template NAME\|FILE.*llama2, chatml, zephyr"):
        ChatTemplate(llama2_tokenizer)
    assert ChatTemplate(llama2_tokenizer, chat_template="llama2").plain("hi") == "<s>[INST] hi [/INST]"
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


def test_chat_templates_by_name_file_or_text(tmp_path, llama2_tokenizer):
    assert load_chat_template("llama2") == LLAMA2_CHAT_TEMPLATE
    assert load_chat_template(None) is None
    jinja = tmp_path / "t.jinja"
    jinja.write_text("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>")
    assert ChatTemplate(llama2_tokenizer, chat_template=str(jinja)).plain("hi") == "<user>hi<assistant>"
    chatml = ChatTemplate(llama2_tokenizer, chat_template="chatml", system_prompt="Be brief.")
    assert chatml.plain("hi") == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    zephyr = ChatTemplate(llama2_tokenizer, chat_template="zephyr")
    assert zephyr.plain("hi") == "<|user|>\nhi</s>\n<|assistant|>\n"
    with pytest.raises(ValueError, match="neither a built-in name"):
        load_chat_template("vicuna")
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% for m in messages %}")
    with pytest.raises(ValueError, match="Jinja syntax error on line 1"):
        load_chat_template(str(bad))


def _save_config(folder, **settings):
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    (folder / RUN_CONFIG_NAME).write_text(yaml.safe_dump({"learning_rate": 0.1, **settings}))
    return folder


def test_resolve_template_reads_the_saved_settings_and_flags_win(tmp_path, llama2_tokenizer):
    assert isinstance(resolve_template(tmp_path / "foreign", llama2_tokenizer), AlpacaTemplate)
    assert isinstance(resolve_template(None, llama2_tokenizer), AlpacaTemplate)
    run = _save_config(tmp_path / "run", template="chat", chat_template="llama2", system_prompt="Be kind.",
                       judgment_placement="system")
    chat = resolve_template(run, llama2_tokenizer)
    assert isinstance(chat, ChatTemplate)
    assert (chat.system_prompt, chat.judgment_placement) == ("Be kind.", "system")
    assert chat.plain("hi") == "<s>[INST] <<SYS>>\nBe kind.\n<</SYS>>\n\nhi [/INST]"
    assert resolve_template(run, llama2_tokenizer, system_prompt="Be brief.").system_prompt == "Be brief."
    assert isinstance(resolve_template(run, llama2_tokenizer, template="alpaca"), AlpacaTemplate)
    # a checkpoint folder reads its run's settings
    (run / "checkpoint-10").mkdir()
    assert isinstance(resolve_template(run / "checkpoint-10", llama2_tokenizer), ChatTemplate)
    settings = resolve_template_settings(run)
    assert settings.describe() == f"chat (llama2), from {run / RUN_CONFIG_NAME}"


def test_resolve_template_implies_chat_and_rejects_contradictions(tmp_path, llama2_tokenizer):
    chat = resolve_template(tmp_path, llama2_tokenizer, chat_template="llama2")
    assert isinstance(chat, ChatTemplate) and chat.plain("hi") == "<s>[INST] hi [/INST]"
    with pytest.raises(ValueError, match="system prompt needs the chat template"):
        resolve_template(tmp_path, llama2_tokenizer, template="alpaca", system_prompt="x")
    with pytest.raises(ValueError, match="neither a built-in name"):
        resolve_template_settings(tmp_path, chat_template="nope.jinja")
    _save_config(tmp_path / "bad", template="chat")
    with pytest.raises(ValueError, match="has no chat_template"):
        resolve_template(tmp_path / "bad", llama2_tokenizer)


def test_saved_chat_template_path_that_moved_falls_back_to_the_saved_tokenizer(tmp_path, chat_tokenizer):
    run = _save_config(tmp_path / "run", template="chat", chat_template="/gone/llama.jinja")
    assert resolve_template(run, chat_tokenizer).plain("hi") == "<s>[INST] hi [/INST]"


def test_render_chat_under_alpaca_takes_one_user_message(chat_tokenizer):
    alpaca = AlpacaTemplate()
    assert render_chat(alpaca, [{"role": "user", "content": "hi"}]) == alpaca.plain("hi")
    with pytest.raises(ValueError, match=r"single user message; got roles \['system', 'user'\]"):
        render_chat(alpaca, [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}])
    chat = ChatTemplate(chat_tokenizer)
    assert render_chat(chat, [{"role": "user", "content": "hi"}]) == chat.plain("hi")

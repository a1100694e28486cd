"""Prompt templates: render the text of each CUT context for an instruction.

A template turns a canonical prompt (a string, or chat messages ending with a user turn) into the
prompt TEXT of one context; :mod:`cutalign.data.views` tokenises that text separately from the
response so that the response ids are identical in every context. Two families exist:

- :class:`AlpacaTemplate`: the official CUT code's Alpaca strings (``templates/alpaca.json``), for
  base models and string prompts;
- :class:`ChatTemplate`: the tokenizer's own chat template, with the judgment placed in the last user
  turn or in a system turn, for chat models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

Prompt = str | Sequence[Mapping[str, str]]

ALPACA_PLAIN = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)
ALPACA_JUDGED = (
    "Below is an instruction that describes a task. Write a response to the instruction and the response "
    "should match the corresponding judgment.\n\n### Instruction:\n{instruction}\n\n### Judgment:\n"
    "{judgment}\n\n### Response:\n"
)
JUDGE_PROMPT = (
    "Below is an instruction-response pair. Write a judgment to evaluate the quality of this response. "
    "Then reply with 'Yes.' or 'No.' to show your decision on whether the response is perfect.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n{response}\n\n### Judgment:\n"
)
DEFAULT_FAKE_POSITIVE = "Your response to the instruction is satisfactory."

# Chat wordings (constructor arguments of ChatTemplate). They restate the Alpaca "judged" template's
# instruction -- the response must match the judgment -- in the places a chat model reads.
USER_JUDGMENT_FORMAT = (
    "{content}\n\nWrite a response that matches the following judgment of it.\nJudgment: {judgment}"
)
SYSTEM_JUDGMENT_FORMAT = "Write a response to the user's instruction that matches the following judgment of it.\nJudgment: {judgment}"
# The Llama-2-chat prompt format ("<s>[INST] <<SYS>>...<</SYS>> ... [/INST] answer </s>") as a Jinja
# chat template, for Llama-2-chat tokenizer files that ship without one (the shared one does).
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}"
    "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)
# ChatML (<|im_start|>role ... <|im_end|>), as Qwen / OpenHermes tokenizers write it.
CHATML_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Zephyr (<|user|>\n ... </s>), as HuggingFaceH4/zephyr-7b-beta writes it.
ZEPHYR_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
# Built-in chat templates by name: `--chat_template NAME` (or a Jinja file) for tokenizers without one.
CHAT_TEMPLATES = {"llama2": LLAMA2_CHAT_TEMPLATE, "chatml": CHATML_CHAT_TEMPLATE, "zephyr": ZEPHYR_CHAT_TEMPLATE}
CRITIQUE_REQUEST = "Write a judgment to evaluate the quality of your previous response: its strengths and its precise mistakes."


@runtime_checkable
class PromptTemplate(Protocol):
    """Renders the prompt text of each context: ``x``, ``[x, j]`` and ``[x, y]`` (judge input)."""

    def plain(self, prompt: Prompt) -> str: ...

    def judged(self, prompt: Prompt, judgment: str) -> str: ...

    def critique(self, prompt: Prompt, completion: str) -> str: ...


def _require_text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__}")
    return value


class AlpacaTemplate:
    """The official CUT Alpaca templates; string prompts only (an ``input`` is already folded in)."""

    name = "alpaca"

    @staticmethod
    def _instruction(prompt: Prompt) -> str:
        if not isinstance(prompt, str):
            raise ValueError(
                "the Alpaca template renders string prompts only, but this prompt is a list of chat messages; "
                "use the chat template (template name 'chat') for conversational data"
            )
        return prompt

    def plain(self, prompt: Prompt) -> str:
        return ALPACA_PLAIN.format(instruction=self._instruction(prompt))

    def judged(self, prompt: Prompt, judgment: str) -> str:
        judgment = _require_text(judgment, "judgment")
        return ALPACA_JUDGED.format(instruction=self._instruction(prompt), judgment=judgment)

    def critique(self, prompt: Prompt, completion: str) -> str:
        completion = _require_text(completion, "completion")
        return JUDGE_PROMPT.format(instruction=self._instruction(prompt), response=completion)


class ChatTemplate:
    """Contexts rendered with ``tokenizer.apply_chat_template`` (generation prompt appended).

    ``judgment_placement="user"`` appends the judgment to the last user turn with
    ``user_judgment_format``; ``"system"`` puts ``system_judgment_format`` into the system turn,
    after an existing system message. ``system_prompt`` is added to prompts without a system turn.
    ``chat_template`` (a built-in name such as ``"llama2"``, a Jinja file, or Jinja text; see
    :func:`load_chat_template`) replaces the tokenizer's own template.
    """

    name = "chat"

    def __init__(
        self,
        tokenizer: Any,
        judgment_placement: Literal["user", "system"] = "user",
        system_prompt: str | None = None,
        *,
        user_judgment_format: str = USER_JUDGMENT_FORMAT,
        system_judgment_format: str = SYSTEM_JUDGMENT_FORMAT,
        critique_request: str = CRITIQUE_REQUEST,
        chat_template: str | None = None,
    ) -> None:
        chat_template = load_chat_template(chat_template)
        if not (chat_template or getattr(tokenizer, "chat_template", None)):
            raise ValueError(
                f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat_template; use the 'alpaca' "
                f"template, or give one with --chat_template NAME|FILE (built in: {', '.join(CHAT_TEMPLATES)}; "
                "or a Jinja file)"
            )
        if judgment_placement not in ("user", "system"):
            raise ValueError(f"judgment_placement must be 'user' or 'system', got {judgment_placement!r}")
        self.tokenizer = tokenizer
        self.judgment_placement = judgment_placement
        self.system_prompt = system_prompt
        self.user_judgment_format = user_judgment_format
        self.system_judgment_format = system_judgment_format
        self.critique_request = critique_request
        self.chat_template = chat_template

    def _messages(self, prompt: Prompt) -> list[dict[str, str]]:
        if isinstance(prompt, str):
            messages = [{"role": "user", "content": prompt}]
        else:
            messages = [_validated_message(m, i) for i, m in enumerate(prompt)]
            if not messages or messages[-1]["role"] != "user":
                raise ValueError(
                    "a conversational prompt must be a non-empty list of messages ending with a user turn"
                )
        if self.system_prompt is not None and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return messages

    def _render(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, chat_template=self.chat_template
        )

    def plain(self, prompt: Prompt) -> str:
        return self._render(self._messages(prompt))

    def judged(self, prompt: Prompt, judgment: str) -> str:
        judgment = _require_text(judgment, "judgment")
        messages = self._messages(prompt)
        if self.judgment_placement == "user":
            last = messages[-1]
            messages[-1] = {
                **last,
                "content": self.user_judgment_format.format(content=last["content"], judgment=judgment),
            }
            return self._render(messages)
        note = self.system_judgment_format.format(judgment=judgment)
        if messages[0]["role"] == "system":
            messages[0] = {**messages[0], "content": f"{messages[0]['content']}\n\n{note}"}
        else:
            messages.insert(0, {"role": "system", "content": note})
        return self._render(messages)

    def critique(self, prompt: Prompt, completion: str) -> str:
        completion = _require_text(completion, "completion")
        messages = self._messages(prompt)
        messages += [
            {"role": "assistant", "content": completion},
            {"role": "user", "content": self.critique_request},
        ]
        return self._render(messages)


def _validated_message(message: Any, index: int) -> dict[str, str]:
    if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
        raise ValueError(f"chat message {index} must be a mapping with a string 'role', got {message!r}")
    if not isinstance(message.get("content"), str):
        raise ValueError(f"chat message {index} ({message['role']}) must have a string 'content'")
    return {"role": message["role"], "content": message["content"]}


def get_template(name: str, tokenizer: Any = None, **kwargs: Any) -> PromptTemplate:
    """Build a template by name: ``"alpaca"`` (no options) or ``"chat"`` (``ChatTemplate`` options)."""
    if name == "alpaca":
        if kwargs:
            raise TypeError(f"the alpaca template takes no options, got {sorted(kwargs)}")
        return AlpacaTemplate()
    if name == "chat":
        if tokenizer is None:
            raise ValueError("the chat template needs the tokenizer whose chat_template renders the prompts")
        return ChatTemplate(tokenizer, **kwargs)
    raise ValueError(f"unknown template {name!r}; choose 'alpaca' or 'chat'")


def load_chat_template(value: str | None) -> str | None:
    """Jinja text for ``--chat_template``: a built-in name (:data:`CHAT_TEMPLATES`), a Jinja file, or
    Jinja text itself; None stays None (the tokenizer's own template is used). Syntax is checked here
    so a broken file fails at startup, not at the first prompt."""
    if value is None or not value.strip():
        return None
    if value in CHAT_TEMPLATES:
        return CHAT_TEMPLATES[value]
    if "{%" in value or "{{" in value:
        text = value
    else:
        path = Path(value).expanduser()
        if not path.is_file():
            raise ValueError(f"chat template {value!r} is neither a built-in name ({', '.join(CHAT_TEMPLATES)}) "
                             "nor a Jinja file")
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            raise ValueError(f"chat template file {path} is empty")
    from jinja2 import TemplateSyntaxError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    try:
        ImmutableSandboxedEnvironment().parse(text)
    except TemplateSyntaxError as err:
        raise ValueError(f"chat template {value[:60]!r}: Jinja syntax error on line {err.lineno}: {err.message}") from err
    return text


def render_chat(template: PromptTemplate, messages: Prompt) -> str:
    """The prompt text of a chat request under a model's training template.

    A chat-trained model renders the messages with its chat template. An Alpaca-trained model only
    knows one instruction, so a single user message is its instruction; anything more (a system
    message, earlier turns) would be silently lost and is an error instead.
    """
    if isinstance(template, AlpacaTemplate) and not isinstance(messages, str):
        turns = [_validated_message(m, i) for i, m in enumerate(messages)]
        if len(turns) != 1 or turns[0]["role"] != "user":
            raise ValueError(
                "this model uses the Alpaca template, which renders a single user message; got roles "
                f"{[t['role'] for t in turns]} (train with --template chat for system prompts and multi-turn chats)")
        return template.plain(turns[0]["content"])
    return template.plain(messages)


# -- templates travel with the model -----------------------------------------------------------------

RUN_CONFIG_NAME = "cutalign_config.yaml"
# Keys of the saved run config (`cutalign train` output) that decide how the model's prompts look.
TEMPLATE_KEYS = ("template", "judgment_placement", "system_prompt", "chat_template", "fake_positive_text")


@dataclass(frozen=True)
class TemplateSettings:
    """How a model's prompts are rendered, and where that came from (``source``: the saved config, if any)."""

    template: str = "alpaca"
    judgment_placement: str = "user"
    system_prompt: str | None = None
    chat_template: str | None = None
    fake_positive_text: str = DEFAULT_FAKE_POSITIVE
    source: str | None = None

    def build(self, tokenizer: Any) -> PromptTemplate:
        """The :class:`PromptTemplate` for ``tokenizer`` (a chat template saved as a path that no longer
        exists falls back to the tokenizer's own, which training saved beside the weights)."""
        if self.template == "alpaca":
            return AlpacaTemplate()
        chat_template = self.chat_template
        if (self.source and chat_template and chat_template not in CHAT_TEMPLATES and "{" not in chat_template
                and not Path(chat_template).expanduser().is_file() and getattr(tokenizer, "chat_template", None)):
            chat_template = None
        return get_template("chat", tokenizer, judgment_placement=self.judgment_placement,
                            system_prompt=self.system_prompt, chat_template=chat_template)

    def describe(self) -> str:
        """One line for a command's summary, e.g. ``chat (llama2), from runs/x/cutalign_config.yaml``."""
        name = self.template
        if self.template == "chat" and self.chat_template:
            shown = self.chat_template if self.chat_template in CHAT_TEMPLATES or "{" not in self.chat_template \
                else "custom Jinja"
            name += f" ({shown})"
        return f"{name}, from {self.source}" if self.source else f"{name} (no saved settings: default)"


def saved_run_config(model_dir: str | Path | None) -> tuple[dict[str, Any], Path | None]:
    """The ``cutalign_config.yaml`` saved with a trained or merged model (a ``checkpoint-N`` folder reads
    its run's), and its path; ``({}, None)`` for a model without one (a hub id, a foreign model)."""
    if model_dir is None:
        return {}, None
    folder = Path(model_dir)
    for candidate in (folder / RUN_CONFIG_NAME, folder.parent / RUN_CONFIG_NAME):
        if candidate.is_file() and (candidate.parent == folder or folder.name.startswith("checkpoint-")):
            import yaml

            try:
                loaded = yaml.safe_load(candidate.read_text(encoding="utf-8"))
            except yaml.YAMLError as err:
                raise ValueError(f"{candidate}: not valid YAML ({err})") from err
            if not isinstance(loaded, dict):
                raise ValueError(f"{candidate}: expected a mapping of training settings")
            return loaded, candidate
    return {}, None


def resolve_template_settings(
    model_dir: str | Path | None,
    *,
    template: str | None = None,
    chat_template: str | None = None,
    system_prompt: str | None = None,
    judgment_placement: str | None = None,
    fake_positive_text: str | None = None,
) -> TemplateSettings:
    """The model's saved template settings, each overridden by an explicit (non-None) argument.

    Without saved settings the default is the Alpaca template (the paper's); ``chat_template`` or
    ``system_prompt`` given alone imply the chat template. An explicit ``template="alpaca"`` ignores
    the saved chat-only options; a system prompt with the Alpaca template is an error (it has none).
    """
    saved, path = saved_run_config(model_dir)
    saved = {k: saved[k] for k in TEMPLATE_KEYS if saved.get(k) is not None}
    if template is None and (chat_template is not None or system_prompt is not None):
        template = "chat"
    name = template or saved.get("template", "alpaca")
    if name not in ("alpaca", "chat"):
        raise ValueError(f"unknown template {name!r}; choose 'alpaca' or 'chat'")
    if name == "alpaca" and system_prompt is not None:
        raise ValueError("a system prompt needs the chat template (--template chat); Alpaca has no system turn")
    chat_saved = saved if name == saved.get("template") else {}

    def pick(key: str, explicit: Any, default: Any) -> Any:
        return explicit if explicit is not None else chat_saved.get(key, default)

    settings = TemplateSettings(
        template=name,
        judgment_placement=pick("judgment_placement", judgment_placement, "user"),
        system_prompt=pick("system_prompt", system_prompt, None),
        chat_template=pick("chat_template", chat_template, None),
        fake_positive_text=fake_positive_text or saved.get("fake_positive_text", DEFAULT_FAKE_POSITIVE),
        source=str(path) if path is not None else None,
    )
    if name == "chat" and chat_template is not None:
        load_chat_template(chat_template)  # an explicit bad name or file fails here, before a model loads
    return settings


def resolve_template(
    model_dir: str | Path | None,
    tokenizer: Any,
    *,
    template: str | None = None,
    chat_template: str | None = None,
    system_prompt: str | None = None,
    judgment_placement: str | None = None,
) -> PromptTemplate:
    """The template a model was trained with (its ``cutalign_config.yaml``), explicit arguments winning;
    Alpaca for a model without saved settings. Used by generate, serve, judge, inspect and eval."""
    settings = resolve_template_settings(model_dir, template=template, chat_template=chat_template,
                                         system_prompt=system_prompt, judgment_placement=judgment_placement)
    return settings.build(tokenizer)

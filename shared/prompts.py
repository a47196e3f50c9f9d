"""The one chat rendering of a problem, used for training (trainer) and inference
(evaluator), so the two formats can't drift; and `extract_code` for model outputs.
"""

from __future__ import annotations

import re

SYSTEM_PROMPT = (
    "You are an expert Python programmer. Solve the problem with a complete Python 3 program "
    "that reads from standard input and writes to standard output (or complete the given starter "
    "code). Answer with the program in a single ```python code block."
)

# A closing fence sits at the start of a line; an unclosed block runs to the end.
_FENCE_LINE = re.compile(r"^[ \t]*```[ \t]*([A-Za-z0-9_+-]*)[ \t]*$")


def render_user(statement: str, starter_code: str | None = None) -> str:
    text = statement.strip()
    if starter_code and starter_code.strip():
        text += "\n\nStarter code:\n```python\n" + starter_code.strip("\n") + "\n```"
    return text


def render_assistant(code: str, reasoning: str | None = None) -> str:
    block = "```python\n" + code.strip("\n") + "\n```"
    if reasoning and reasoning.strip():
        return reasoning.strip() + "\n\n" + block
    return block


def render_messages(
    statement: str,
    starter_code: str | None = None,
    reasoning: str | None = None,
    code: str | None = None,
) -> list[dict[str, str]]:
    """system + user; with `code`, also the assistant turn (reasoning, then a ```python block)."""
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": render_user(statement, starter_code)},
    ]
    if code is not None:
        messages.append({"role": "assistant", "content": render_assistant(code, reasoning)})
    return messages


def extract_code(text: str) -> str | None:
    """The program in a model's answer: the last ```python block, else the last fenced
    block of any language, else the whole text. None when there is no code at all.

    A block left open at the end (generation cut at max tokens) counts up to the end.
    """
    if text is None:
        return None
    blocks = _fenced_blocks(text)
    python = [body for lang, body in blocks if lang in ("python", "py", "python3")]
    chosen = python[-1] if python else (blocks[-1][1] if blocks else text.replace("```", ""))
    chosen = chosen.strip("\n")
    return chosen if chosen.strip() else None


def _fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced block, reading fence lines in order.

    A fence line that names a language while a block is open starts a new block: the open one was
    a stray fence (seen in model-written reasoning), and pairing fences blindly would swallow the
    real ```python block into it.
    """
    blocks: list[tuple[str, str]] = []
    open_lang: str | None = None
    body: list[str] = []
    for line in text.splitlines():
        fence = _FENCE_LINE.match(line)
        if fence is None:
            if open_lang is not None:
                body.append(line)
            continue
        lang = fence.group(1).lower()
        if open_lang is None or lang:
            open_lang, body = lang, []
        else:
            blocks.append((open_lang, "\n".join(body)))
            open_lang = None
    if open_lang is not None:  # cut off at max tokens: the block runs to the end
        blocks.append((open_lang, "\n".join(body)))
    return blocks

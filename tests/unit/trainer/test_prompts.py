from lorafleet.shared.prompts import SYSTEM_PROMPT, extract_code, render_messages


def test_render_without_code_is_a_prompt():
    messages = render_messages("Add two numbers.")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == SYSTEM_PROMPT
    assert messages[1]["content"] == "Add two numbers."


def test_render_with_reasoning_and_starter_code():
    messages = render_messages("Do it.", starter_code="def f(x):\n    pass", reasoning="Think first.",
                               code="def f(x):\n    return x\n")
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert "Starter code:\n```python\ndef f(x):\n    pass\n```" in messages[1]["content"]
    assert messages[2]["content"] == "Think first.\n\n```python\ndef f(x):\n    return x\n```"


def test_render_code_only():
    assert render_messages("x", code="print(1)")[2]["content"] == "```python\nprint(1)\n```"


def test_extract_last_python_block():
    text = "first\n```python\nprint(1)\n```\nthen\n```python\nprint(2)\n```\nbye"
    assert extract_code(text) == "print(2)"


def test_extract_prefers_python_over_other_languages():
    text = "```python\nprint(5)\n```\nand a shell line\n```bash\nls\n```"
    assert extract_code(text) == "print(5)"


def test_extract_generic_block_then_whole_text():
    assert extract_code("```\na = 1\nprint(a)\n```") == "a = 1\nprint(a)"
    assert extract_code("print(3)") == "print(3)"


def test_extract_unclosed_block_runs_to_end():
    assert extract_code("Reasoning.\n```python\nn = int(input())\nprint(n") == "n = int(input())\nprint(n"


def test_extract_nothing():
    assert extract_code("") is None
    assert extract_code("   \n") is None
    assert extract_code("```python\n```") is None


def test_round_trip_of_rendered_answer():
    code = "a = list(map(int, input().split()))\nprint(sum(a) + 3)"
    answer = render_messages("s", reasoning="Sum then add.", code=code)[2]["content"]
    assert extract_code(answer) == code


def test_extract_survives_a_stray_fence_in_the_reasoning():
    # Seen from the tiny model: reasoning with an unmatched ``` before the real answer block.
    text = "Read n.\n```\nthen print it\n```python\nn = int(input())\nprint(n * 2)\n```\n"
    assert extract_code(text) == "n = int(input())\nprint(n * 2)"


def test_extract_ignores_fences_inside_a_line():
    text = "use ``` marks like this ``` in prose\n```python\nprint(1)\n```"
    assert extract_code(text) == "print(1)"

"""Prompt features: markers, sizes, chats, language, escapes, bounds and the log round trip."""

from __future__ import annotations

import json
import math
import time

import pytest

from banditroute.catalog import CHARS_PER_TOKEN
from banditroute.features import (
    MARKERS,
    MAX_WORDS,
    WORDS_TAIL_CHARS,
    ChatTurn,
    estimate_tokens,
    extract,
    features_from_dict,
)

FRENCH = (
    "Le chat est assis sur le tapis et regarde les oiseaux dans le jardin pendant que le "
    "soleil brille."
)
GERMAN = (
    "Der Hund läuft schnell über die Wiese, weil er seinen Ball wiederfinden möchte und sehr "
    "glücklich ist."
)
ENGLISH = (
    "The committee met on Tuesday afternoon to discuss the budget for the coming year and "
    "agreed to meet again next month."
)


@pytest.mark.parametrize(
    ("prompt", "marker"),
    [
        ("def add(a, b):\n    return a + b\nFix the bug in this function.", "code"),
        ("Write a python script that reads stdin.", "code"),
        ("Solve for x: 3x + 5 = 20.", "math"),
        ("If I have 3 apples and buy 4 more, how many do I have", "math"),
        (
            "Which planet is largest?\nA) Mars\nB) Jupiter\nC) Venus\nD) Earth\nAnswer:",
            "multiple_choice",
        ),
        ("The capital of France is ____.", "fill_blank"),
        ("Fill in the blank: the sky is blue", "fill_blank"),
        ("Translate the following sentence into German: I like apples.", "translation"),
        ("Where is the nearest station?", "question"),
        ("Tell me which one is bigger", "question"),
    ],
)
def test_marker_is_detected(prompt: str, marker: str) -> None:
    """Each task marker is set on a prompt that plainly shows that task."""
    assert marker in extract(prompt).markers


@pytest.mark.parametrize(
    ("prompt", "absent"),
    [
        ("The weather is lovely today.", "code"),
        ("The weather is lovely today.", "math"),
        ("The weather is lovely today.", "question"),
        ("The weather is lovely today.", "fill_blank"),
        ("A lovely day.\nWe walked home.", "multiple_choice"),
        ("snake_case_names are fine here", "fill_blank"),
        ("Write a poem about the sea.", "translation"),
    ],
)
def test_marker_is_not_set_without_its_signs(prompt: str, absent: str) -> None:
    """A marker stays off for a prompt without its keywords or patterns (no false positives)."""
    assert absent not in extract(prompt).markers


def test_markers_follow_the_fixed_order() -> None:
    """Markers are listed in MARKERS order whatever order they appear in the prompt."""
    features = extract("Why does this python code fail? Translate the error: 2 + 2 = 5")
    assert len(features.markers) >= 3
    assert list(features.markers) == [m for m in MARKERS if m in features.markers]


def test_multiple_choice_counts_the_options() -> None:
    """Lettered options are counted as choices."""
    features = extract("Pick one:\n(A) red\n(B) green\n(C) blue")
    assert features.choices == 3


@pytest.mark.parametrize("chars", [0, 1, 3, 4, 385, 10_000])
def test_token_estimate_is_chars_over_chars_per_token(chars: int) -> None:
    """The token estimate is ceil(characters / 3.85) for the prompt and in the features."""
    text = "x" * chars
    expected = math.ceil(chars / CHARS_PER_TOKEN)
    assert estimate_tokens(text) == expected
    if chars:
        features = extract(text)
        assert features.tokens == expected
        assert features.chars == chars
        assert features.conversation_tokens == expected
        assert features.turns == 1


def test_chat_routes_on_the_last_user_turn_with_conversation_size() -> None:
    """A chat's features come from its last user turn; turns and size count the whole chat."""
    messages = (
        ChatTurn("system", "You are a helpful assistant. " * 20),
        ChatTurn("user", "Translate 'good morning' into Italian."),
        ChatTurn("assistant", "Buongiorno."),
        ChatTurn("user", "def f(x):\n    return x * 2\nWhat does this function return?"),
        ChatTurn("assistant", "It doubles its argument."),
    )
    features = extract("", messages)
    last_user = messages[3].content
    total = sum(len(m.content) for m in messages)
    assert features.turns == 5
    assert features.chars == len(last_user)
    assert features.tokens == estimate_tokens(last_user)
    assert features.conversation_tokens == math.ceil(total / CHARS_PER_TOKEN)
    assert features.conversation_tokens > features.tokens
    assert "code" in features.markers
    assert "translation" not in features.markers


def test_chat_without_user_turn_uses_the_last_message() -> None:
    """A chat with no user turn is routed on its last message."""
    messages = (ChatTurn("system", "Be brief."), ChatTurn("assistant", "Solve 12 * 7 = ?"))
    features = extract("", messages)
    assert features.chars == len(messages[-1].content)
    assert "math" in features.markers


@pytest.mark.parametrize(("text", "language"), [(ENGLISH, "en"), (FRENCH, "fr"), (GERMAN, "de")])
def test_language_is_detected(text: str, language: str) -> None:
    """English, French and German sentences are told apart."""
    assert extract(text).language == language


def test_language_is_unknown_without_words() -> None:
    """A prompt without any word (only digits and symbols) has an unknown language."""
    assert extract("12 + 34 = ?").language == "unknown"


def test_escaped_newlines_are_unescaped() -> None:
    """A prompt that arrives JSON-escaped (literal backslash-n) is read as multi-line text."""
    escaped = "def f(x):\\n    return x\\nprint(f(2))"
    real = "def f(x):\n    return x\nprint(f(2))"
    assert extract(escaped).lines == 3
    assert extract(escaped).markers == extract(real).markers
    assert extract(escaped).words == extract(real).words


def test_a_real_newline_prompt_keeps_literal_backslashes() -> None:
    """A prompt with real newlines and one literal backslash-n (a regex) is left as it is."""
    prompt = "Explain this regex:\nline one\nline two\nr'a\\nb'"
    assert extract(prompt).lines == 4


def test_words_are_bounded_and_distinct() -> None:
    """At most MAX_WORDS distinct lower-case words are kept, in order of appearance."""
    vocabulary = [f"w{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(100)]
    prompt = " ".join(vocabulary[:10] * 3 + vocabulary)
    assert len(prompt) < WORDS_TAIL_CHARS
    words = extract(prompt.upper()).words
    assert len(words) == MAX_WORDS
    assert len(set(words)) == MAX_WORDS
    assert all(w == w.lower() for w in words)
    assert list(words[:10]) == vocabulary[:10]


def test_megabyte_prompt_reads_only_the_tail() -> None:
    """A 1 MB prompt is handled (within a bound that only a hang exceeds: speed is measured by
    the benchmarks), and apart from its size it looks like its tail."""
    tail = "Question: what is 17 * 23? Show the calculation."
    prompt = ("lorem ipsum dolor sit amet " * 40_000)[: 1_000_000 - len(tail)] + tail
    assert len(prompt) == 1_000_000
    start = time.perf_counter()
    big = extract(prompt, feature_chars=4000)
    elapsed = time.perf_counter() - start
    small = extract(prompt[-4000:], feature_chars=4000)
    assert elapsed < 60.0
    assert big.chars == 1_000_000
    assert big.tokens == estimate_tokens(prompt)
    sized = {"chars", "tokens", "conversation_tokens"}
    assert {k: v for k, v in big.as_dict().items() if k not in sized} == {
        k: v for k, v in small.as_dict().items() if k not in sized
    }
    assert {"math", "question"} <= set(big.markers)


def test_as_dict_round_trips_through_json() -> None:
    """as_dict -> JSON -> features_from_dict gives back equal features (tuples restored)."""
    features = extract(
        "Which is right?\nA) 2 + 2 = 4\nB) 2 + 2 = 5\nExplain why.",
        (),
    )
    data = json.loads(json.dumps(features.as_dict()))
    assert isinstance(data["markers"], list)
    restored = features_from_dict(data)
    assert restored == features
    assert isinstance(restored.markers, tuple)
    assert isinstance(restored.words, tuple)


def test_numeric_view_is_in_unit_range() -> None:
    """The dense numeric view has a bias, every marker, and values in [0, 1] even for big input."""
    features = extract(" why?" * 2000 + " ".join(str(i) for i in range(50)) + " Solve it.")
    numeric = features.numeric()
    assert numeric["bias"] == 1.0
    assert set(MARKERS) <= set(numeric)
    assert all(0.0 <= v <= 1.0 for v in numeric.values())
    assert numeric["math"] == 1.0

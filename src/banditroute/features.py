"""Prompt features: pure functions from prompt text (or a chat) to what the policies see.

Features read a bounded tail of the prompt (``feature_chars``) so that a huge prompt costs no
more than a long one; few-shot prompts put the question to answer last, so the tail is the
part that matters. Markers come from keyword sets and a few cheap patterns (not large
case-insensitive regexes, which cost milliseconds on long prompts); language detection reads
at most ``LANGUAGE_CHARS`` characters.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any, Protocol

from banditroute.catalog import CHARS_PER_TOKEN

MARKERS: tuple[str, ...] = (
    "code",
    "math",
    "multiple_choice",
    "question",
    "fill_blank",
    "translation",
    "summarization",
    "reasoning",
    "creative",
    "extraction",
)
"""Names of the boolean task markers, in a fixed order."""

_KEYWORDS: dict[str, frozenset[str]] = {
    "code": frozenset(
        [
            "def",
            "function",
            "python",
            "code",
            "program",
            "script",
            "return",
            "import",
            "class",
            "assert",
            "sql",
            "javascript",
            "java",
            "rust",
            "golang",
            "regex",
            "compile",
            "implement",
            "array",
            "loop",
            "recursion",
            "stdin",
        ]
    ),
    "math": frozenset(
        [
            "solve",
            "calculate",
            "equation",
            "sum",
            "product",
            "probability",
            "percent",
            "percentage",
            "integral",
            "derivative",
            "compute",
            "total",
            "average",
            "ratio",
            "multiply",
            "divide",
            "remainder",
        ]
    ),
    "question": frozenset(["what", "why", "how", "when", "where", "which", "who", "whom", "whose"]),
    "translation": frozenset(["translate", "translation", "translated", "translating"]),
    "summarization": frozenset(["summarize", "summarise", "summary", "summarization", "tldr"]),
    "reasoning": frozenset(
        [
            "why",
            "explain",
            "explanation",
            "reason",
            "reasoning",
            "prove",
            "justify",
            "therefore",
            "infer",
            "step-by-step",
            "logic",
            "deduce",
        ]
    ),
    "creative": frozenset(
        ["story", "poem", "essay", "song", "lyrics", "creative", "fiction", "haiku"]
    ),
    "extraction": frozenset(["extract", "json", "classify", "sentiment", "entities", "parse"]),
}
_CODE_SIGNS = ("```", "def ", "==", "#include", "();", "{\n", "return ")
_ARITHMETIC = re.compile(r"\d\s*[-+*/^=]\s*\d")
_CHOICE = re.compile(r"^\s*\(?[A-Ea-e][).:]\s*\S", re.MULTILINE)
_BLANK = re.compile(r"(?<![A-Za-z0-9])_+(?![A-Za-z0-9])")
_SHOT = re.compile(r"^\s*(?:[Aa]nswer|A|[Oo]utput|[Ss]olution)\s*:", re.MULTILINE)
_WORD = re.compile(r"[^\W\d_][\w'-]{1,24}")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")

WORDS_TAIL_CHARS = 600
"""How many characters at the end of the prompt the markers and hashed words come from."""
MAX_WORDS = 48
"""At most this many distinct words are kept per prompt."""
LANGUAGE_CHARS = 160
"""Language detection reads at most this many characters (its cost grows with length)."""


class Embedder(Protocol):
    """Turns a prompt's words into a short unit vector (see :mod:`banditroute.embedding`)."""

    def embed_words(self, words: Sequence[str]) -> tuple[float, ...]:
        """The embedding of a prompt's distinct words."""
        ...


@dataclass(frozen=True)
class ChatTurn:
    """One turn of a chat request."""

    role: str
    content: str


@dataclass(frozen=True)
class PromptFeatures:
    """What the policies know about a prompt. Every field is cheap to log and to re-read."""

    chars: int
    tokens: int
    turns: int
    conversation_tokens: int
    shots: int
    choices: int
    numbers: int
    lines: int
    language: str
    markers: tuple[str, ...]
    words: tuple[str, ...]
    embedding: tuple[float, ...] = ()
    """A sentence embedding of the prompt's tail (unit length, rounded), when
    ``features.semantic`` is on; empty otherwise. Like the words, it is derived from the
    prompt's text: a personal-data prompt's embedding is a representation of that data."""

    @property
    def log_tokens(self) -> float:
        """log2(1 + token estimate): length on a scale a linear learner can use."""
        return math.log2(1.0 + self.tokens)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the log (JSON) and for re-reading with :func:`features_from_dict`
        (an empty embedding is left out, so logs without semantic features are unchanged)."""
        data = {name: getattr(self, name) for name in _FEATURE_NAMES}
        if not self.embedding:
            del data["embedding"]
        return data

    def numeric(self) -> dict[str, float]:
        """A dense numeric view (for linear learners such as LinUCB), each value in [0, 1]."""
        out = {
            "bias": 1.0,
            "log_tokens": min(self.log_tokens / 16.0, 1.0),
            "log_conv_tokens": min(math.log2(1.0 + self.conversation_tokens) / 18.0, 1.0),
            "shots": min(self.shots, 10) / 10.0,
            "choices": min(self.choices, 6) / 6.0,
            "numbers": min(self.numbers, 20) / 20.0,
            "lang_en": 1.0 if self.language == "en" else 0.0,
        }
        for marker in MARKERS:
            out[marker] = 1.0 if marker in self.markers else 0.0
        return out


_FEATURE_NAMES = tuple(f.name for f in fields(PromptFeatures))
"""PromptFeatures' fields in order (``dataclasses.fields`` costs microseconds per call)."""
_FEATURE_SET = frozenset(_FEATURE_NAMES)


EMBEDDING_BOUND = 1.0 + 1e-6
"""Largest magnitude of a logged embedding component: they are components of a unit vector
(a damaged or forged one far larger would overflow a learner that squares it)."""
_COUNT_FEATURES = ("chars", "tokens", "turns", "conversation_tokens", "shots", "choices",
                   "numbers", "lines")  # fmt: skip
_WORD_FEATURES = ("markers", "words")


def features_from_dict(data: Mapping[str, Any]) -> PromptFeatures:
    """Inverse of :meth:`PromptFeatures.as_dict` (lists back to tuples; a log written
    before embeddings, or with them off, has none). ValueError naming the field if ``data``
    is not such features (a key missing or unknown, a count that is not a non-negative
    whole number, a word that is not text, an embedding value that is not a finite number):
    another process's or a damaged row's data is refused here, before it reaches a policy.
    The message never quotes the data."""
    if not isinstance(data, Mapping):
        raise ValueError("features: not an object")
    if not set(data) <= _FEATURE_SET:
        raise ValueError("features: an unknown key")
    for name in _FEATURE_NAMES:
        if name not in data and name != "embedding":
            raise ValueError(f"features: {name} is missing")
    for name in _COUNT_FEATURES:
        value = data[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"features: {name} is not a count")
    if not isinstance(data["language"], str):
        raise ValueError("features: language is not text")
    for name in _WORD_FEATURES:
        words = data[name]
        if not isinstance(words, list | tuple) or not all(isinstance(w, str) for w in words):
            raise ValueError(f"features: {name} is not a list of text")
    embedding = data.get("embedding", ())
    if not isinstance(embedding, list | tuple) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and abs(v) <= EMBEDDING_BOUND
        for v in embedding
    ):
        raise ValueError("features: embedding is not a list of unit-vector components")
    return PromptFeatures(
        **{
            **data,
            "markers": tuple(data["markers"]),
            "words": tuple(data["words"]),
            "embedding": tuple(float(v) for v in embedding),
        }
    )


def estimate_tokens(text: str) -> int:
    """Token estimate from character count (about 3.85 characters per token)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def prompt_hash(text: str, key: bytes) -> str:
    """A keyed hash of the prompt, logged instead of the text when prompts are not stored.

    Keyed (BLAKE2b with a secret ``key`` of up to 64 bytes), so that someone holding the log
    but not the key cannot confirm a guessed prompt by hashing it; stable for a given key."""
    data = text.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, key=key, digest_size=16).hexdigest()


def _unescape(text: str) -> str:
    """Turn literal ``\\n`` escapes into newlines when a prompt arrives escaped (JSON text)."""
    if "\\n" in text and text.count("\\n") > text.count("\n"):
        return text.replace("\\n", "\n").replace("\\'", "'").replace('\\"', '"')
    return text


@lru_cache(maxsize=1)
def _detector() -> Any:
    from lingua import Language, LanguageDetectorBuilder

    languages = [
        Language.ENGLISH, Language.SPANISH, Language.FRENCH, Language.GERMAN,
        Language.ITALIAN, Language.PORTUGUESE, Language.DUTCH, Language.RUSSIAN,
        Language.CHINESE, Language.JAPANESE, Language.KOREAN, Language.ARABIC,
    ]  # fmt: skip
    return (
        LanguageDetectorBuilder.from_languages(*languages)
        .with_low_accuracy_mode()
        .with_preloaded_language_models()
        .build()
    )


_ENGLISH_WORDS = frozenset(
    {"the", "and", "is", "are", "was", "were", "of", "to", "in", "that", "this", "with", "for"}
    | {"what", "which", "who", "how", "why", "does", "a", "an", "be", "it", "on", "you", "your"}
    | {"write", "show", "find", "given", "following", "answer", "function", "explain", "steps"}
)
_OTHER_LATIN_WORDS = frozenset(
    {"der", "die", "das", "und", "ist", "nicht", "ein", "eine", "mit", "ich", "sie", "wie"}
    | {"le", "la", "les", "est", "et", "une", "des", "du", "pas", "je", "vous", "qui", "pour"}
    | {"el", "los", "las", "es", "y", "una", "que", "por", "para", "con", "como", "del"}
    | {"il", "di", "che", "non", "sono", "della", "per", "gli", "os", "um", "uma", "nao"}
    | {"het", "een", "van", "niet", "zijn", "ook", "voor", "op", "dat"}
)


def _plainly_english(sample: str) -> bool:
    """Fast path: ASCII text with English function words and none of the common function
    words of the other Latin-script languages the detector knows."""
    if not sample.isascii():
        return False
    words = set(_WORD.findall(sample.lower()))
    return len(words & _ENGLISH_WORDS) >= 2 and words.isdisjoint(_OTHER_LATIN_WORDS)


def detect_language(text: str) -> str:
    """ISO 639-1 code of the text's language among 12 common ones, or ``"unknown"``.

    Plain English text (ASCII with several English function words) skips the statistical
    detector, which costs about 130 us per call; everything else goes through lingua.
    """
    sample = text[-LANGUAGE_CHARS:]
    if not _WORD.search(sample):
        return "unknown"
    if _plainly_english(sample):
        return "en"
    language = _detector().detect_language_of(sample)
    return "unknown" if language is None else str(language.iso_code_639_1.name).lower()


def warm_up() -> None:
    """Load the language models now rather than on the first request."""
    detect_language("warm up the language detector")


def _markers(question: str, lowered: str, vocabulary: set[str], choices: int) -> tuple[str, ...]:
    found = {name for name, keys in _KEYWORDS.items() if not vocabulary.isdisjoint(keys)}
    if any(sign in question for sign in _CODE_SIGNS):
        found.add("code")
    if _ARITHMETIC.search(question) or "how many" in lowered or "how much" in lowered:
        found.add("math")
    if choices >= 2:
        found.add("multiple_choice")
    if "?" in question[-200:]:
        found.add("question")
    if _BLANK.search(question) or "fill in the blank" in lowered:
        found.add("fill_blank")
    return tuple(name for name in MARKERS if name in found)


def extract(
    prompt: str,
    messages: Sequence[ChatTurn] = (),
    *,
    feature_chars: int = 4000,
    embedder: Embedder | None = None,
) -> PromptFeatures:
    """Features of a prompt, or of a chat routed on its last user turn and its total size;
    with an ``embedder``, also the embedding of the distinct words of the prompt's last
    ``WORDS_TAIL_CHARS`` characters."""
    if messages:
        user_turns = [m.content for m in messages if m.role == "user"]
        text = user_turns[-1] if user_turns else messages[-1].content
        total_chars = sum(len(m.content) for m in messages)
        turns = len(messages)
    else:
        text = prompt
        total_chars = len(prompt)
        turns = 1
    tail = _unescape(text[-feature_chars:])
    question = tail[-WORDS_TAIL_CHARS:]
    lowered = question.lower()
    words = _WORD.findall(lowered)
    distinct = tuple(dict.fromkeys(words))
    choices = len(_CHOICE.findall(question))
    return PromptFeatures(
        chars=len(text),
        tokens=estimate_tokens(text),
        turns=turns,
        conversation_tokens=math.ceil(total_chars / CHARS_PER_TOKEN),
        shots=len(_SHOT.findall(tail)),
        choices=choices,
        numbers=len(_NUMBER.findall(question)),
        lines=tail.count("\n") + 1,
        language=detect_language(question),
        markers=_markers(question, lowered, set(words), choices),
        words=distinct[:MAX_WORDS],
        embedding=() if embedder is None else embedder.embed_words(distinct),
    )

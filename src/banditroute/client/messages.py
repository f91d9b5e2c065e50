"""Chat messages as callers hold them (OpenAI-style dicts, as LiteLLM passes them) turned into
the API's ChatMessage: a content given as a list of parts keeps its text parts only, since
banditroute routes on text."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from banditroute.v1 import router_pb2 as pb


def text_of(content: Any) -> str:
    """The text of a message's content: a string as is, a list of parts joined by newlines
    (``{"type": "text", "text": ...}`` parts and plain strings; images and the like have none),
    anything else (None, a tool call) empty."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                texts.append(part["text"])
        return "\n".join(texts)
    return ""


def to_proto(messages: Iterable[Mapping[str, Any] | pb.ChatMessage]) -> list[pb.ChatMessage]:
    """ChatMessages for ``messages`` (dicts with ``role`` and ``content``, or ChatMessages)."""
    converted = []
    for message in messages:
        if isinstance(message, pb.ChatMessage):
            converted.append(message)
        else:
            role = message.get("role")
            converted.append(
                pb.ChatMessage(
                    role=role if isinstance(role, str) else "",
                    content=text_of(message.get("content")),
                )
            )
    return converted

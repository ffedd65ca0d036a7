"""The conversation's brain: what the avatar answers to what it heard.

A brain is a Pipecat processor in the LLM's place: it receives the
``LLMContextFrame`` that the user aggregator pushes at the end of a user turn
and answers with ``LLMFullResponseStartFrame``, ``LLMTextFrame``s and
``LLMFullResponseEndFrame``, which the TTS service aggregates into sentences.

* ``echo`` (default): repeats the user's last utterance, so the whole loop
  works offline with no keys.
* ``openai``: Pipecat's ``OpenAILLMService`` pointed at any OpenAI-compatible
  ``/v1/chat/completions`` endpoint (``--llm-url``, ``--llm-model``,
  ``--llm-key``); tokens stream, and the first sentence is spoken while the
  rest is generated. A failed turn (endpoint down, HTTP error, no first token
  within ``--llm-timeout``, a reply that is not a chat completion stream) ends
  with an error event and the spoken ``--llm-fallback`` line, and the next turn
  tries the endpoint again (:mod:`realtime.conversation.openai_brain`). With
  ``expressiveness`` > 0 the system prompt asks the model to tag each sentence
  with its emotion (:func:`system_instruction`).
"""

from __future__ import annotations

import logging
from typing import Any

from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from realtime.settings import Settings

logger = logging.getLogger(__name__)

# Sent when no key is configured: a local server ignores it, and we never fall back
# to OPENAI_API_KEY, which would hand an OpenAI key to whatever --llm-url names.
NO_KEY = "no-key"


class BrainError(ValueError):
    """The brain settings cannot make a brain (the message says which flag to set)."""


def _message_text(message: Any) -> str:
    """Plain text of an OpenAI-style message (string content or a list of text parts)."""
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


class EchoBrain(FrameProcessor):
    """Answers each new user message with the same words.

    A context whose last user message was already answered (an empty user turn
    after a barge-in, say) gets no answer, so a cough never replays old words.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._answered_index = -1

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, LLMContextFrame):
            await self.push_frame(frame, direction)
            return
        messages = frame.context.get_messages()
        last_user = max(
            (i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"),
            default=-1,
        )
        if last_user <= self._answered_index:
            return
        self._answered_index = last_user
        text = _message_text(messages[last_user]).strip()
        if not text:
            return
        await self.push_frame(LLMFullResponseStartFrame())
        await self.push_frame(LLMTextFrame(text))
        await self.push_frame(LLMFullResponseEndFrame())


def system_instruction(settings: Settings) -> str | None:
    """The LLM's system prompt: ours, plus the emotion-tag instruction when the face is expressive.

    The model is asked to begin each sentence with ``[happy]``, ``[sad]``, ... (see
    :mod:`engines.expression.tags` for why a tag and not a tool call); the TTS removes the tags
    before speaking, and a sentence without one gets its emotion from its words.
    """
    prompt = settings.system_prompt.strip()
    if settings.expressiveness > 0.0:
        from engines.expression.tags import tag_instruction

        prompt = f"{prompt}\n\n{tag_instruction()}" if prompt else tag_instruction()
    return prompt or None


def make_brain(settings: Settings) -> FrameProcessor:
    """The brain processor that ``settings.brain`` names (a new one per session)."""
    if settings.brain == "echo":
        return EchoBrain()
    if settings.brain == "openai":
        if not settings.llm_url:
            raise BrainError("brain 'openai' needs --llm-url (or SPLATCAST_LLM_URL)")
        if not settings.llm_model:
            raise BrainError("brain 'openai' needs --llm-model (or SPLATCAST_LLM_MODEL)")
        from realtime.conversation.openai_brain import GuardedOpenAILLMService

        logger.info("brain: OpenAI-compatible %s, model %s", settings.llm_url, settings.llm_model)
        return GuardedOpenAILLMService(
            timeout_s=settings.llm_timeout_s,
            fallback=settings.llm_fallback,
            api_key=settings.llm_key or NO_KEY,
            base_url=settings.llm_url,
            settings=GuardedOpenAILLMService.Settings(
                model=settings.llm_model, system_instruction=system_instruction(settings)
            ),
        )
    raise BrainError(f"unknown brain {settings.brain!r}; use echo or openai")

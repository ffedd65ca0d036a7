"""The OpenAI-compatible brain, guarded: a failed turn is bounded in time, reported and answered.

Pipecat's ``OpenAILLMService`` streams ``/v1/chat/completions`` and turns
exceptions into ``ErrorFrame``s, but on its own a hanging endpoint holds a turn
for the OpenAI client's default 600 s, an endpoint that answers with something
that is not a chat completion stream (an HTML page, a JSON error with status
200) ends the turn in silence, and a 4xx marks the service unusable. This
subclass (imported lazily by :func:`realtime.conversation.brains.make_brain`) adds:

* **a time budget**: the first token must arrive within ``timeout_s`` of the
  request (connect, headers and first chunk together), and each later chunk
  within ``timeout_s`` of the one before; the client makes no retries of its
  own (a retry would wait behind the user's next turn);
* **no silent turns**: a stream that ends without any answer text (or tool call)
  is an error too (:class:`LLMReplyError`);
* **short, secret-free error messages** on the ``ErrorFrame`` (the full
  exception goes to the log, where the CLI's filter masks secrets);
* **a spoken fallback**: after a failed turn the brain pushes
  ``TTSSpeakFrame(fallback)``, so the avatar says so (unless the user
  interrupted the turn, which cancels it before that point);
* **the next turn works**: a turn starts with the service marked usable again,
  whatever the last one's error was (Pipecat marks it unusable after a 401/403/4xx).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import openai
from pipecat.frames.frames import ErrorFrame, Frame, LLMContextFrame, TTSSpeakFrame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.utils.errors import ErrorCategory

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0  # at most; never more than the whole budget


class LLMReplyError(RuntimeError):
    """The endpoint answered, but not with a chat completion stream that has an answer in it."""


class LLMTimeoutError(TimeoutError):
    """The endpoint did not produce the next token in time."""


def describe_llm_error(exc: BaseException | None, timeout_s: float) -> str:
    """A short message for the user about why an LLM turn failed (no response bodies, no secrets)."""
    if isinstance(exc, LLMTimeoutError | openai.APITimeoutError | TimeoutError):
        return f"the language model did not answer within {timeout_s:g} s"
    if isinstance(exc, openai.APIStatusError):
        return f"the language model endpoint answered HTTP {exc.status_code}"
    if isinstance(exc, openai.APIConnectionError | ConnectionError):
        return "the language model endpoint could not be reached or dropped the connection"
    if isinstance(exc, LLMReplyError | json.JSONDecodeError | openai.APIError | ValueError):
        return "the language model endpoint sent a reply that is not a valid chat completion stream"
    return "the language model failed"


def _has_answer(chunk: Any) -> bool:
    """Whether a ``ChatCompletionChunk`` carries answer text or a tool call."""
    choices = getattr(chunk, "choices", None)
    if not choices:
        return False
    delta = getattr(choices[0], "delta", None)
    return bool(getattr(delta, "content", None) or getattr(delta, "tool_calls", None))


class _GuardedStream:
    """An ``AsyncStream`` of chunks with a deadline for the first answer and one between chunks."""

    def __init__(self, stream: Any, first_deadline: float, timeout_s: float) -> None:
        self._stream = stream
        self._first_deadline = first_deadline  # loop time
        self._timeout_s = timeout_s

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[Any]:
        loop = asyncio.get_running_loop()
        source = self._stream.__aiter__()
        answered = False
        while True:
            if answered:
                deadline = loop.time() + self._timeout_s
            else:
                deadline = min(self._first_deadline, loop.time() + self._timeout_s)
            try:
                async with asyncio.timeout_at(deadline):
                    chunk = await anext(source)
            except StopAsyncIteration:
                break
            except TimeoutError as exc:
                what = "next" if answered else "first"
                raise LLMTimeoutError(f"no {what} token within {self._timeout_s:g} s") from exc
            answered = answered or _has_answer(chunk)
            yield chunk
        if not answered:
            raise LLMReplyError("the stream ended without any answer text")

    async def close(self) -> None:
        await self._stream.close()


class GuardedOpenAILLMService(OpenAILLMService):
    """``OpenAILLMService`` with a time budget, short error messages and a spoken fallback per failed turn."""

    def __init__(self, *, timeout_s: float, fallback: str, **kwargs: Any) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self._timeout_s = timeout_s  # before super().__init__: create_client reads it
        self._fallback = fallback.strip()
        self._turn_failed = False
        super().__init__(**kwargs)

    def create_client(self, *args: Any, **kwargs: Any) -> Any:
        client = super().create_client(*args, **kwargs)
        # openai's own Timeout: openai 3 runs on httpx2, 1.x/2.x on httpx, each re-exports its client's type
        timeout = openai.Timeout(self._timeout_s, connect=min(CONNECT_TIMEOUT_S, self._timeout_s))
        return client.with_options(timeout=timeout, max_retries=0)

    async def get_chat_completions(self, context: Any) -> Any:
        loop = asyncio.get_running_loop()
        first_deadline = loop.time() + self._timeout_s
        try:
            async with asyncio.timeout_at(first_deadline):
                stream = await super().get_chat_completions(context)
        except TimeoutError as exc:
            raise LLMTimeoutError(f"no answer within {self._timeout_s:g} s") from exc
        return _GuardedStream(stream, first_deadline, self._timeout_s)

    async def push_error(
        self,
        error_msg: str,
        exception: Exception | None = None,
        fatal: bool = False,
        category: ErrorCategory | None = None,
        force_treat_as_permanent: bool = False,
    ) -> None:
        # Pipecat's message quotes the endpoint's response body, which may echo the key: log the detail
        # (the CLI masks secrets in log records), put a short message on the frame.
        logger.warning("%s: LLM turn failed: %s", self, error_msg)
        await super().push_error(
            describe_llm_error(exception, self._timeout_s),
            exception,
            fatal=fatal,
            category=category,
            force_treat_as_permanent=force_treat_as_permanent,
        )

    async def push_error_frame(self, error: ErrorFrame, force_treat_as_permanent: bool = False) -> None:
        self._turn_failed = True
        if force_treat_as_permanent:
            await super().push_error_frame(error, force_treat_as_permanent=True)
        else:
            await super().push_error_frame(error)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if not isinstance(frame, LLMContextFrame):
            await super().process_frame(frame, direction)
            return
        if not self.is_usable:  # last turn's 4xx (a bad key, a rate limit) must not cost this one
            await self.set_usable(True)
        self._turn_failed = False
        await super().process_frame(frame, direction)
        if self._turn_failed and self._fallback:
            # in the context as the assistant's answer: some chat templates refuse two user turns in a row
            await self.push_frame(TTSSpeakFrame(self._fallback))

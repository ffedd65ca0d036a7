"""The inline emotion-tag protocol for LLM replies, and a streaming stripper so a tag is never spoken.

Why an inline tag and not a tool call: the OpenAI-compatible servers people
run locally differ in tool support. llama.cpp's ``llama-server`` needs
``--jinja`` and a model whose chat template it knows (else a generic, more
verbose format); vLLM answers ``tool_choice: auto`` with HTTP 400 unless it
was started with ``--enable-auto-tool-choice --tool-call-parser <parser for
that model family>``; Ollama streams tool calls only since May 2025 and only
for models tagged "tools". A tool call also ends the assistant's turn in most
chat templates, so a per-sentence emotion would cost a round trip per
sentence. A short bracketed word in the text works with every server and
every model that follows a system prompt, streams with the text, and costs a
token or two. When the model ignores the instruction, nothing breaks: the
sentence has no tag and the text classifier decides
(:class:`engines.expression.text_emotion.ReplyEmotion`).

The protocol: the system prompt gets :func:`tag_instruction`; the model writes
``[happy]``, ``[sad]``, ``[surprised]``, ``[thinking]`` or ``[neutral]``
before a sentence, optionally with an intensity (``[happy 0.4]``,
``[sad:60%]``). Common synonyms are understood (``[excited]`` is happy,
``[sorry]`` sad, ``[curious]`` thinking, ...). Any other single bracketed word
or short phrase (letters, spaces, ``-``/``_``, up to 24 characters) is taken
for a tag the model made up: it is removed from the spoken text and the
sentence falls back to text analysis. Brackets around anything else (digits
first, punctuation, longer text) are left as they are.

:class:`TagStripper` does this on a token stream: text outside brackets comes
out at once; from a ``[`` it holds at most ``MAX_TAG_CHARS`` characters until
the ``]`` decides between a tag and literal text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engines.expression.emotions import EMOTIONS, EmotionCue

MAX_TAG_CHARS = 40  # "[" ... "]" longer than this is literal text
DEFAULT_TAG_INTENSITY = 0.7

#: Words a model may use for our emotions.
SYNONYMS: dict[str, str] = {
    **{e: e for e in EMOTIONS},
    **dict.fromkeys(
        "happy joy joyful glad cheerful excited delighted pleased amused smile smiling laugh laughing "
        "warm friendly enthusiastic grateful proud relieved playful".split(),
        "happy",
    ),
    **dict.fromkeys(
        "sad sorry sadness unhappy upset disappointed sympathetic empathetic concerned worried "
        "regretful somber sombre serious grave apologetic".split(),
        "sad",
    ),
    **dict.fromkeys("surprise surprised amazed astonished shocked wow impressed".split(), "surprised"),
    **dict.fromkeys(
        "thinking think thoughtful pondering curious unsure uncertain confused hmm wondering "
        "considering skeptical sceptical".split(),
        "thinking",
    ),
    **dict.fromkeys("neutral calm normal none plain".split(), "neutral"),
}

_TAG = re.compile(
    r"\[\s*(?P<word>[A-Za-z][A-Za-z _-]{0,23}?)\s*(?:[:=,]?\s*(?P<level>\d{1,3}\s*%|[01](?:\.\d+)?|\.\d+))?\s*\]"
)


def tag_instruction() -> str:
    """What the system prompt adds so the model tags each sentence with its emotion."""
    names = ", ".join(f"[{e}]" for e in EMOTIONS)
    return (
        "Your words are spoken aloud by an avatar whose face shows your feelings. Begin every sentence "
        f"with one tag in square brackets for the feeling of that sentence: {names}. "
        "Use square brackets for nothing else. Example: [happy] That is great news! "
        "[thinking] Let me see how that would work."
    )


@dataclass(frozen=True)
class EmotionTag:
    """A tag found in the text: the emotion it names (None: a word we do not know) and what was written."""

    cue: EmotionCue | None
    raw: str


def parse_tag(raw: str) -> EmotionTag | None:
    """``"[happy 0.4]"`` → an :class:`EmotionTag`; None when ``raw`` is not a tag at all."""
    m = _TAG.fullmatch(raw.strip())
    if m is None:
        return None
    word = " ".join(m.group("word").lower().replace("_", " ").replace("-", " ").split())
    name = SYNONYMS.get(word) or SYNONYMS.get(word.split()[-1]) if word else None
    if name is None:
        return EmotionTag(None, raw)
    intensity = DEFAULT_TAG_INTENSITY
    level = m.group("level")
    if level:
        level = level.replace(" ", "")
        value = float(level[:-1]) / 100.0 if level.endswith("%") else float(level)
        intensity = min(1.0, max(0.0, value))
    if name == "neutral":
        intensity = 0.0
    return EmotionTag(EmotionCue(name, intensity, "tag"), raw)


class TagStripper:
    """Removes emotion tags from streamed text; see the module docstring.

    ``feed(text)`` returns the pieces now decided, in order: ``str`` for text to
    speak, :class:`EmotionTag` where a tag stood. A tag that sat between two
    words leaves one space behind, so words never run together.
    """

    def __init__(self) -> None:
        self._held = ""  # from a "[" not yet closed
        self._last = " "  # the last character given out (" " at the start: no space needed there)
        self._drop_space = False  # a tag was just removed and a space was put in its place

    def feed(self, text: str) -> list[str | EmotionTag]:
        out: list[str | EmotionTag] = []
        plain: list[str] = []

        def emit_plain(s: str) -> None:
            if not s:
                return
            if self._drop_space and s[0].isspace():
                s = s[1:]
            if s:
                self._drop_space = False
                plain.append(s)
                self._last = s[-1]

        def emit_tag(tag: EmotionTag) -> None:
            if plain:
                out.append("".join(plain))
                plain.clear()
            if not self._last.isspace():
                plain.append(" ")
                self._last = " "
            self._drop_space = True  # the tag's own space after it goes: one space remains, not two
            out.append(tag)

        for ch in text:
            if self._held:
                if ch == "]":
                    raw = self._held + ch
                    self._held = ""
                    tag = parse_tag(raw)
                    if tag is None:
                        emit_plain(raw)
                    else:
                        emit_tag(tag)
                elif ch == "[":
                    emit_plain(self._held)
                    self._held = ch
                elif ch in "\n\r" or len(self._held) >= MAX_TAG_CHARS:
                    emit_plain(self._held + ch)
                    self._held = ""
                else:
                    self._held += ch
            elif ch == "[":
                self._held = ch
            else:
                emit_plain(ch)
        if plain:
            out.append("".join(plain))
        # a space we put in for a tag that was followed by plain text: keep pieces in order
        return _merge(out)

    def flush(self) -> list[str | EmotionTag]:
        """End of the stream: an unclosed ``[`` and what follows it is text."""
        held, self._held = self._held, ""
        self._drop_space = False
        self._last = " "
        return [held] if held else []

    @property
    def holding(self) -> bool:
        """Whether text is held back waiting for a ``]``."""
        return bool(self._held)


def _merge(pieces: list[str | EmotionTag]) -> list[str | EmotionTag]:
    out: list[str | EmotionTag] = []
    for p in pieces:
        if isinstance(p, str) and out and isinstance(out[-1], str):
            out[-1] = out[-1] + p
        elif not (isinstance(p, str) and not p):
            out.append(p)
    return out


def split_tags(text: str) -> tuple[str, list[EmotionTag]]:
    """A whole text without its tags, and the tags in order (for text that is already complete)."""
    stripper = TagStripper()
    pieces = [*stripper.feed(text), *stripper.flush()]
    clean = "".join(p for p in pieces if isinstance(p, str))
    return clean, [p for p in pieces if isinstance(p, EmotionTag)]


def first_cue(tags: list[EmotionTag]) -> EmotionCue | None:
    """The emotion of the first tag that names one we know (a sentence's tag), else None."""
    return next((t.cue for t in tags if t.cue is not None), None)

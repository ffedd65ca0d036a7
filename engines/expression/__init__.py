"""Expression from what is said and how: text emotion, LLM emotion tags, prosody, stress emphasis.

Pure per-utterance logic with no clock, no networking and no Pipecat: the
motion layers and the conversation pipeline in :mod:`realtime` use these.

* :mod:`engines.expression.emotions`: the emotion vocabulary and :class:`EmotionCue`;
* :mod:`engines.expression.text_emotion`: an offline sentence classifier (VADER
  valence + small cue lists) mapped to our emotions and intensities, with mood
  carried across the sentences of a reply;
* :mod:`engines.expression.tags`: the inline ``[happy]`` tag protocol an LLM is
  asked to follow, and a streaming stripper so a tag is never spoken;
* :mod:`engines.expression.prosody`: a streaming pitch/energy tracker and
  pitch-accent / phrase-end detector for audio from any TTS, within a bounded
  lookahead;
* :mod:`engines.expression.stress`: emphasis events from Piper's stress marks
  on the alignment path.
"""

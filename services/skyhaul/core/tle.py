"""Two-line element sets: parsing and validation of catalogue text.

Accepts 2-line files and 3-line (named) files, with an optional "0 " before names (Space-Track style),
CRLF line endings and blank lines. Every set is checked (line length, checksum, numeric fields, ranges,
matching satellite numbers); a problem is reported as "source:line: reason". With skip_invalid=True
a bad set is left out and reported instead of failing the whole file.
"""

import datetime as _dt
import fnmatch
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

TLE_LINE_LENGTH = 69


class TleError(ValueError):
    """A malformed TLE file; the message is 'source:line: reason'."""

    def __init__(self, source: str, line_number: int, reason: str):
        super().__init__(f"{source}:{line_number}: {reason}")
        self.source = source
        self.line_number = line_number
        self.reason = reason


@dataclass(frozen=True)
class TleRecord:
    """One element set as it appeared in the file. line_number is the 1-based line of line 1."""

    name: str
    line1: str
    line2: str
    line_number: int
    source: str = "<string>"


@dataclass(frozen=True)
class TleIssue:
    """A set that was skipped, and why."""

    source: str
    line_number: int
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line_number}: {self.reason}"


@dataclass(frozen=True)
class TleParseResult:
    records: list[TleRecord]
    skipped: list[TleIssue] = field(default_factory=list)


@dataclass(frozen=True)
class TleFields:
    """Decoded values of one set, in the units the TLE format uses."""

    satnum: int
    classification: str
    intl_designator: str
    epoch_year: int
    epoch_day: float  # day of year with fraction, 1.0 = Jan 1 00:00 UTC
    epoch_jd_whole: float  # Julian date of the epoch's midnight (ends in .5)
    epoch_jd_frac: float  # fraction of the day, as written (8 decimals)
    ndot_rev_day2: float  # first derivative of mean motion / 2, as written
    nddot_rev_day3: float  # second derivative / 6, as written (mantissa * 10**exponent)
    bstar: float
    element_number: int
    inclination_deg: float
    raan_deg: float
    eccentricity: float
    argp_deg: float
    mean_anomaly_deg: float
    mean_motion_rev_day: float
    revolution_number: int
    # The mantissa/exponent pairs are kept because SGP4 builds its values as mantissa * 10**exponent,
    # and reproducing that product (not the decimal literal) keeps propagation bit-identical.
    nddot_mantissa: float = 0.0
    nddot_exponent: int = 0
    bstar_mantissa: float = 0.0
    bstar_exponent: int = 0


class _FieldError(Exception):
    def __init__(self, line_index: int, reason: str):
        super().__init__(reason)
        self.line_index = line_index  # 0 = line 1, 1 = line 2
        self.reason = reason


def tle_checksum(line: str) -> int:
    """Modulo-10 checksum of the first 68 columns: digits count their value, '-' counts 1."""
    total = 0
    for char in line[:68]:
        if char.isdigit():
            total += ord(char) - 48
        elif char == "-":
            total += 1
    return total % 10


_ALPHA5 = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # Alpha-5 catalogue numbers skip I and O


def _satnum(text: str, line_index: int) -> int:
    text = text.strip()
    if len(text) == 5 and text[0].upper() in _ALPHA5 and text[1:].isdigit():
        return (10 + _ALPHA5.index(text[0].upper())) * 10000 + int(text[1:])
    if not text.isdigit():
        raise _FieldError(line_index, f"satellite number (columns 3-7) is not a number: {text!r}")
    return int(text)


def _number(line: str, start: int, stop: int, what: str, line_index: int, blank=None) -> float:
    text = line[start:stop]
    if blank is not None and not text.strip():
        return blank
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise _FieldError(
            line_index, f"{what} (columns {start + 1}-{stop}) is not a number: {text.strip()!r}"
        )
    return value


def _integer(line: str, start: int, stop: int, what: str, line_index: int) -> int:
    text = line[start:stop].strip()
    if not text:
        return 0
    try:
        return int(text)
    except ValueError:
        raise _FieldError(
            line_index, f"{what} (columns {start + 1}-{stop}) is not an integer: {text!r}"
        ) from None


_EXPONENT_FIELD = re.compile(r"[ +-][0-9 ]{5}[ +-][0-9]")


def _exponential(line: str, start: int, what: str, line_index: int) -> tuple[float, int]:
    """The TLE 'assumed decimal point' notation, e.g. ' 28098-4' = 0.28098e-4, columns start..start+8."""
    text = line[start : start + 8]
    if not _EXPONENT_FIELD.fullmatch(text):
        raise _FieldError(
            line_index, f"{what} (columns {start + 1}-{start + 8}) is not in TLE exponent notation: {text!r}"
        )
    sign = text[0].strip()
    mantissa = float(sign + "." + text[1:6].replace(" ", "0"))
    return mantissa, int(text[6:].replace(" ", ""))


def _check_range(value: float, low: float, high: float, what: str, line_index: int, high_open=False):
    if value < low or value > high or (high_open and value >= high):
        bracket = ")" if high_open else "]"
        raise _FieldError(line_index, f"{what} {value:g} is outside [{low:g}, {high:g}{bracket}")


def _epoch(line1: str) -> tuple[int, float, float, float]:
    text = line1[18:32]
    try:
        two_digit_year = int(text[:2])
        day = float(text[2:])
    except ValueError:
        raise _FieldError(0, f"epoch (columns 19-32) is not a number: {text.strip()!r}") from None
    if not (1.0 <= day < 367.0):
        raise _FieldError(0, f"epoch day of year {day:g} is outside [1, 367)")
    year = two_digit_year + (2000 if two_digit_year < 57 else 1900)  # the TLE convention: 1957-2056
    whole_text, _, frac_text = text[2:].strip().partition(".")
    day_whole = int(whole_text)
    frac = float("0." + frac_text) if frac_text else 0.0
    midnight = _dt.date(year, 1, 1).toordinal() + (day_whole - 1)
    jd_whole = midnight + 1721424.5  # proleptic Gregorian ordinal 1 = JD 1721425.5 at 00:00
    return year, day, jd_whole, frac


def decode_tle(line1: str, line2: str) -> TleFields:
    """Decode and range-check a set whose lines already passed the length/checksum checks."""
    satnum1 = _satnum(line1[2:7], 0)
    year, day, jd_whole, jd_frac = _epoch(line1)
    ndot = _number(line1, 33, 43, "first derivative of mean motion", 0)
    nddot_m, nddot_e = _exponential(line1, 44, "second derivative of mean motion", 0)
    bstar_m, bstar_e = _exponential(line1, 53, "BSTAR drag term", 0)
    element_number = _integer(line1, 64, 68, "element set number", 0)

    satnum2 = _satnum(line2[2:7], 1)
    if satnum1 != satnum2:
        raise _FieldError(1, f"satellite number {satnum2} on line 2 differs from {satnum1} on line 1")
    inclination = _number(line2, 8, 16, "inclination", 1)
    raan = _number(line2, 17, 25, "right ascension of the ascending node", 1)
    ecc_text = line2[26:33].replace(" ", "0")
    if not ecc_text.isdigit():
        raise _FieldError(1, f"eccentricity (columns 27-33) is not a number: {line2[26:33].strip()!r}")
    eccentricity = float("0." + ecc_text)
    argp = _number(line2, 34, 42, "argument of perigee", 1)
    mean_anomaly = _number(line2, 43, 51, "mean anomaly", 1)
    mean_motion = _number(line2, 52, 63, "mean motion", 1)
    revolution = _integer(line2, 63, 68, "revolution number", 1)

    _check_range(inclination, 0.0, 180.0, "inclination", 1)
    _check_range(raan, 0.0, 360.0, "right ascension of the ascending node", 1)
    _check_range(argp, 0.0, 360.0, "argument of perigee", 1)
    _check_range(mean_anomaly, 0.0, 360.0, "mean anomaly", 1)
    if not mean_motion > 0.0:
        raise _FieldError(1, f"mean motion {mean_motion:g} rev/day must be positive")
    return TleFields(
        satnum=satnum1,
        classification=line1[7].strip() or "U",
        intl_designator=line1[9:17].strip(),
        epoch_year=year,
        epoch_day=day,
        epoch_jd_whole=jd_whole,
        epoch_jd_frac=jd_frac,
        ndot_rev_day2=ndot,
        nddot_rev_day3=nddot_m * 10.0**nddot_e,
        bstar=bstar_m * 10.0**bstar_e,
        element_number=element_number,
        inclination_deg=inclination,
        raan_deg=raan,
        eccentricity=eccentricity,
        argp_deg=argp,
        mean_anomaly_deg=mean_anomaly,
        mean_motion_rev_day=mean_motion,
        revolution_number=revolution,
        nddot_mantissa=nddot_m,
        nddot_exponent=nddot_e,
        bstar_mantissa=bstar_m,
        bstar_exponent=bstar_e,
    )


def _check_line(line: str, line_index: int, verify_checksum: bool) -> None:
    which = f"line {line_index + 1}"
    if not line.isascii():
        raise _FieldError(line_index, f"{which} contains non-ASCII characters")
    if len(line) != TLE_LINE_LENGTH:
        raise _FieldError(line_index, f"{which} has {len(line)} characters, expected {TLE_LINE_LENGTH}")
    if verify_checksum:
        written = line[68]
        if not written.isdigit():
            raise _FieldError(line_index, f"{which} checksum (column 69) is not a digit: {written!r}")
        computed = tle_checksum(line)
        if int(written) != computed:
            raise _FieldError(
                line_index,
                f"{which} checksum mismatch: column 69 says {written} but the line sums to {computed}",
            )


def _is_data_line(line: str, digit: str) -> bool:
    return line.startswith(digit + " ")


def parse_tle_text(
    text: str,
    source: str = "<string>",
    name_filter: str | None = None,
    skip_invalid: bool = False,
    verify_checksum: bool = True,
) -> TleParseResult:
    """Parse catalogue text into records (file order).

    name_filter is a case-insensitive fnmatch glob on the name ("STARLINK-*"); unnamed (2-line) sets
    are named by their catalogue number. Every set is validated whether or not the filter keeps it.
    Raises TleError on the first problem unless skip_invalid, in which case bad sets are reported in
    .skipped. verify_checksum=False only exists for test vectors whose checksums are known to be wrong.
    """
    lines = [raw.rstrip() for raw in text.splitlines()]
    pattern = name_filter.upper() if name_filter is not None else None
    records: list[TleRecord] = []
    skipped: list[TleIssue] = []

    def fail(line_number: int, reason: str) -> None:
        if not skip_invalid:
            raise TleError(source, line_number, reason)
        skipped.append(TleIssue(source, line_number, reason))

    def next_content(index: int) -> int:
        while index < len(lines) and not lines[index].strip():
            index += 1
        return index

    index = next_content(0)
    while index < len(lines):
        line = lines[index]
        name = None
        name_index = None
        if _is_data_line(line, "2"):
            fail(index + 1, "line 2 without a preceding line 1")
            index = next_content(index + 1)
            continue
        if not _is_data_line(line, "1"):
            name_index = index
            name = line[2:].strip() if line.startswith("0 ") else line.strip()
            index = next_content(index + 1)
            if index >= len(lines) or not _is_data_line(lines[index], "1"):
                fail(name_index + 1, f"name line {name!r} is not followed by a line 1")
                continue
        line1_index = index
        index = next_content(index + 1)
        if index >= len(lines) or not _is_data_line(lines[index], "2"):
            fail(line1_index + 1, "line 1 is not followed by a line 2")
            continue
        line2_index = index
        index = next_content(index + 1)
        line1, line2 = lines[line1_index], lines[line2_index]
        try:
            _check_line(line1, 0, verify_checksum)
            _check_line(line2, 1, verify_checksum)
            fields = decode_tle(line1, line2)
        except _FieldError as error:
            fail((line1_index, line2_index)[error.line_index] + 1, error.reason)
            continue
        if not name:
            name = str(fields.satnum)
        if pattern is not None and not fnmatch.fnmatchcase(name.upper(), pattern):
            continue
        records.append(TleRecord(name, line1, line2, line1_index + 1, source))
    return TleParseResult(records, skipped)


def load_tle_file(
    path, name_filter: str | None = None, skip_invalid: bool = False, verify_checksum: bool = True
) -> TleParseResult:
    """Read and parse a TLE file; errors name the file path and line."""
    file_path = Path(path)
    try:
        data = file_path.read_bytes()
    except OSError as error:
        raise TleError(str(file_path), 0, f"cannot read the file: {error.strerror or error}") from error
    # Undecodable bytes become U+FFFD so the line holding them fails its own check (and can be skipped).
    text = data.decode("utf-8", errors="replace")
    return parse_tle_text(text, str(file_path), name_filter, skip_invalid, verify_checksum)

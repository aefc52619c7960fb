"""TLE catalogue parsing: real snapshots, 2-/3-line layouts, and every kind of malformed input."""

from pathlib import Path

import numpy as np
import pytest
import sgp4
from support.shared_data import shared_data

from skyhaul.core.elements import ElementSet
from skyhaul.core.tle import TleError, load_tle_file, parse_tle_text, tle_checksum


def _vallado_pairs():
    """Valid (line1, line2) pairs from the sgp4 wheel's verification file (extra columns cut off)."""
    lines = (Path(sgp4.__file__).resolve().parent / "SGP4-VER.TLE").read_text().splitlines()
    pairs = []
    for i, line in enumerate(lines):
        if line.startswith("1 "):
            line1, line2 = line.rstrip(), lines[i + 1][:69]
            if tle_checksum(line1) == int(line1[68]) and tle_checksum(line2) == int(line2[68]):
                pairs.append((line1, line2))
    return pairs


PAIRS = _vallado_pairs()


def _three_line(pairs, prefix=""):
    return "".join(f"{prefix}SAT-{i:02d}\n{l1}\n{l2}\n" for i, (l1, l2) in enumerate(pairs))


def _with_checksum(line: str) -> str:
    return line[:68] + str(tle_checksum(line))


def test_checksum_matches_the_published_lines():
    assert len(PAIRS) >= 25
    for line1, line2 in PAIRS:
        assert tle_checksum(line1) == int(line1[68])
        assert tle_checksum(line2) == int(line2[68])


def test_two_and_three_line_layouts_give_the_same_elements():
    two = parse_tle_text("".join(f"{a}\n{b}\n" for a, b in PAIRS))
    three = parse_tle_text(_three_line(PAIRS))
    space_track = parse_tle_text(_three_line(PAIRS, prefix="0 "))
    assert len(two.records) == len(three.records) == len(space_track.records) == len(PAIRS)
    assert [r.name for r in three.records] == [r.name for r in space_track.records]
    assert three.records[3].name == "SAT-03"
    assert two.records[0].name == str(int(PAIRS[0][0][2:7]))  # unnamed sets are named by catalogue number
    a, b = ElementSet.from_tle(two.records), ElementSet.from_tle(three.records)
    np.testing.assert_array_equal(a.no_kozai_rad_min, b.no_kozai_rad_min)
    np.testing.assert_array_equal(a.epoch_jd_frac, b.epoch_jd_frac)


def test_line_numbers_crlf_and_blank_lines():
    text = "\r\n\r\n" + _three_line(PAIRS[:3]).replace("\n", "\r\n\r\n")
    result = parse_tle_text(text, "x.tle")
    assert [r.line_number for r in result.records] == [5, 11, 17]
    assert all(r.source == "x.tle" for r in result.records)
    assert result.records[1].line1 == PAIRS[1][0]  # no trailing CR kept


def test_name_filter_is_a_case_insensitive_glob():
    text = "".join(
        f"{name}\n{l1}\n{l2}\n"
        for name, (l1, l2) in zip(
            ["STARLINK-1", "starlink-2", "FALCON 9 DEB", "STARLINK-30"], PAIRS, strict=False
        )
    )
    names = [r.name for r in parse_tle_text(text, name_filter="STARLINK-*").records]
    assert names == ["STARLINK-1", "starlink-2", "STARLINK-30"]
    assert [r.name for r in parse_tle_text(text, name_filter="STARLINK-?").records] == [
        "STARLINK-1",
        "starlink-2",
    ]


def _broken(kind: str):
    """A 3-line catalogue of 5 sets where set 2 (lines 7-9) has one defect; returns (text, line, reason)."""
    pairs = [list(p) for p in PAIRS[:5]]
    line1, line2 = pairs[2]
    if kind == "checksum":
        digit = str((int(line1[68]) + 1) % 10)
        pairs[2][0] = line1[:68] + digit
        return pairs, 8, "checksum mismatch"
    if kind == "length":
        pairs[2][1] = line2[:60]
        return pairs, 9, "has 60 characters, expected 69"
    if kind == "number":
        pairs[2][1] = _with_checksum(line2[:8] + " 5x.1234" + line2[16:])
        return pairs, 9, "inclination (columns 9-16) is not a number: '5x.1234'"
    if kind == "range":
        pairs[2][1] = _with_checksum(line2[:8] + "181.0000" + line2[16:])
        return pairs, 9, "inclination 181 is outside [0, 180]"
    if kind == "satnum":
        other = "99999" if line2[2:7] != "99999" else "99998"
        pairs[2][1] = _with_checksum(line2[:2] + other + line2[7:])
        return pairs, 9, f"satellite number {int(other)} on line 2 differs from"
    if kind == "exponent":
        pairs[2][0] = _with_checksum(line1[:53] + " 2x098-4" + line1[61:])
        return pairs, 8, "BSTAR drag term (columns 54-61) is not in TLE exponent notation"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["checksum", "length", "number", "range", "satnum", "exponent"])
def test_each_defect_names_file_line_and_reason(tmp_path, kind):
    pairs, line, reason = _broken(kind)
    path = tmp_path / "broken.tle"
    path.write_text(_three_line(pairs))
    with pytest.raises(TleError) as caught:
        load_tle_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert reason in message
    assert caught.value.line_number == line and caught.value.source == str(path)
    # skip_invalid loads the rest and reports the one bad set.
    result = load_tle_file(path, skip_invalid=True)
    assert [r.name for r in result.records] == ["SAT-00", "SAT-01", "SAT-03", "SAT-04"]
    assert len(result.skipped) == 1 and result.skipped[0].line_number == line
    assert str(result.skipped[0]).startswith(f"{path}:{line}: ")


def test_structural_defects(tmp_path):
    l1, l2 = PAIRS[0]
    cases = {
        "orphan line 2": (f"{l2}\n{l1}\n{l2}\n", 1, "line 2 without a preceding line 1"),
        "missing line 2": (f"NAME\n{l1}\nNEXT\n{l1}\n{l2}\n", 2, "line 1 is not followed by a line 2"),
        "name without set": (f"NAME\nOTHER\n{l1}\n{l2}\n", 1, "name line 'NAME' is not followed by a line 1"),
        "truncated file": (f"NAME\n{l1}\n", 2, "line 1 is not followed by a line 2"),
    }
    for what, (text, line, reason) in cases.items():
        with pytest.raises(TleError) as caught:
            parse_tle_text(text, "cat.tle")
        assert str(caught.value) == f"cat.tle:{line}: {reason}", what
        result = parse_tle_text(text, "cat.tle", skip_invalid=True)
        assert [str(issue) for issue in result.skipped] == [f"cat.tle:{line}: {reason}"], what


def test_unreadable_file_and_non_ascii(tmp_path):
    with pytest.raises(TleError, match="cannot read the file"):
        load_tle_file(tmp_path / "missing.tle")
    l1, l2 = PAIRS[0]
    path = tmp_path / "odd.tle"
    path.write_bytes(f"SAT\n{l1}\n".encode() + "2 0000\u00e9".encode() + l2[7:].encode() + b"\n")
    with pytest.raises(TleError, match=r"odd.tle:3: line 2 contains non-ASCII characters"):
        load_tle_file(path)


def test_empty_text_gives_no_records():
    assert parse_tle_text("").records == [] and parse_tle_text("\n\n  \n").skipped == []


@pytest.mark.parametrize(
    ("file_name", "count", "starlink"),
    [
        ("starlink_2020-10-30.tle", 792, 779),
        ("starlink_2020-12-30.tle", 897, 892),
        ("kuiper_2026-08-22.tle", 391, 0),
        ("o3b_2026-08-22.tle", 30, 0),
    ],
)
def test_real_snapshots_load(file_name, count, starlink):
    path = shared_data(f"tle/{file_name}")
    result = load_tle_file(path)
    assert len(result.records) == count and result.skipped == []
    assert len(load_tle_file(path, name_filter="STARLINK-*").records) == starlink
    elements = ElementSet.from_tle(result.records)
    assert elements.size == count and len(set(elements.norad_id.tolist())) == count


def test_crlf_snapshot_and_one_bad_set_among_hundreds(tmp_path):
    source = shared_data("tle/starlink_2020-12-30.tle")
    data = source.read_bytes()
    assert b"\r\n" in data
    lines = data.decode().split("\r\n")
    lines[301] = (
        lines[301][:20] + ("0" if lines[301][20] != "0" else "1") + lines[301][21:]
    )  # breaks the checksum
    broken = tmp_path / "starlink.tle"
    broken.write_bytes("\r\n".join(lines).encode())
    with pytest.raises(TleError, match=r"starlink.tle:302: line \d checksum mismatch"):
        load_tle_file(broken)
    result = load_tle_file(broken, skip_invalid=True)
    assert len(result.records) == 896
    assert [issue.line_number for issue in result.skipped] == [302]

"""`skyhaul calibrate`: fits a trace, prints a snippet a scenario accepts, quantiles side by side."""

from __future__ import annotations

import json

import numpy as np
import yaml

from skyhaul.cli.main import main
from skyhaul.core.latency import STARLINK, terminal_samples
from skyhaul.runtime.scenario import DEFAULT_SCENARIO, parse_scenario


def write_trace(path, seed_terminal="synthetic"):
    # Five minutes of 20 Hz probes drawn from the Starlink model over a 12 ms floor.
    t = 1725991212.0 + 0.05 * np.arange(6000)
    model = terminal_samples(t, 12.0, STARLINK, seed=5, terminal_id=seed_terminal)
    rows = [
        f"{a:.3f}," if not np.isfinite(r) else f"{a:.3f},{r:.3f}"
        for a, r in zip(t, model.rtt_ms, strict=True)
    ]
    path.write_text("unix_time_s,rtt_ms\n" + "\n".join(rows) + "\n")
    return model


def test_calibrate_prints_a_snippet_the_scenario_accepts(tmp_path, capsys):
    trace = tmp_path / "trace.csv"
    model = write_trace(trace)
    assert main(["calibrate", str(trace), "--floor-ms", "12"]) == 0
    out = capsys.readouterr().out
    snippet = out[out.index("link_model:") : out.index("\nfigure")]
    section = yaml.safe_load(snippet)["link_model"]
    scenario = parse_scenario({**DEFAULT_SCENARIO, "link_model": section})
    fitted = scenario.link_model.params.bent_pipe
    assert (
        abs(
            fitted.access_ms
            + fitted.offset_mean_ms
            - (STARLINK.bent_pipe.access_ms + STARLINK.bent_pipe.offset_mean_ms)
        )
        < 4.0
    )
    median_row = next(line for line in out.splitlines() if line.startswith("RTT p50 ms"))
    trace_p50, fit_p50 = (float(v) for v in median_row.split()[-2:])
    assert trace_p50 == np.round(np.nanmedian(model.rtt_ms), 2)
    assert abs(fit_p50 / trace_p50 - 1) < 0.15


def test_calibrate_json_and_bad_input(tmp_path, capsys):
    trace = tmp_path / "trace.csv"
    write_trace(trace)
    assert main(["calibrate", str(trace), "--json", "--floor-ms", "12"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["profile"] == "bent_pipe" and report["parameters"]["access_ms"] >= 0
    assert {row["figure"] for row in report["figures"]} >= {"RTT p50 ms", "loss %"}
    assert main(["calibrate", str(trace), "--format", "dish"]) == 2
    assert "format dish was given" in capsys.readouterr().err
    assert main(["calibrate", str(trace), "--location", "91,0"]) == 2
    assert "is not a location" in capsys.readouterr().err

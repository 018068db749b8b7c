"""``python -m bench [--mppsolar-python PATH] [--quick] [--json FILE]``: run every figure, print a table, write JSON."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from bench import page, reaction, scenarios, service, throughput
from gateway.bench.poll_cycle import time_poll_cycle

REPO = Path(__file__).resolve().parents[1]


def _poll_cycle() -> dict[str, Any]:
    """One full poll of 16 JK-PB packs at 115200 baud through the simulator (issue target: within 2 s)."""
    timing = time_poll_cycle(packs=16, baudrate=115200)
    return {
        "packs": timing.packs,
        "baudrate": timing.baudrate,
        "cycle_s": timing.cycle_s,
        "per_pack_s": timing.per_pack_s,
        "wire_s": timing.wire_s,
        "wire_per_pack_s": timing.wire_s / timing.packs,
        "target_cycle_s": 2.0,
    }


def _ok(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def table(results: dict[str, Any]) -> list[str]:
    rows: list[tuple[str, str, str, str]] = []
    for r in results["reaction"]:
        rows.append(
            (
                f"reaction p50 / p99, poll {r['poll_interval_s']:g} s ({r['events']} events)",
                f"{r['p50_ms']:.0f} / {r['p99_ms']:.0f} ms"
                f" (wire {r['serial_wire_ms']:.1f} + {r['can_wire_ms']:.2f} ms)",
                f"p99 <= {r['target_p99_ms']:.0f} ms",
                _ok(r["p99_ms"] <= r["target_p99_ms"] and r["events"] >= 200 and r["failed_events"] == 0),
            )
        )
    a = results["reaction_adaptive"]
    rows.append(
        (
            f"reaction p50 / p99, default config (poll {a['poll_interval_s']:g} s,"
            f" fast {a['fast_poll_interval_s']:g} s), OVP from inside the knee ({a['events']} events)",
            f"{a['p50_ms']:.0f} / {a['p99_ms']:.0f} ms (knee to fast rate p99 {a['knee_to_fast_p99_ms']:.0f} ms)",
            f"p99 <= {a['target_p99_ms']:.0f} ms",
            _ok(a["p99_ms"] <= a["target_p99_ms"] and a["events"] >= 200 and a["failed_events"] == 0),
        )
    )
    s = results["steady_state"]
    mqtt = "MQTT on" if s["mqtt"] else "MQTT off: no mosquitto"
    rows.append(
        (
            f"CPU, bms-gateway run, pack away from every threshold ({s['duration_s']:.0f} s, {mqtt})",
            f"{s['cpu_pct']:.2f} % of one core ({s['polls_per_s']:.2f} polls/s)",
            "<= 1 %",
            _ok(s["cpu_pct"] <= 1.0),
        )
    )
    rows.append(
        (
            "RSS (max sampled / growth)",
            f"{s['rss_max_mb']:.1f} MB / {s['rss_growth_kb']} kB",
            "<= 60 MB",
            _ok(s["rss_max_mb"] <= 60.0),
        )
    )
    d = results["decode"]
    if "mppsolar_per_s" in d:
        rows.append(
            (
                "JK decode 16 cells (ours / mppsolar)",
                f"{d['ours_per_s']:,.0f} / {d['mppsolar_per_s']:,.0f} /s = {d['ratio']:.1f}x",
                ">= 10x",
                _ok(d["ratio"] >= 10),
            )
        )
        rows.append(
            (
                "  ... with model mapping (to_reading)",
                f"{d['ours_with_model_per_s']:,.0f} /s = {d['ratio_with_model']:.1f}x",
                "(info)",
                "-",
            )
        )
    else:
        rows.append(("JK decode 16 cells (ours)", f"{d['ours_per_s']:,.0f} /s; mppsolar missing", ">= 10x", "SKIP"))
    e = results["encode"]
    rows.append(
        (
            "CAN 0x351 encode (ours / cantools)",
            f"{e['ours_per_s']:,.0f} / {e['cantools_per_s']:,.0f} /s = {e['ratio']:.1f}x",
            ">= 1x",
            _ok(e["ratio"] >= 1),
        )
    )
    st = results["startup"]
    rows.append(
        (
            f"start-up to first frame (median / max of {st['runs']})",
            f"{st['median_s']:.2f} / {st['max_s']:.2f} s",
            "<= 1.5 s",
            _ok(st["max_s"] <= 1.5),
        )
    )
    pc = results["poll_cycle"]
    rows.append(
        (
            "JK-PB poll cycle, 16 packs at 115200 baud",
            f"{pc['cycle_s'] * 1000:.0f} ms"
            f" ({pc['per_pack_s'] * 1000:.1f} ms/pack, wire {pc['wire_per_pack_s'] * 1000:.1f} ms/pack)",
            "<= 2 s",
            _ok(pc["cycle_s"] <= pc["target_cycle_s"]),
        )
    )
    sc = results["scenarios"]
    rows.append(
        (
            f"worst BMS trip count over {sc['scenarios']} charge-cycle scenarios",
            "0 (every one)" if sc["worst_trip_count"] == 0 else f"{sc['worst_trip_count']} ({sc['worst_scenario']})",
            "0",
            _ok(sc["worst_trip_count"] == 0),
        )
    )
    floated = sc["baseline_float_s"]
    rows.append(
        (
            "obedient baseline scenario: time to float",
            "never" if floated is None else f"{floated / 60:.1f} min",
            f"<= {sc['audited_float_s'] / 60:.1f} min (audited engine)",
            _ok(floated is not None and floated <= sc["audited_float_s"]),
        )
    )
    ph = results["page_history"]
    rows.append(
        (
            f"RSS with 24 h of page history held ({ph['minutes']} minutes, {ph['raw_samples']} samples)",
            f"{ph['rss_mb']:.1f} MB (history arrays {ph['history_kb']:.0f} kB, /page.json {ph['page_json_kb']:.0f} kB)",
            f"<= {ph['target_rss_mb']:.0f} MB",
            _ok(ph["hwm_mb"] <= ph["target_rss_mb"]),
        )
    )
    pc_ = results["page_cpu"]
    rows.append(
        (
            f"CPU, bms-gateway run with one page on /events ({pc_['duration_s']:.0f} s, {pc_['updates']} updates)",
            f"{pc_['cpu_pct']:.2f} % of one core",
            f"<= {pc_['target_cpu_pct']:g} %",
            _ok(pc_["cpu_pct"] <= pc_["target_cpu_pct"]),
        )
    )
    header = ("figure", "measured", "target", "")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]

    def line(row: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in rows)]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--mppsolar-python", help="interpreter of the venv that has mppsolar (.venv-bench)")
    parser.add_argument("--quick", action="store_true", help="fewer events and a 10 s steady state: a smoke run")
    parser.add_argument("--json", default=str(REPO / "bench-results.json"), help="where to write the results")
    args = parser.parse_args()
    started = time.monotonic()
    scale = 0.1 if args.quick else 1.0
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    }

    def step(name: str) -> None:
        print(f"bench: {name} ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)

    step("throughput")
    results["decode"] = throughput.decode(args.mppsolar_python)
    results["encode"] = throughput.encode()
    step("start-up")
    results["startup"] = service.startup(runs=5)
    step("reaction at 0.2 s poll (8 chains in parallel)")
    results["reaction"] = [reaction.measure(0.2, chains=8, events_per_chain=max(2, round(30 * scale)))]
    step("reaction at 1 s poll (10 chains in parallel)")
    results["reaction"].append(reaction.measure(1.0, chains=10, events_per_chain=max(2, round(24 * scale))))
    step("reaction at the default config, adaptive polling (16 chains in parallel)")
    results["reaction_adaptive"] = reaction.measure_adaptive(chains=16, events_per_chain=max(2, round(13 * scale)))
    step("steady state of bms-gateway run")
    results["steady_state"] = service.steady_state(duration_s=60.0 * scale)
    step("local page: RSS with 24 h of history")
    results["page_history"] = page.history_rss()
    step("local page: CPU with one page connected")
    results["page_cpu"] = page.cpu_with_page(duration_s=60.0 * scale)
    step("poll cycle")
    results["poll_cycle"] = _poll_cycle()
    step("charge-cycle scenarios")
    results["scenarios"] = scenarios.measure(quick=args.quick)
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print("\n".join(table(results)))
    print(f"({results['elapsed_s']:.0f} s; JSON in {args.json})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How long one full poll of a JK-PB bus takes: ``python -m gateway.bench.poll_cycle [--packs 16]``.

The ``jk-modbus`` driver polls ``packs`` simulated JK-PBs (:mod:`gateway.sim.jk_modbus`) through a null-modem
paced at the wire rate of ``baudrate`` (8N1: 10 bits per byte), as one poll cycle of the gateway does. The
first poll also reads settings and device info; the timed poll is the steady one (live data of every pack).
The report gives the time per pack beside the **wire time**, the time the poll's bytes need on the wire at
that baud rate: the difference is turnaround (the simulator's and the driver's), which a real bus has too.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from gateway.bms.jk_modbus_driver import JkModbusDriver
from gateway.clock import SystemClock
from gateway.errors import GatewayError
from gateway.sim.jk_modbus import JkModbusSimulator, SimPack, pack_variant
from gateway.sim.nullmodem import A_TO_B, B_TO_A, BITS_PER_BYTE, NullModem
from gateway.sim.scenarios import SCENARIOS

CYCLE_BUDGET_S: Final = 2.0
"""One cycle of 16 packs at 115200 baud should fit in this, s (issue 7)."""


@dataclass(frozen=True, slots=True)
class PollCycleTiming:
    """One steady poll of every pack on the bus."""

    packs: int
    baudrate: int
    cycle_s: float
    """Wall time of the poll, s."""
    bytes_out: int
    """Request bytes the driver sent."""
    bytes_back: int
    """Reply bytes the packs sent."""

    @property
    def wire_s(self) -> float:
        """Time the poll's bytes need on the wire at :attr:`baudrate`, s."""
        return (self.bytes_out + self.bytes_back) * BITS_PER_BYTE / self.baudrate

    @property
    def per_pack_s(self) -> float:
        return self.cycle_s / self.packs

    @property
    def wire_per_pack_s(self) -> float:
        return self.wire_s / self.packs

    def report(self) -> str:
        verdict = "within" if self.cycle_s <= CYCLE_BUDGET_S else "OVER"
        return "\n".join(
            (
                f"one poll of {self.packs} JK-PB packs at {self.baudrate} baud (simulated bus, FC03 reads):",
                f"  cycle      {self.cycle_s * 1000:8.1f} ms   ({verdict} the {CYCLE_BUDGET_S:g} s budget)",
                f"  per pack   {self.per_pack_s * 1000:8.1f} ms   wire time {self.wire_per_pack_s * 1000:.1f} ms "
                f"({(self.bytes_out + self.bytes_back) / self.packs:.0f} bytes: "
                f"{self.bytes_out / self.packs:.0f} out, {self.bytes_back / self.packs:.0f} back)",
                f"  turnaround {(self.per_pack_s - self.wire_per_pack_s) * 1000:8.1f} ms per pack above the wire time",
            )
        )


def time_poll_cycle(packs: int = 16, baudrate: int = 115200, *, timeout_s: float = 0.5) -> PollCycleTiming:
    """Time one steady poll of ``packs`` simulated JK-PBs (units 1..packs) at ``baudrate``.

    :raises GatewayError: a pack did not answer (the bench measures a healthy bus only).
    """
    if not 1 <= packs <= 247:
        raise ValueError(f"packs must be 1 to 247, got {packs}")
    scenario = SCENARIOS["normal-charge"]
    clock = SystemClock()
    with tempfile.TemporaryDirectory(prefix="bms-gateway-bench-") as tmp:
        modem = NullModem(Path(tmp), names=("bms", "gateway"), baudrate=baudrate)
        modem.start()
        simulator = JkModbusSimulator(
            {unit: SimPack(pack_variant(scenario, unit - 1)) for unit in range(1, packs + 1)},
            clock,
            port=str(modem.a_path),
            baudrate=baudrate,
        )
        simulator.start()
        driver = JkModbusDriver(
            port=str(modem.b_path),
            baudrate=baudrate,
            timeout_s=timeout_s,
            retries=0,
            clock=clock,
            addresses=range(1, packs + 1),
        )
        try:
            if not simulator.wait_serving(10):
                raise GatewayError("bench: the simulator never opened its port")
            driver.read()  # the first poll also reads settings and device info
            before = modem.bytes_relayed
            started = time.perf_counter()
            readings = driver.read()
            cycle_s = time.perf_counter() - started
            after = modem.bytes_relayed
        finally:
            driver.close()
            simulator.stop()
            modem.stop()
    if len(readings) != packs:
        missing = ", ".join(f"{pack_id}: {error}" for pack_id, error in driver.pack_errors.items())
        raise GatewayError(f"bench: only {len(readings)} of {packs} packs answered ({missing})")
    return PollCycleTiming(
        packs=packs,
        baudrate=baudrate,
        cycle_s=cycle_s,
        bytes_out=after[B_TO_A] - before[B_TO_A],
        bytes_back=after[A_TO_B] - before[A_TO_B],
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.bench.poll_cycle", description=__doc__.splitlines()[0])
    parser.add_argument("--packs", type=int, default=16, help="packs on the bus (default 16)")
    parser.add_argument("--baudrate", type=int, default=115200, help="bits per second (default 115200)")
    args = parser.parse_args(argv)
    try:
        timing = time_poll_cycle(args.packs, args.baudrate)
    except (GatewayError, ValueError) as exc:
        print(f"bms-gateway bench: error: {exc}", file=sys.stderr)
        return 1
    print(timing.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""When the fail-safe steps in, and what it does then: the timeline ``check`` prints, as the control loop runs it.

The control loop (:meth:`gateway.runtime.ControlLoop._decide`, and the RS485 outputs alike) counts from the newest
good BMS reading: older than ``failsafe.bms_timeout_s`` is *stale*, and then the profile's ``failsafe.stale``
decides. ``zeros``: the zero-current set (both limits 0 A, enables cleared, communication alarm) until the reading
is older than ``failsafe.silence_after_s``, then *silent*. ``silence``: silent at once, at ``bms_timeout_s``;
``silence_after_s`` then plays no part, whoever set it. This module states that, with where each number comes
from, so that ``check`` never shows a silence time the gateway does not use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gateway.effective import Effective, Sourced
from gateway.profiles import Profile, StaleAction

ZEROS_ACTION: Final = "charge and discharge limits 0 A, enables cleared, communication alarm"
SILENT_ACTION: Final = "nothing sent until fresh BMS data returns"
TIMEOUT_KEY: Final = "failsafe.bms_timeout_s"
SILENCE_KEY: Final = "failsafe.silence_after_s"


@dataclass(frozen=True, slots=True)
class FailsafeStep:
    """One step of the fail-safe: from this age of the newest good reading on, the gateway does ``action``."""

    state: str
    """``stale`` or ``silent`` (the :class:`~gateway.runtime.FailsafeState` it enters)."""
    after_s: float
    """Age of the newest good BMS reading at which it begins, s."""
    setting: str
    """The config key whose value ``after_s`` is."""
    origin: str
    """Where that value came from: ``config``, ``default`` or ``profile <name>``."""
    action: str


@dataclass(frozen=True, slots=True)
class FailsafeTiming:
    """The fail-safe steps in force for one config and profile, in order, and what does not apply."""

    profile: str
    stale: StaleAction
    steps: tuple[FailsafeStep, ...]
    unused: Sourced[float] | None = None
    """``failsafe.silence_after_s`` when the profile's ``stale: silence`` makes it irrelevant."""

    def step(self, state: str) -> FailsafeStep:
        """The step that enters ``state``. :raises KeyError: no step does."""
        for step in self.steps:
            if step.state == state:
                return step
        raise KeyError(state)

    def row_note(self, key: str) -> str:
        """What to add after ``key``'s line among the effective settings (empty unless it does not apply)."""
        if key == SILENCE_KEY and self.unused is not None:
            return f" (not used: profile {self.profile} goes silent at {TIMEOUT_KEY})"
        return ""

    def lines(self) -> list[str]:
        """``check``'s lines: a heading, then one line per step, then what does not apply."""
        out = ["fail-safe, counted from the newest good BMS reading:"]
        width = max(len(step.state) for step in self.steps)
        for step in self.steps:
            out.append(
                f"  {step.state:<{width}}  after {step.after_s:g} s ({step.setting}, from {step.origin}): {step.action}"
            )
        if self.unused is not None:
            out.append(
                f"  {SILENCE_KEY} {self.unused.value:g} (from {self.unused.origin}) does not apply: profile"
                f" {self.profile} has failsafe.stale: silence (no zero-current set first)"
            )
        return out

    def to_json(self) -> dict[str, object]:
        return {
            "stale_action": self.stale.value,
            "steps": [
                {"state": s.state, "after_s": s.after_s, "setting": s.setting, "origin": s.origin, "action": s.action}
                for s in self.steps
            ],
            "not_applied": None
            if self.unused is None
            else {"key": SILENCE_KEY, "value": self.unused.value, "origin": self.unused.origin},
        }


def failsafe_timing(
    profile: str,
    stale: StaleAction,
    bms_timeout_s: Sourced[float],
    silence_after_s: Sourced[float],
    *,
    silent_action: str = SILENT_ACTION,
) -> FailsafeTiming:
    """The timeline for a profile named ``profile`` with ``stale`` and the two settings in force (with origins)."""
    if stale is StaleAction.SILENCE:
        silent = FailsafeStep("silent", bms_timeout_s.value, TIMEOUT_KEY, bms_timeout_s.origin, silent_action)
        return FailsafeTiming(profile, stale, (silent,), unused=silence_after_s)
    return FailsafeTiming(
        profile,
        stale,
        (
            FailsafeStep("stale", bms_timeout_s.value, TIMEOUT_KEY, bms_timeout_s.origin, ZEROS_ACTION),
            FailsafeStep("silent", silence_after_s.value, SILENCE_KEY, silence_after_s.origin, silent_action),
        ),
    )


def can_failsafe_timing(effective: Effective, profile: Profile) -> FailsafeTiming:
    """The timeline of a CAN profile with the settings :func:`gateway.effective.resolve` put in force."""
    return failsafe_timing(profile.name, profile.stale, effective.bms_timeout_s, effective.silence_after_s)


def describe_stale_action(stale: StaleAction, silence_after_s: float, *, answer_when_silent: bool = False) -> str:
    """A profile's own fail-safe in a few words, for ``bms-gateway profiles`` (its defaults; a config may change
    the times)."""
    if stale is StaleAction.SILENCE:
        return "stale BMS data: silent at once (failsafe.bms_timeout_s)"
    after = "keeps answering with 0 A" if answer_when_silent else "silent"
    return f"stale BMS data: 0 A and enables cleared, {after} after {silence_after_s:g} s"

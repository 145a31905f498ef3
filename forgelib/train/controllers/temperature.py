"""Temperature curriculum for self-generated (dream) samples: from narrow to wide.

``T(step) = start + (end - start) * min(step / ramp_steps, 1)``, a linear ramp. Early on the
model is weak and a low temperature keeps its samples close to its best guess, so verified
self-samples are mostly the examples it already half-knows (narrow). Later, higher temperature
explores more of its own distribution, so correct samples also come from answers it ranks below
its greedy choice (wide). With ``start = end`` the schedule is a constant.
"""

from __future__ import annotations

from forgelib.train.controllers.base import BatchPlan, Controller, LoopContext


def temperature_at(step: int, *, start: float, end: float, ramp_steps: int) -> float:
    return start + (end - start) * min(step / ramp_steps, 1.0)


class TemperatureCurriculum(Controller):
    name = "temperature"

    def __init__(self, *, start: float, end: float, ramp_steps: int):
        self.start, self.end, self.ramp_steps = start, end, ramp_steps
        self.temperature = start

    def on_batch(self, ctx: LoopContext, step: int, plan: BatchPlan) -> None:
        self.temperature = temperature_at(step, start=self.start, end=self.end, ramp_steps=self.ramp_steps)

    def metrics(self) -> dict[str, float]:
        return {"temperature": self.temperature}

    def state_dict(self) -> dict:
        return {"temperature": self.temperature}

    def load_state_dict(self, state: dict) -> None:
        self.temperature = float(state["temperature"])

"""The scenario library's runs, made once per session and shared by every test that reads them."""

from __future__ import annotations

from testbed.core.load import load_both
from testbed.live import runner
from tests.support.commands import SCENARIOS


class LibraryRuns:
    """Each library scenario built, probed and judged at most once per proxy mode."""

    def __init__(self) -> None:
        self._done: dict[tuple[str, str, str], tuple] = {}

    def __call__(self, name: str, mode: str, kube_proxy: str = "builtin"):
        """(ScenarioResult, observations) of scenarios/NAME.yaml in `mode`, with our
        renderer (builtin) or the real kube-proxy (upstream)."""
        key = (name, mode, kube_proxy)
        if key not in self._done:
            path = str(SCENARIOS / f"{name}.yaml")
            scenario, plan = load_both(path, mode, kube_proxy)
            self._done[key] = runner.run_plan(plan, scenario=scenario)
        return self._done[key]

    def verdict(self, name: str, mode: str, probe: str):
        result, _ = self(name, mode)
        return next(v for v in result.verdicts if v.name == probe)

    def observation(self, name: str, mode: str, probe: str):
        """(Verdict, Observation) of one probe."""
        result, observations = self(name, mode)
        verdict = next(v for v in result.verdicts if v.name == probe)
        return verdict, next(o for o in observations if o.probe == probe)

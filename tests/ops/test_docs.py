from __future__ import annotations

import re

from server.metrics import Metrics
from server.settings import Settings
from tests.ops.procs import ROOT

DOC = (ROOT / "docs" / "operations.md").read_text()


def test_every_setting_is_documented() -> None:
    documented = set(re.findall(r"`SWITCHBOARD_([A-Z0-9_]+)`", DOC))
    missing = {n for n in Settings.model_fields if n.upper() not in documented}
    assert not missing, f"add these to docs/operations.md: {sorted(missing)}"


def test_every_metric_is_documented() -> None:
    from server.metrics import ComponentCollector

    names = {m.name for m in Metrics().registry.collect()}
    names |= {
        "switchboard_dispatcher_outcomes",
        "switchboard_dispatcher_in_flight",
        "switchboard_endpoint_deliveries",
    }
    assert ComponentCollector  # the names above are the ones it yields (see test_metrics)
    missing = {n for n in names if n not in DOC}
    assert not missing, f"add these to docs/operations.md: {sorted(missing)}"

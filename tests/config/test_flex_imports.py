"""With flex off the daemon loads flex's config and its event book (the page's list), not the
service with its reports and meter data; the package's names still load on first use."""

from __future__ import annotations

from tests.config.test_config_imports import modules_after
from tests.conftest import REPO

SERVICE_SIDE = {"hems.flex.service", "hems.flex.report", "hems.flex.meterdata"}


def test_the_demo_config_and_the_daemon_load_no_flex_service() -> None:
    loaded = modules_after(
        f"""
        from hems.config import load_config
        load_config({str(REPO / "config" / "demo.yaml")!r})
        import hems.app.daemon
        """
    )
    assert "hems.flex.config" in loaded and "hems.flex.views" in loaded
    assert SERVICE_SIDE & loaded == set()


def test_the_flex_package_still_exports_its_names() -> None:
    loaded = modules_after(
        """
        import hems.flex
        assert "hems.flex.service" not in __import__("sys").modules
        from hems.flex import PRESETS, FlexService, MeterData, presets, report_for_event
        assert PRESETS is presets.PRESETS and FlexService.__name__ == "FlexService"
        assert hems.flex.WorkingDayCalendar.__module__ == "hems.flex.calendar"
        """
    )
    assert SERVICE_SIDE <= loaded

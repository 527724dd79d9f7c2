"""docs/settings.md names every environment variable the configuration reads."""

import re

from tests.support.paths import ROOT

READS = re.compile(r"""(?:env_\w+\(\s*|os\.environ\.get\(\s*)["']([A-Z][A-Z0-9_]+)["']""")


def test_every_setting_read_by_the_configuration_is_on_the_settings_page():
    names = {
        name
        for source in (ROOT / "classifier_site").glob("*.py")
        for name in READS.findall(source.read_text())
    }
    page = (ROOT / "docs" / "settings.md").read_text()
    assert len(names) > 50
    assert sorted(name for name in names if f"`{name}`" not in page) == []

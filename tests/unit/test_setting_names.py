"""The `--settings` allow-list names every setting the app reads, and nothing the devstack writes is
refused: a name added to `Settings.from_env` without the list would make `--settings` drop it."""

from __future__ import annotations

import inspect
import re

from rotation import settings
from rotation.setting_names import APP_SETTINGS, LOCAL_STACK_SETTINGS, settings_to_load

_READS = re.compile(r"""\b(?:text|number|https_url|vault|service_url|env\.get)\(\s*"([A-Z][A-Z0-9_]+)\"""")


def test_every_name_settings_reads_is_allowed() -> None:
    """The app's settings (`Settings.from_env`); the operator's own environment (KUBECONFIG, the Azure
    host's variables) is not something a settings file may set."""
    read = set(_READS.findall(inspect.getsource(settings.Settings.from_env)))
    assert len(read) >= 10 and read <= APP_SETTINGS, sorted(read - APP_SETTINGS)


def test_a_devstack_settings_file_loads_whole() -> None:
    values = dict.fromkeys(APP_SETTINGS | LOCAL_STACK_SETTINGS, "x") | {"ROTATION_LOCAL_EMULATORS": "true"}
    assert settings_to_load(dict(values)) == values

"""The names of the rotator's own app settings: what `--settings FILE` may put in the environment.

A settings file is data an operator was handed (a colleague's `local.settings.json`, a devstack's
`settings.json`). Copied whole into the process environment it would choose the `az` the operator's
login runs (PATH), a library loaded into the process (LD_PRELOAD), a proxy or CA for every HTTPS call
(HTTPS_PROXY, REQUESTS_CA_BUNDLE). So only these names are taken; the Functions host's own settings a
`local.settings.json` carries are skipped; anything else is an error naming it.

`APP_SETTINGS` lists every name `rotation.settings.Settings.from_env` reads (a test keeps the two in
step) plus AZURE_CLIENT_ID, the user-assigned identity's client id.
"""

from __future__ import annotations

from collections.abc import Mapping

APP_SETTINGS = frozenset({
    "ROTATION_REGISTRY", "KEY_VAULT_URL", "CONFIG_KEY_VAULT_URL", "ARM_ENDPOINT", "AZURE_CLOUD",
    "TOKEN_LIFETIME_DAYS", "RENEW_BEFORE_DAYS", "ROTATION_DEADLINE_SECONDS", "SWEEP_SCHEDULE",
    "SWEEP_CONCURRENCY", "OUTCOME_TOPIC_ENDPOINT", "DEADLETTER_BLOB_URL", "LEASE_CONTAINER_URL",
    "ROTATION_LOCAL_EMULATORS", "AZURE_CLIENT_ID",
})
# The devstack's managed-identity endpoint and CA (devstack/fakes.py): taken only from a file that
# also sets ROTATION_LOCAL_EMULATORS=true, i.e. is for the local stack.
LOCAL_STACK_SETTINGS = frozenset({"IDENTITY_ENDPOINT", "IDENTITY_HEADER", "REQUESTS_CA_BUNDLE"})
# The Functions host's settings in a local.settings.json (Azure Functions Core Tools docs,
# "local.settings.json file"; "App settings reference for Azure Functions"): not the CLI's business.
HOST_SETTINGS = frozenset({
    "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "AzureWebJobsStorage", "AzureWebJobsFeatureFlags",
    "AzureWebJobsSecretStorageType", "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY", "PYTHON_ENABLE_WORKER_EXTENSIONS",
})
_TRUE = {"1", "true", "yes", "on"}


def settings_to_load(values: Mapping[str, object]) -> dict[str, str]:
    """The environment entries a settings file contributes; ValueError names the first name refused."""
    unknown = sorted(str(k) for k in values if k not in APP_SETTINGS | LOCAL_STACK_SETTINGS | HOST_SETTINGS)
    if unknown:
        shown = unknown[0].encode("unicode_escape").decode()[:80]
        raise ValueError(f"{shown!r} is not a setting of the rotator; nothing was loaded (allowed: "
                         f"{', '.join(sorted(APP_SETTINGS))}; the devstack's {', '.join(sorted(LOCAL_STACK_SETTINGS))} "
                         "with ROTATION_LOCAL_EMULATORS=true)")
    local = str(values.get("ROTATION_LOCAL_EMULATORS") or "").strip().lower() in _TRUE
    stack = sorted(str(k) for k in values if k in LOCAL_STACK_SETTINGS)
    if stack and not local:
        raise ValueError(f"{stack[0]!r} is taken only from the devstack's settings (ROTATION_LOCAL_EMULATORS=true); "
                         "nothing was loaded")
    return {str(k): str(v) for k, v in values.items()
            if k not in HOST_SETTINGS and v is not None and v != ""}

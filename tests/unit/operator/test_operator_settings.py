"""settings.from_env: defaults, parsing and errors that name the variable."""

from __future__ import annotations

import pytest

from ftjob_operator.settings import DEFAULT_TRAINER_IMAGE, Settings, SettingsError, from_env


def test_defaults():
    assert from_env({}) == Settings()
    assert from_env({}).trainer_image == DEFAULT_TRAINER_IMAGE


def test_all_variables():
    s = from_env({
        "FTJOB_TRAINER_IMAGE": "r/t:1", "FTJOB_TRAINER_IMAGE_PULL_POLICY": "Always",
        "FTJOB_STORAGE_CLASS": "fast", "FTJOB_STORAGE_SIZE": "50Gi",
        "FTJOB_NAMESPACES": "team-a, team-b,", "FTJOB_LOG_LEVEL": "debug",
        "FTJOB_LOG_FORMAT": "json", "FTJOB_PEERING": "ftjob",
        "FTJOB_LEASE_NAMESPACE": "ftjob-system", "FTJOB_LIVENESS_PORT": "9000",
        "FTJOB_METRICS_PORT": "9090", "FTJOB_RESYNC_SECONDS": "5",
        "FTJOB_TRAINER_IMAGE_PULL_SECRETS": "regcred, mirror",
        "FTJOB_TRAINER_METRICS_PORT": "9400", "FTJOB_TRAINER_PROGRESS_INTERVAL": "20",
    })
    assert s == Settings(trainer_image="r/t:1", trainer_image_pull_policy="Always",
                         storage_class="fast", storage_size="50Gi",
                         namespaces=("team-a", "team-b"), log_level="DEBUG", log_format="json",
                         peering="ftjob", lease_namespace="ftjob-system", liveness_port=9000, metrics_port=9090,
                         resync_seconds=5.0, trainer_image_pull_secrets=("regcred", "mirror"),
                         trainer_metrics_port=9400, trainer_progress_interval=20)
    assert from_env({"FTJOB_TRAINER_METRICS_PORT": "0"}).trainer_metrics_port is None


@pytest.mark.parametrize("env,needle", [
    ({"FTJOB_TRAINER_IMAGE_PULL_POLICY": "Sometimes"}, "FTJOB_TRAINER_IMAGE_PULL_POLICY"),
    ({"FTJOB_LOG_FORMAT": "xml"}, "FTJOB_LOG_FORMAT"),
    ({"FTJOB_LOG_LEVEL": "LOUD"}, "FTJOB_LOG_LEVEL"),
    ({"FTJOB_METRICS_PORT": "http"}, "FTJOB_METRICS_PORT"),
    ({"FTJOB_LIVENESS_PORT": "70000"}, "FTJOB_LIVENESS_PORT"),
    ({"FTJOB_RESYNC_SECONDS": "-1"}, "FTJOB_RESYNC_SECONDS"),
    ({"FTJOB_TRAINER_METRICS_PORT": "80"}, "FTJOB_TRAINER_METRICS_PORT: 80 is not a port"),
    ({"FTJOB_TRAINER_METRICS_PORT": "29500"}, "FTJOB_TRAINER_METRICS_PORT: 29500 is torchrun"),
    ({"FTJOB_TRAINER_PROGRESS_INTERVAL": "0"}, "FTJOB_TRAINER_PROGRESS_INTERVAL: expected 1-60"),
    ({"FTJOB_TRAINER_PROGRESS_INTERVAL": "5s"}, "FTJOB_TRAINER_PROGRESS_INTERVAL: expected an"),
])
def test_errors_name_the_variable(env, needle):
    with pytest.raises(SettingsError, match=needle):
        from_env(env)


def test_peering_needs_the_namespace_of_the_lease():
    with pytest.raises(SettingsError, match="FTJOB_LEASE_NAMESPACE: required with FTJOB_PEERING"):
        from_env({"FTJOB_PEERING": "ftjob"})
    assert from_env({}).lease_namespace is None


def test_peering_lifetime_is_bounded():
    assert from_env({"FTJOB_PEERING_LIFETIME": "20"}).peering_lifetime == 20
    assert from_env({}).peering_lifetime == 30
    for bad in ("5", "900"):
        with pytest.raises(SettingsError, match="FTJOB_PEERING_LIFETIME: expected 15-300"):
            from_env({"FTJOB_PEERING_LIFETIME": bad})


def test_watch_seconds_are_bounded():
    assert from_env({"FTJOB_WATCH_SECONDS": "2"}).watch_seconds == 2
    with pytest.raises(SettingsError, match="FTJOB_WATCH_SECONDS: expected 1-3600"):
        from_env({"FTJOB_WATCH_SECONDS": "0"})


def test_fault_points_split_on_semicolons_since_case_names_hold_commas():
    armed = from_env({"FTJOB_FAULT_POINTS": "rank failed, gang restart:after-status; start:"
                                            "after-CreatePods"}).fault_points
    assert armed == {"rank failed, gang restart:after-status", "start:after-CreatePods"}


def test_an_older_replica_outranks_a_newer_one():
    from ftjob_operator.__main__ import replica_priority

    first, later = replica_priority(now=1_800_000_000.0), replica_priority(now=1_800_000_000.5)
    assert first > later > 0

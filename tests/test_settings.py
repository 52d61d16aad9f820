import pytest

from shared.settings import SettingsError, load_settings

BASE = {"SINK": "file", "SINK_PATH": "/tmp/x", "ALICOM_UID": "1234567890"}


def test_minimal_settings_derive_queue_names():
    s = load_settings(dict(BASE, ALICOM_MESSAGE_TYPES="SmsReport, SmsUp"))
    assert s.queue_names == {"SmsReport": "Alicom-Queue-1234567890-SmsReport", "SmsUp": "Alicom-Queue-1234567890-SmsUp"}
    assert s.mns_endpoint.startswith("https://1943695596114318.mns.cn-hangzhou")


def test_explicit_queue_names_win():
    s = load_settings({"SINK": "sqlite", "SINK_PATH": "/tmp/x.db", "ALICOM_QUEUE_NAMES": "SmsReport=MyQueue-SmsReport"})
    assert s.queue_names == {"SmsReport": "MyQueue-SmsReport"}


@pytest.mark.parametrize("env,variable,form", [
    ({}, "SINK", "one of file"),
    ({"SINK": "ftp"}, "SINK", "one of file"),
    ({"SINK_PATH": ""}, "SINK_PATH", "directory"),
    ({"ALICOM_UID": ""}, "ALICOM_UID", "account id"),
    ({"ALICOM_UID": "12ab"}, "ALICOM_UID", "digits"),
    ({"DRAIN_WAIT_SECONDS": "31"}, "DRAIN_WAIT_SECONDS", "0 to 30"),
    ({"DRAIN_MAX_MESSAGES": "many"}, "DRAIN_MAX_MESSAGES", "whole number"),
    ({"ALICOM_MESSAGE_TYPES": "SmsReport,SMSUP"}, "ALICOM_MESSAGE_TYPES", "SmsReport, SmsUp"),
    ({"ALICOM_MNS_ENDPOINT": "http://mns.example.com"}, "ALICOM_MNS_ENDPOINT", "https"),
    ({"ALICOM_TOKEN_ENDPOINT": "not a url"}, "ALICOM_TOKEN_ENDPOINT", "https"),
    ({"ALICOM_QUEUE_NAMES": "SmsReport"}, "ALICOM_QUEUE_NAMES", "Type=QueueName"),
    ({"SINK": "s3"}, "SINK_BUCKET", "bucket"),
    ({"SINK": "dynamodb"}, "SINK_TABLE", "table"),
])
def test_bad_settings_name_the_variable_and_the_form(env, variable, form):
    merged = dict(BASE)
    merged.update(env)
    if "SINK" not in merged or env == {}:
        merged.pop("SINK", None)
    with pytest.raises(SettingsError) as err:
        load_settings(merged)
    assert variable in str(err.value)
    assert form in str(err.value)


def test_loopback_http_allowed_and_secret_never_echoed():
    s = load_settings(dict(BASE, ALICOM_MNS_ENDPOINT="http://127.0.0.1:9999/"))
    assert s.mns_endpoint == "http://127.0.0.1:9999"
    with pytest.raises(SettingsError) as err:
        load_settings(dict(BASE, ALIBABA_CLOUD_ACCESS_KEY_SECRET="s3cr3t-value", DRAIN_CONCURRENCY="0"))
    assert "s3cr3t-value" not in str(err.value) and "DRAIN_CONCURRENCY" in str(err.value)
    with pytest.raises(SettingsError) as err:
        load_settings(dict(BASE, ALIBABA_CLOUD_ACCESS_KEY_SECRET="s3cr3t-value"))
    assert "s3cr3t-value" not in str(err.value)
    assert "ALIBABA_CLOUD_ACCESS_KEY_SECRET" in str(err.value)  # a secret without its id is an error too


def test_every_bad_variable_is_named_in_one_error():
    with pytest.raises(SettingsError) as err:
        load_settings(dict(BASE, DRAIN_CONCURRENCY="0", DRAIN_WAIT_SECONDS="soon", SINK_PREFIX="a b"))
    text = str(err.value)
    for variable in ("DRAIN_CONCURRENCY", "DRAIN_WAIT_SECONDS", "SINK_PREFIX"):
        assert f"{variable}:" in text, text


def test_non_finite_numbers_are_refused():
    with pytest.raises(SettingsError) as err:
        load_settings(dict(BASE, DRAIN_COALESCE_SECONDS="nan"))
    assert "DRAIN_COALESCE_SECONDS" in str(err.value)


def test_settings_repr_and_safe_view_hold_no_credentials():
    s = load_settings(dict(BASE, ALIBABA_CLOUD_ACCESS_KEY_ID="LTAI-id-value", ALIBABA_CLOUD_ACCESS_KEY_SECRET="s3cr3t-value",
                           ALIBABA_CLOUD_SECURITY_TOKEN="sts-token-value"))
    assert s.access_key_secret == "s3cr3t-value"
    for shown in (repr(s), str(s), str(s.safe_view())):
        for secret in ("LTAI-id-value", "s3cr3t-value", "sts-token-value"):
            assert secret not in shown
    assert s.safe_view()["sink_path"] == "/tmp/x"

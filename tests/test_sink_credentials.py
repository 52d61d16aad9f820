"""One credentials path: the OSS and Tablestore sinks sign with the credentials `load_credentials`
finds (the function role's STS key on FC, a Secrets Manager secret, an SSM SecureString),
checked by stand-ins that verify signatures and the STS token. Secrets Manager and SSM are
served by moto over a real socket."""
from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest

from shared.settings import load_settings
from shared.sinks import make_sink
from shared.sinks.base import SinkError
from tests.fakes.moto_server import FaultProxy
from tests.fakes.oss_gateway import OssGateway
from tests.fakes.tablestore import TablestoreServer
from tests.test_sinks_cloud import BUCKET, TABLE, by_key, records

AK, SECRET, TOKEN = "LTAI5tSinkRoleKey", "sinkRoleSecret-NeverPrintMe", "sts-token-for-the-sink"
INSTANCE = "cred-ots"


@pytest.fixture
def aws(moto, monkeypatch):
    """boto3 (and so Powertools Parameters) pointed at moto through a fault proxy; nothing cached."""
    from shared.credentials import forget_cached

    proxy = FaultProxy(moto.endpoint).start()
    for name, value in {"AWS_ENDPOINT_URL": proxy.endpoint, "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    forget_cached()  # store clients made for another endpoint, values read in another test
    yield SimpleNamespace(client=moto.client, proxy=proxy)
    forget_cached()
    proxy.stop()


@pytest.fixture(params=["oss", "tablestore"])
def store(request, moto):
    """Sink settings for a stand-in that accepts only AK/SECRET with the STS token TOKEN."""
    if request.param == "oss":
        moto.client("s3").create_bucket(Bucket=BUCKET)
        server = OssGateway(moto.endpoint, AK, SECRET, security_token=TOKEN).start()
        request.addfinalizer(server.stop)
        return {"SINK": "oss", "SINK_BUCKET": BUCKET, "SINK_ENDPOINT": server.endpoint}, server
    server = TablestoreServer(INSTANCE, AK, SECRET, sts_token=TOKEN).start()
    request.addfinalizer(server.stop)
    from scripts.create_tables import create_tablestore_table
    from tablestore import OTSClient

    create_tablestore_table(OTSClient(server.endpoint, AK, SECRET, INSTANCE, sts_token=TOKEN), TABLE)
    return {"SINK": "tablestore", "SINK_TABLE": TABLE, "SINK_ENDPOINT": server.endpoint,
            "TABLESTORE_INSTANCE": INSTANCE}, server


def tokens_sent(server) -> set:
    header = "x-oss-security-token" if isinstance(server, OssGateway) else "x-ots-ststoken"
    return {entry[-1].get(header) for entry in server.requests}


def write_and_read(env: dict) -> None:
    sink = make_sink(load_settings(env))  # no credentials given: the sink loads them itself
    recs = records(4)
    sink.write(recs, [])
    assert by_key(sink.iter_records()) == by_key(recs)


@pytest.mark.parametrize("source", ["secrets-manager", "ssm", "function-role"])
def test_the_sink_signs_with_the_credentials_from_each_source(aws, store, source):
    env, server = store
    env = dict(env, ALICOM_UID="1234567890")
    value = json.dumps({"access_key_id": AK, "access_key_secret": SECRET, "security_token": TOKEN})
    if source == "secrets-manager":
        aws.client("secretsmanager").create_secret(Name="alicom/credentials", SecretString=value)
        env["ALICOM_CREDENTIALS_SECRET"] = "alicom/credentials"
    elif source == "ssm":
        aws.client("ssm").put_parameter(Name="/alicom/credentials", Value=value, Type="SecureString")
        env["ALICOM_CREDENTIALS_PARAMETER"] = "/alicom/credentials"
    else:  # Function Compute puts the role's STS credentials in these variables
        env.update(ALIBABA_CLOUD_ACCESS_KEY_ID=AK, ALIBABA_CLOUD_ACCESS_KEY_SECRET=SECRET,
                   ALIBABA_CLOUD_SECURITY_TOKEN=TOKEN)
    write_and_read(env)
    assert server.requests and tokens_sent(server) == {TOKEN}


@pytest.mark.parametrize("source", ["secrets-manager", "ssm"])
def test_a_wrong_secret_in_the_store_is_refused_by_the_service(aws, store, source):
    # The credentials really come from the store: a wrong secret there fails the signature check.
    env, server = store
    env = dict(env, ALICOM_UID="1234567890")
    value = json.dumps({"access_key_id": AK, "access_key_secret": "not-the-secret", "security_token": TOKEN})
    if source == "secrets-manager":
        aws.client("secretsmanager").create_secret(Name="alicom/wrong", SecretString=value)
        env["ALICOM_CREDENTIALS_SECRET"] = "alicom/wrong"
    else:
        aws.client("ssm").put_parameter(Name="/alicom/wrong", Value=value, Type="SecureString")
        env["ALICOM_CREDENTIALS_PARAMETER"] = "/alicom/wrong"
    with pytest.raises(SinkError, match="SignatureDoesNotMatch|OTSAuthFailed") as err:
        make_sink(load_settings(env)).write(records(1), [])
    assert "not-the-secret" not in str(err.value)


def test_credentials_given_to_make_sink_are_the_ones_used(store):
    from shared.tokens import Credentials

    env, server = store
    settings = load_settings(dict(env, ALICOM_UID="1234567890", ALIBABA_CLOUD_ACCESS_KEY_ID="other-key",
                                  ALIBABA_CLOUD_ACCESS_KEY_SECRET="other-secret"))
    sink = make_sink(settings, Credentials(AK, SECRET, TOKEN))  # what the runtime loaded wins over the variables
    sink.write(records(2), [])
    assert tokens_sent(server) == {TOKEN}


@pytest.mark.parametrize("source", ["secrets-manager", "ssm"])
def test_a_store_that_cannot_be_read_is_a_start_up_error_naming_the_variable(aws, source):
    from shared.credentials import load_credentials
    from shared.settings import SettingsError

    variable = "ALICOM_CREDENTIALS_SECRET" if source == "secrets-manager" else "ALICOM_CREDENTIALS_PARAMETER"
    code = "ResourceNotFoundException" if source == "secrets-manager" else "ParameterNotFound"
    env = {"ALICOM_UID": "1234567890", "SINK": "file", "SINK_PATH": "/unused", variable: "/alicom/missing"}
    with pytest.raises(SettingsError, match=f"^invalid settings: {variable}: could not read '/alicom/missing' \\({code}\\)$"):
        load_credentials(load_settings(env))
    aws.proxy.hang.on()  # a store that accepts and never answers: bounded, not botocore's minutes
    started = time.monotonic()
    with pytest.raises(SettingsError, match=f"^invalid settings: {variable}: could not read '/alicom/hung' \\(ReadTimeoutError\\)$"):
        load_credentials(load_settings(dict(env, **{variable: "/alicom/hung"})))
    assert time.monotonic() - started < 12  # 2 attempts of at most 5 s each

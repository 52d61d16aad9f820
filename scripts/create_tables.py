"""Create the table a table sink writes to, for users who do not deploy it from a template.

    python -m scripts.create_tables dynamodb --table alicom-receipts [--region R] [--ttl]
    python -m scripts.create_tables tablestore --table alicom_receipts --instance my-ots \\
        --endpoint https://my-ots.cn-hangzhou.ots.aliyuncs.com [--ttl-days 180]

Defaults come from the drain's own variables (SINK_TABLE, SINK_REGION, SINK_ENDPOINT,
TABLESTORE_INSTANCE, SINK_TTL_DAYS; Tablestore credentials from ALIBABA_CLOUD_*; DynamoDB
credentials from boto3's default chain). Running it again is safe: an existing table is
checked for the right key schema and left alone.

Schema, both services: one primary/partition key `key` (string), nothing else declared.
- DynamoDB: on-demand billing; with --ttl (or SINK_TTL_DAYS set), TTL on attribute `ttl`.
- Tablestore: max_versions 1; with --ttl-days, the table's time_to_live (Tablestore
  expires data by write time, table-wide), otherwise kept forever (-1).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

KEY = "key"
TTL_ATTRIBUTE = "ttl"


def create_dynamodb_table(client, table: str, ttl: bool = False, wait: bool = True) -> str:
    """Create (or check) the DynamoDB table; return what was done."""
    from botocore.exceptions import ClientError

    try:
        client.create_table(
            TableName=table,
            AttributeDefinitions=[{"AttributeName": KEY, "AttributeType": "S"}],
            KeySchema=[{"AttributeName": KEY, "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        done = f"created DynamoDB table {table}"
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceInUseException":
            raise
        described = client.describe_table(TableName=table)["Table"]
        key_schema = [(k["AttributeName"], k["KeyType"]) for k in described["KeySchema"]]
        types = {a["AttributeName"]: a["AttributeType"] for a in described["AttributeDefinitions"]}
        if key_schema != [(KEY, "HASH")] or types.get(KEY) != "S":
            raise SystemExit(f"DynamoDB table {table} exists with key schema {key_schema}; "
                             f"the sink needs {KEY} (S) alone") from None
        done = f"DynamoDB table {table} already exists with the right key"
    if wait:
        client.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 2, "MaxAttempts": 60})
    if ttl:
        current = client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
        if current.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            client.update_time_to_live(TableName=table,
                                       TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE})
        done += f"; TTL on attribute {TTL_ATTRIBUTE}"
    return done


def create_tablestore_table(client, table: str, ttl_days: Optional[int] = None) -> str:
    """Create (or check) the Tablestore table; return what was done."""
    from tablestore import CapacityUnit, OTSServiceError, ReservedThroughput, TableMeta, TableOptions

    ttl_seconds = ttl_days * 86400 if ttl_days else -1
    try:
        client.create_table(TableMeta(table, [(KEY, "STRING")]), TableOptions(time_to_live=ttl_seconds, max_version=1),
                            ReservedThroughput(CapacityUnit(0, 0)))
        return f"created Tablestore table {table}" + (f"; TTL {ttl_days} days" if ttl_days else "")
    except OTSServiceError as exc:
        if exc.code != "OTSObjectAlreadyExist":
            raise
    schema = client.describe_table(table).table_meta.schema_of_primary_key
    if [tuple(col[:2]) for col in schema] != [(KEY, "STRING")]:
        raise SystemExit(f"Tablestore table {table} exists with primary key {schema}; "
                         f"the sink needs {KEY} (STRING) alone")
    return f"Tablestore table {table} already exists with the right key"


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m scripts.create_tables", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="service", required=True)
    ttl_days = int(env("SINK_TTL_DAYS")) if env("SINK_TTL_DAYS") else None

    ddb = sub.add_parser("dynamodb", help="create the DynamoDB table")
    ddb.add_argument("--table", default=env("SINK_TABLE"), required=not env("SINK_TABLE"))
    ddb.add_argument("--region", default=env("SINK_REGION") or env("AWS_REGION"))
    ddb.add_argument("--endpoint", default=env("SINK_ENDPOINT"), help="endpoint URL (tests, DynamoDB Local)")
    ddb.add_argument("--ttl", action="store_true", default=bool(ttl_days),
                     help=f"enable TTL on attribute {TTL_ATTRIBUTE!r}")
    ddb.add_argument("--no-wait", action="store_true", help="do not wait for the table to become ACTIVE")

    ots = sub.add_parser("tablestore", help="create the Tablestore table")
    ots.add_argument("--table", default=env("SINK_TABLE"), required=not env("SINK_TABLE"))
    ots.add_argument("--instance", default=env("TABLESTORE_INSTANCE"), required=not env("TABLESTORE_INSTANCE"))
    ots.add_argument("--endpoint", default=env("SINK_ENDPOINT"), required=not env("SINK_ENDPOINT"),
                     help="e.g. https://<instance>.cn-hangzhou.ots.aliyuncs.com")
    ots.add_argument("--ttl-days", type=int, default=ttl_days, help="table TTL in days (default: keep forever)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.service == "dynamodb":
        from shared.sinks._aws import aws_client

        client = aws_client("dynamodb", region=args.region, endpoint_url=args.endpoint)
        print(create_dynamodb_table(client, args.table, ttl=args.ttl, wait=not args.no_wait))
        return 0
    from tablestore import OTSClient

    ak, secret = os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_ID"), os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    if not ak or not secret:
        print("set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET (and _SECURITY_TOKEN for STS)",
              file=sys.stderr)
        return 2
    client = OTSClient(args.endpoint, ak, secret, args.instance,
                       sts_token=os.environ.get("ALIBABA_CLOUD_SECURITY_TOKEN") or None)
    print(create_tablestore_table(client, args.table, ttl_days=args.ttl_days))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Loopback stand-ins for cloud services (moto for S3/DynamoDB, an OSS gateway, a Tablestore fake)."""

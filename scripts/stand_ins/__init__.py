"""Loopback stand-ins for cloud services, shared by the tests and the chaos harness: moto in
server mode behind a fault proxy (S3, DynamoDB, Secrets Manager, SSM) and the hang switch
the stand-ins use to accept a request and never answer it."""

"""The shared server fixtures themselves: what other suites rely on (endpoints, fake credentials)."""

from __future__ import annotations

import os

import boto3


def test_sqs_server_is_a_working_queue_endpoint(sqs_endpoint_env: str) -> None:
    # boto3 finds the endpoint through its own AWS_ENDPOINT_URL_SQS variable: no endpoint_url argument
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="fixture-check")["QueueUrl"]

    sqs.send_message(QueueUrl=url, MessageBody="ping")
    got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]

    assert [m["Body"] for m in got] == ["ping"]
    assert sqs.meta.endpoint_url == sqs_endpoint_env


def test_aws_fixtures_use_fake_credentials(dynamodb_endpoint_env: str) -> None:
    credentials = boto3.session.Session().get_credentials()

    assert credentials is not None and credentials.access_key == "testing"
    assert os.environ["AWS_DEFAULT_REGION"] == "us-east-1"
    assert boto3.client("dynamodb").meta.endpoint_url == dynamodb_endpoint_env

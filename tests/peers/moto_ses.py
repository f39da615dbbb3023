#!/usr/bin/env python3
"""Drives moto's SES (an independent implementation of the AWS API) for the SES API tests,
through boto3 — as an operator would with the AWS CLI.

usage: moto_ses.py verify PORT DOMAIN     verify DOMAIN as a sending identity (eu-west-1)
       moto_ses.py sent PORT              print the raw messages moto accepted, as JSON
"""
import json
import sys
import urllib.request

import boto3


def main():
    command, port = sys.argv[1], sys.argv[2]
    endpoint = f"http://127.0.0.1:{port}"
    if command == "verify":
        ses = boto3.client("ses", endpoint_url=endpoint, region_name="eu-west-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        ses.verify_domain_identity(Domain=sys.argv[3])
    elif command == "sent":
        with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=10) as answer:
            data = json.load(answer)
        print(json.dumps(data.get("ses", {}).get("RawMessage", [])))
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()

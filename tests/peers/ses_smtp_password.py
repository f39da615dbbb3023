#!/usr/bin/env python3
"""Amazon SES SMTP password from an IAM secret access key, written from AWS's published
algorithm (the smtp_credentials_generate.py of the SES developer guide) independently of
smarthost, with Python's own hmac and hashlib.

usage: ses_smtp_password.py REGION < secret
"""
import base64
import hashlib
import hmac
import sys


def sign(key, message):
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def main():
    region = sys.argv[1]
    secret = sys.stdin.read().strip()
    signature = sign(("AWS4" + secret).encode("utf-8"), "11111111")
    for part in (region, "ses", "aws4_request", "SendRawEmail"):
        signature = sign(signature, part)
    print(base64.b64encode(bytes([0x04]) + signature).decode("utf-8"))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Try AUTH PLAIN COUNT times, each on a new STARTTLS connection (Python's smtplib and ssl,
verifying the server against CA), and print the reply code of each attempt as JSON: what a
password guesser would see.

usage: auth_attempts.py PORT CA --source IP --user USER --password PASSWORD --count N
"""
import argparse
import json
import smtplib
import ssl


def attempt(args, context):
    try:
        with smtplib.SMTP("127.0.0.1", args.port, local_hostname="guesser.test",
                          source_address=(args.source, 0), timeout=30) as client:
            client.starttls(context=context)
            client.ehlo()
            client.user, client.password = args.user, args.password
            code, _ = client.auth("PLAIN", client.auth_plain, initial_response_ok=True)
            return code
    except smtplib.SMTPAuthenticationError as error:
        return error.smtp_code
    except smtplib.SMTPResponseException as error:
        return error.smtp_code
    except (smtplib.SMTPServerDisconnected, ConnectionError):
        return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("ca")
    parser.add_argument("--source", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--count", type=int, default=1)
    args = parser.parse_args()
    context = ssl.create_default_context(cafile=args.ca)
    print(json.dumps([attempt(args, context) for _ in range(args.count)]))


if __name__ == "__main__":
    main()

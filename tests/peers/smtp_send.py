#!/usr/bin/env python3
"""Send one message with Python's smtplib (an SMTP client written independently of smarthost)
and print every reply as JSON, so the Rust tests can assert on what a real client saw.

usage: smtp_send.py PORT --from ADDR --to ADDR [--to ADDR ...] [--source IP]
                    [--mail-option OPT ...] < message
"""
import argparse
import json
import smtplib
import sys


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--from", dest="sender", required=True)
    parser.add_argument("--to", action="append", default=[])
    parser.add_argument("--source", default=None)
    parser.add_argument("--mail-option", action="append", default=[])
    args = parser.parse_args()
    message = sys.stdin.buffer.read()
    result = {"rcpt": []}
    source = (args.source, 0) if args.source else None
    with smtplib.SMTP(args.host, args.port, local_hostname="client.test",
                      source_address=source, timeout=30) as client:
        result["ehlo"] = list(client.ehlo())[0]
        code, text = client.mail(args.sender, args.mail_option)
        result["mail"] = [code, text.decode()]
        accepted = 0
        for recipient in args.to:
            code, text = client.rcpt(recipient)
            result["rcpt"].append([code, text.decode()])
            accepted += code == 250
        if accepted:
            code, text = client.data(message)
            result["data"] = [code, text.decode()]
        else:
            client.rset()
    print(json.dumps(result))


if __name__ == "__main__":
    main()

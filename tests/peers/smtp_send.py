#!/usr/bin/env python3
"""Send one message with Python's smtplib (an SMTP client written independently of smarthost)
and print every reply as JSON, so the Rust tests can assert on what a real client saw.

usage: smtp_send.py PORT --from ADDR --to ADDR [--to ADDR ...] [--source IP]
                    [--mail-option OPT ...] [--starttls CA | --tls-on-connect CA]
                    [--login USER PASSWORD] < message

With --starttls or --tls-on-connect the server's certificate is verified against CA (a PEM
file) for the host name, and the result has "tls": the version, cipher and the SHA-256 of the
certificate the server presented. "data_ms" is how long DATA took, from the command to
the reply after the final dot: what the client waited for its message to be accepted.
"""
import argparse
import hashlib
import json
import smtplib
import ssl
import sys
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--from", dest="sender", required=True)
    parser.add_argument("--to", action="append", default=[])
    parser.add_argument("--source", default=None)
    parser.add_argument("--mail-option", action="append", default=[])
    parser.add_argument("--starttls", metavar="CA", default=None)
    parser.add_argument("--tls-on-connect", metavar="CA", default=None)
    parser.add_argument("--login", nargs=2, metavar=("USER", "PASSWORD"), default=None)
    args = parser.parse_args()
    message = sys.stdin.buffer.read()
    result = {"rcpt": []}
    source = (args.source, 0) if args.source else None
    ca = args.starttls or args.tls_on_connect
    context = ssl.create_default_context(cafile=ca) if ca else None
    if args.tls_on_connect:
        client = smtplib.SMTP_SSL(args.host, args.port, local_hostname="client.test",
                                  source_address=source, timeout=30, context=context)
    else:
        client = smtplib.SMTP(args.host, args.port, local_hostname="client.test",
                              source_address=source, timeout=30)
    with client:
        result["ehlo"] = list(client.ehlo())[0]
        result["ehlo_text"] = client.ehlo_resp.decode() if client.ehlo_resp else ""
        if args.starttls:
            code, text = client.starttls(context=context)
            result["starttls"] = [code, text.decode()]
            result["ehlo_after_tls"] = client.ehlo()[1].decode()
        if ca:
            sock = client.sock
            result["tls"] = {
                "version": sock.version(),
                "cipher": sock.cipher()[0],
                "cert_sha256": hashlib.sha256(sock.getpeercert(binary_form=True)).hexdigest(),
            }
        if args.login:
            try:
                code, text = client.login(*args.login)
            except smtplib.SMTPAuthenticationError as error:
                code, text = error.smtp_code, error.smtp_error
            except smtplib.SMTPServerDisconnected:
                code, text = 0, b"disconnected"
            result["login"] = [code, text.decode()]
            if code != 235:
                print(json.dumps(result))
                return
        code, text = client.mail(args.sender, args.mail_option)
        result["mail"] = [code, text.decode()]
        accepted = 0
        for recipient in args.to:
            code, text = client.rcpt(recipient)
            result["rcpt"].append([code, text.decode()])
            accepted += code == 250
        if accepted:
            started = time.monotonic()
            code, text = client.data(message)
            result["data"] = [code, text.decode()]
            result["data_ms"] = (time.monotonic() - started) * 1000
        else:
            client.rset()
    print(json.dumps(result))


if __name__ == "__main__":
    main()

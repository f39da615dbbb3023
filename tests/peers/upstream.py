#!/usr/bin/env python3
"""The upstream relay for delivery tests: aiosmtpd (written independently of smarthost)
standing in for Amazon SES. It listens on 127.0.0.1 with STARTTLS (AUTH required, only after
TLS) and with implicit TLS, both with AUTH PLAIN/LOGIN, and answers recipients as scripted.

usage: upstream.py DIR [--user U --password P] [--no-implicit]
  DIR/server.pem, DIR/server.key   certificate (make_certs.py)
  DIR/script.json                  optional, re-read for every command:
      {"rcpt": {"addr": ["451 4.3.0 later", "250 OK"]},   replies in order, last one repeats
       "data": ["554 Message rejected: Email address is not verified."],
       "delay_ms": 200,                               pause before answering DATA
       "ehlo_drop": ["8BITMIME", "SMTPUTF8"],         extensions not to advertise
       "size": 102400,                                SIZE to advertise and enforce
       "rcpt_limit": 50,                              452 4.5.3 past this many per transaction
       "stall_final_reply": true}                     record the message, never answer the dot
  DIR/received.jsonl               one line per accepted message: mail_from, rcpt_tos,
                                   data (base64), tls, auth_user, listener
Prints {"starttls": PORT, "implicit": PORT} once listening; runs until killed.
"""
import argparse
import asyncio
import base64
import json
import ssl
import sys
import time
from collections import Counter
from pathlib import Path

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Handler:
    def __init__(self, directory, listener):
        self.directory = directory
        self.listener = listener

    def script(self):
        path = self.directory / "script.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def scripted(self, key, sequence):
        counts = COUNTS
        counts[key] += 1
        return sequence[min(counts[key], len(sequence)) - 1]

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        # aiosmtpd reads pipelined commands in order but does not advertise it; SES and Postfix
        # do, so the relay's pipelined path is what these tests exercise.
        session.host_name = hostname
        with open(self.directory / "ehlo.jsonl", "a") as out:
            out.write(json.dumps({"peer_port": session.peer[1], "tls": session.ssl is not None}) + "\n")
        script = self.script()
        if script.get("pipelining", True):
            responses.insert(1, "250-PIPELINING")
        if "size" in script:
            server.data_size_limit = script["size"]
            responses = [f"250-SIZE {script['size']}" if r.startswith("250-SIZE") else r
                         for r in responses]
        session.not_offered = set(script.get("ehlo_drop", []))
        for extension in session.not_offered:
            if extension == "SMTPUTF8":
                server.enable_SMTPUTF8 = False
            responses = [r for r in responses if r[4:].split(" ")[0] != extension]
        if not responses[-1].startswith("250 "):
            responses[-1] = "250 " + responses[-1][4:]
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        with open(self.directory / "mail_from.jsonl", "a") as out:
            out.write(json.dumps({"address": address, "options": mail_options}) + "\n")
        # A strict server: what it did not offer it refuses (RFC 6152 3; RFC 1870 4).
        if "8BITMIME" in getattr(session, "not_offered", ()) and "BODY=8BITMIME" in mail_options:
            return "555 5.5.4 BODY=8BITMIME was not offered"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        script = self.script()
        replies = script.get("rcpt", {}).get(address)
        reply = self.scripted(("rcpt", address), replies) if replies else "250 2.1.5 OK"
        if len(envelope.rcpt_tos) >= script.get("rcpt_limit", 1 << 30):
            reply = "452 4.5.3 Error: too many recipients"
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server, session, envelope):
        delay = self.script().get("delay_ms")
        if delay:
            await asyncio.sleep(delay / 1000)
        replies = self.script().get("data")
        reply = self.scripted(("data",), replies) if replies else None
        if "8BITMIME" in getattr(session, "not_offered", ()) and not envelope.original_content.isascii():
            return "554 5.6.0 8-bit data without 8BITMIME"
        if reply and not reply.startswith("250"):
            return reply
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": base64.b64encode(envelope.original_content).decode(),
            "tls": self.listener == "implicit" or session.ssl is not None,
            "auth_user": session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None,
            "listener": self.listener,
            "mail_options": envelope.mail_options,
            "helo": session.host_name,
            "received_at": time.time(),
            "peer_port": session.peer[1],
        }
        with open(self.directory / "received.jsonl", "a") as out:
            out.write(json.dumps(record) + "\n")
        if self.script().get("stall_final_reply"):
            await asyncio.sleep(3600)
        return reply or "250 2.0.0 Ok: queued as UPSTREAM"


COUNTS = Counter()


def authenticator(user, password):
    def check(server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user
              and auth_data.password.decode() == password)
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)
    return check


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("directory", type=Path)
    parser.add_argument("--user", default="relay")
    parser.add_argument("--password", default="secret")
    parser.add_argument("--starttls-port", type=int, default=0)
    parser.add_argument("--implicit-port", type=int, default=0)
    args = parser.parse_args()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.directory / "server.pem", args.directory / "server.key")
    auth = authenticator(args.user, args.password)
    loop = asyncio.get_running_loop()

    def starttls_session():
        return SMTP(Handler(args.directory, "starttls"), hostname="upstream.test",
                    decode_data=False, tls_context=context, require_starttls=True,
                    auth_required=True, auth_require_tls=True, authenticator=auth,
                    enable_SMTPUTF8=True)

    def implicit_session():
        # The whole connection is TLS, so AUTH needs no STARTTLS first.
        return SMTP(Handler(args.directory, "implicit"), hostname="upstream.test",
                    decode_data=False, auth_required=True, auth_require_tls=False,
                    authenticator=auth, enable_SMTPUTF8=True)

    starttls = await loop.create_server(starttls_session, "127.0.0.1", args.starttls_port)
    implicit = await loop.create_server(implicit_session, "127.0.0.1", args.implicit_port,
                                        ssl=context)
    print(json.dumps({"starttls": starttls.sockets[0].getsockname()[1],
                      "implicit": implicit.sockets[0].getsockname()[1]}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)

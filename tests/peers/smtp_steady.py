#!/usr/bin/env python3
"""CLIENTS concurrent smtplib clients, each sending one message after another for SECONDS
seconds, and going on whatever the relay answers: a refused message is recorded with its
reply code and the next one tried; a broken connection is opened again. Prints JSON: the
queue IDs the relay acknowledged, every refusal's code, and connection errors.

usage: smtp_steady.py PORT CLIENTS SECONDS
"""
import json
import re
import smtplib
import sys
import threading
import time


def client(port, index, until, ids, refusals, errors, lock):
    n = 0
    while time.monotonic() < until:
        try:
            with smtplib.SMTP("127.0.0.1", port, local_hostname=f"steady{index}.test",
                              timeout=60) as smtp:
                smtp.ehlo()
                while time.monotonic() < until:
                    n += 1
                    body = (f"From: steady{index}@example.com\r\nTo: sink@example.com\r\n"
                            f"Subject: steady {index}/{n}\r\n\r\n" + "x" * 500 + "\r\n").encode()
                    smtp.mail(f"steady{index}@example.com")
                    smtp.rcpt("sink@example.com")
                    smtp.putcmd("data")
                    code, _ = smtp.getreply()
                    if code != 354:
                        with lock:
                            refusals.append(code)
                        smtp.rset()
                        continue
                    smtp.send(smtplib.quotedata(body.decode()).encode() + b"\r\n.\r\n")
                    code, text = smtp.getreply()
                    match = re.search(rb"queued as (\S+)", text)
                    with lock:
                        if code == 250 and match:
                            ids.append(match.group(1).decode())
                        else:
                            refusals.append(code)
                    time.sleep(0.02)
        except Exception as error:  # the relay went away or cut the session: connect again
            with lock:
                errors.append(repr(error))
            time.sleep(0.2)


def main():
    port, clients, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    until = time.monotonic() + seconds
    ids, refusals, errors, lock = [], [], [], threading.Lock()
    threads = [threading.Thread(target=client, args=(port, i, until, ids, refusals, errors, lock))
               for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 120)
    print(json.dumps({"ids": ids, "refusals": refusals, "errors": errors}))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""CLIENTS concurrent smtplib clients, each sending MESSAGES messages over its own
connection. Prints JSON: the queue IDs the relay acknowledged, and any failures.

usage: smtp_load.py PORT CLIENTS MESSAGES
"""
import json
import re
import smtplib
import sys
import threading


def client(port, index, count, ids, failures, lock):
    try:
        with smtplib.SMTP("127.0.0.1", port, local_hostname=f"load{index}.test", timeout=60) as smtp:
            smtp.ehlo()
            for n in range(count):
                body = (f"From: load{index}@example.com\r\nTo: sink@example.com\r\n"
                        f"Subject: load {index}/{n}\r\n\r\n" + "x" * 900 + "\r\n").encode()
                code, text = smtp.mail(f"load{index}@example.com")
                code, text = smtp.rcpt("sink@example.com")
                code, text = smtp.data(body)
                match = re.search(rb"queued as (\S+)", text)
                with lock:
                    if code == 250 and match:
                        ids.append(match.group(1).decode())
                    else:
                        failures.append(f"{code} {text!r}")
    except Exception as error:  # a refused or broken connection counts as a failure
        with lock:
            failures.append(repr(error))


def main():
    port, clients, messages = (int(a) for a in sys.argv[1:4])
    ids, failures, lock = [], [], threading.Lock()
    threads = [threading.Thread(target=client, args=(port, i, messages, ids, failures, lock))
               for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    print(json.dumps({"ids": ids, "failures": failures}))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Hold an exclusive write lock on a SQLite database (Python's sqlite3, not ours) until a line
arrives on stdin, so a test can show what the relay does while its spool is locked.

usage: hold_lock.py DATABASE
"""
import sqlite3
import sys

connection = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
connection.execute("ROLLBACK")
print("released", flush=True)

#!/usr/bin/env python3
"""Start localstripe (a stateful Stripe API fake from PyPI) on loopback only, with an empty store.

The upstream command listens on every interface and keeps its store in /tmp/localstripe.pickle
(reloaded at start, rewritten after every change); tests want neither. Here the store lives in
memory only, so instances running side by side (one per test) never share or fight over that file.
Usage: python3 localstripe_loopback.py [--host 127.0.0.1] [--port 8420]
Needs: pip install localstripe==1.15.10 (in a venv is fine; scripts/test installs it into
.dev/localstripe).
"""
import argparse
import logging

from aiohttp import web
from localstripe.resources import Store, store
from localstripe.server import app

parser = argparse.ArgumentParser()
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=8420)
args = parser.parse_args()
Store.dump_to_disk = lambda self: None
store.clear()
logging.basicConfig(level=logging.INFO)
web.run_app(app, host=args.host, port=args.port)

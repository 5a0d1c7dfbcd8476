"""The local web page and REST API: `WebServer` (server.py) serves the page and the JSON
views other stages publish; `actions` holds the validated state-changing requests."""

from hems.web import actions
from hems.web.server import WebServer, site_summary

__all__ = ["WebServer", "actions", "site_summary"]

"""The local web page and REST API: `WebServer` (server.py) serves the page, the JSON views
other stages publish and the REST API v1 (api.py, its models in apimodels.py, live events in
stream.py); `actions` holds the validated state-changing requests both go through."""

from hems.web import actions
from hems.web.server import WebServer, site_summary

__all__ = ["WebServer", "actions", "site_summary"]

"""The local web page and REST API."""

from hems.web.server import WebServer, site_summary

__all__ = ["WebServer", "site_summary"]

"""Thin Celery tasks: parse arguments, call one service, return a dict."""

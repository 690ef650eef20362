"""Notifications where people work: Slack, Microsoft Teams, and signed CloudEvents.

``events`` (pure) derives what to tell from a cycle's result or a command's outcome;
``payloads`` (pure) renders it per sink; ``sinks`` posts it (httpx); ``dispatcher`` queues and
delivers in the background; ``factory`` builds it all from the settings.
"""

"""What a worker tells operators about its calls: metrics, one log line per call, spans.

Each is an observer of the service's answered calls (``workers.answers.FinishedCall``);
``wiring`` attaches the ones the settings ask for.
"""

from workers.telemetry.wiring import WorkerTelemetry, watch_calls

__all__ = ["WorkerTelemetry", "watch_calls"]

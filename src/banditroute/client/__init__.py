"""banditroute's Python client: route with a deadline, retries and a fallback model, and report
feedback exactly once.

    from banditroute.client import Client

    with Client("127.0.0.1:50051", fallback_model="gpt-3.5-turbo-1106") as client:
        with client.decide("Write a haiku about routers.") as d:
            answer = call_my_model(d.model)      # your own call to the chosen model
            d.report(quality=0.8, cost_usd=0.0002)
"""

from banditroute.client.client import Client, RouteOptions
from banditroute.client.decision import Decision, DecisionHandle, FeedbackAck, Outcome, Status
from banditroute.client.retries import RetryPolicy

__all__ = [
    "Client",
    "Decision",
    "DecisionHandle",
    "FeedbackAck",
    "Outcome",
    "RetryPolicy",
    "RouteOptions",
    "Status",
]
